"""The main job: orders through the six agents on real workers, then the figures."""

from __future__ import annotations

import time

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import connection
from tqdm import tqdm

from agents.outside import world
from agents.outside.model_server import configure_model
from loadlab import measures, workload
from orchestration.registry import registry
from orchestration.schedules import all_periodic_jobs, install_periodic_jobs
from orchestration.testing.fleet import BeatProcess, WorkerProcess
from orders.models import OrderTransition, RiskAssessment

SCREEN_ABOVE = 120.0  # about one order in fifteen of the workload
SHOWN_SCREENED = 40
# Customers the simulated model rejects (+fraud) or sends to an operator (+suspect) when screened.
MIX = workload.Mix(fraud=0.15, suspect=0.15)


class Command(BaseCommand):
    help = "Place orders through the six agents on real Celery workers and print what happened."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=1000)
        parser.add_argument("--workers", type=int, default=2, help="agent worker processes")
        parser.add_argument("--concurrency", type=int, default=2, help="pool size per agent worker")
        parser.add_argument("--timeout", type=float, default=900, help="seconds to wait for every order to finish")

    def handle(self, *args, orders: int, workers: int, concurrency: int, timeout: float, **options):
        run = time.strftime("demo%Y%m%d%H%M%S")
        install_periodic_jobs(all_periodic_jobs())
        world.configure("gateway", transient_rate=0.03)
        world.configure("carrier", transient_rate=0.02)
        world.configure("provider", transient_rate=0.02)
        # The risk model: now and then down, now and then answering nonsense (asked again).
        configure_model(latency_ms=50, unavailable_rate=0.03, malformed_rate=0.03, wrong_amount_rate=0.02)
        catalogue = workload.seed_catalogue(run)
        self.stdout.write(
            f"{run}: {orders} orders over {len(catalogue)} products (2 scarce); "
            "some customers are declined, some calls fail transiently or time out after taking effect; "
            f"orders above {SCREEN_ABOVE:g} are screened by a risk model, which rejects some and asks an "
            "operator about others"
        )

        # The demo's customers ask the simulated world for failures; its workers obey them.
        env = {"SIMULATED_FAILURES": "true", "RISK_SCREEN_ABOVE": str(SCREEN_ABOVE)}
        fleet = [
            WorkerProcess(registry.queues(), concurrency=concurrency, name=f"agents{i}", env=env)
            for i in range(workers)
        ]
        fleet.append(WorkerProcess(["orchestration"], concurrency=1, name="maintenance", env=env))
        fleet.append(BeatProcess(env=env))
        for process in fleet:
            process.start(wait=False)
        for process in fleet:
            process.wait_ready()
        self.stdout.write(f"started {workers} agent workers x {concurrency}, 1 maintenance worker, 1 beat")

        started = time.monotonic()
        try:
            with tqdm(total=orders, desc="placed  ", unit="order") as placed:
                order_ids = workload.place_orders(run, orders, catalogue, mix=MIX, on_placed=lambda _i: placed.update())
            with tqdm(total=orders, desc="finished", unit="order") as done:
                while (finished := workload.through_restarts(lambda: workload.terminal_count(order_ids))) < orders:
                    done.update(finished - done.n)
                    if time.monotonic() - started > timeout:
                        break
                    waiting = workload.through_restarts(lambda: len(workload.waiting_for_review(order_ids)))
                    if orders - finished <= waiting:
                        # Only orders waiting for an operator are left: the demo plays the operator.
                        approved, rejected = workload.settle_reviews(order_ids, operator="demo", reject_every=3)
                        decisions = f"approved {len(approved)}, rejected {len(rejected)}"
                        tqdm.write(f"the operator decided the orders waiting for review: {decisions}")
                    time.sleep(0.5)
                done.update(finished - done.n)
            elapsed = time.monotonic() - started
            if not workload.wait_until_quiet(timeout=180):
                self.stderr.write("the system did not become quiet within 180 s; the check below will say why")
        finally:
            for process in fleet:
                process.stop()
            connection.close()

        figures = workload.figures(order_ids, elapsed)
        self.stdout.write("\nfinal states:")
        for state, count in sorted(figures.by_state.items(), key=lambda item: -item[1]):
            self.stdout.write(f"  {state:<20} {count:>6}")
        self.stdout.write(
            f"\nthroughput {figures.throughput:.1f} orders/s over {elapsed:.1f}s; order latency "
            f"p50 {figures.percentile(50):.2f}s  p95 {figures.percentile(95):.2f}s  p99 {figures.percentile(99):.2f}s\n"
        )
        self.screening_report(order_ids)
        self.stdout.write("invariants:")
        call_command("check_invariants", stdout=self.stdout, stderr=self.stderr)

    def screening_report(self, order_ids: list[int]) -> None:
        """How each screened order was decided, and what the models cost."""
        screened = list(
            RiskAssessment.objects.filter(order_id__in=order_ids).select_related("order").order_by("order_id")
        )
        self.stdout.write(f"risk review: {len(screened)} orders screened")
        for assessment in screened[:SHOWN_SCREENED]:
            order = assessment.order
            who = f"{assessment.decided_by} model {assessment.model}" if assessment.model else "the rule"
            failed = [f"{ask['model']} {ask['outcome']}" for ask in assessment.chain if ask["outcome"] != "decided"]
            then = OrderTransition.objects.filter(order=order, actor__gt="").values_list("event", flat=True).first()
            self.stdout.write(
                f"  order {order.pk:<6} {order.total:>8} {assessment.verdict:<8} by {who:<24}"
                + (f" after {', '.join(failed)}" if failed else "")
                + (f"; the operator: {then.removeprefix('operator.')}" if then else "")
                + f" -> {order.state}"
            )
        if len(screened) > SHOWN_SCREENED:
            self.stdout.write(f"  ... and {len(screened) - SHOWN_SCREENED} more (admin: Orders > Order > Risk review)")
        models = measures.model_usage(order_ids)
        for row in models.by_model:
            self.stdout.write(
                f"  {row.name}: {row.calls} calls ({row.unbilled} not billed), {row.tokens} tokens, cost {row.cost}"
            )
        self.stdout.write(f"  models cost {models.cost} in all ({models.tokens} tokens)\n")
