"""Chaos: a load run while worker processes are SIGKILLed at an interval and the local Redis and
PostgreSQL are restarted once each; then what was accepted, completed, failed, lost and doubled."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Count, QuerySet

from agents.invariants import InvariantResult
from agents.outside.models import CarrierParcel, GatewayEntry, ProviderMessage
from devservers.server import Server
from devservers.stack import LocalServers
from loadlab.loadtest import LoadResult, LoadSpec, Progress, run_load
from orchestration.testing.fleet import Fleet, WorkerProcess, child_pids
from orders.models import Order
from orders.states import TERMINAL_STATES, OrderState


@dataclass(frozen=True)
class ChaosPlan:
    kill_every: float = 10.0  # seconds between two SIGKILLs
    restart_redis_at: float = 0.25  # share of the orders finished when Redis restarts
    restart_postgres_at: float = 0.5
    seed: int = 11


@dataclass
class ChaosReport:
    accepted: int
    completed: int
    failed: dict[str, int]
    lost: list[str]
    duplicated: list[str]
    happenings: list[str]
    invariants: list[InvariantResult]

    @property
    def passed(self) -> bool:
        return not self.lost and not self.duplicated and all(invariant.holds for invariant in self.invariants)

    def lines(self) -> list[str]:
        lines = ["", "chaos:", *(f"  {line}" for line in self.happenings), ""]
        lines += [f"orders accepted    {self.accepted}", f"completed          {self.completed}"]
        lines.append(f"failed             {sum(self.failed.values())}")
        lines += [f"  {count:>6}  {reason}" for reason, count in sorted(self.failed.items(), key=lambda r: -r[1])]
        lines.append(f"lost               {len(self.lost)}  (must be 0)")
        lines += [f"  {line}" for line in self.lost[:10]]
        lines.append(f"duplicated effects {len(self.duplicated)}  (must be 0)")
        lines += [f"  {line}" for line in self.duplicated[:10]]
        holding = sum(invariant.holds for invariant in self.invariants)
        lines.append(f"invariants         {holding} of {len(self.invariants)} hold")
        return lines


def restartable(server: Server) -> str:
    """Why this process may not restart that server, or "" when it may: only the servers the
    project started itself, and only when this process is using them."""
    if not server.is_running():
        return f"no local {server.name} server runs under {server.run_dir}"
    if server.name == "redis":
        if server.url() != settings.REDIS_URL:
            return "REDIS_URL points at a server the project did not start"
    else:
        db = settings.DATABASES["default"]
        if db.get("HOST") not in {"127.0.0.1", "localhost"} or str(db.get("PORT")) != str(server.port):
            return "DATABASE_URL points at a server the project did not start"
    return ""


class Monkey:
    """Kills a worker process every so often, and restarts Redis and PostgreSQL once each."""

    def __init__(self, plan: ChaosPlan, fleet: Fleet, progress: Progress, total: int):
        self.plan = plan
        self.fleet = fleet
        self.progress = progress
        self.total = total
        self.rng = random.Random(plan.seed)
        self.servers = LocalServers()
        self.restarts = {"redis": plan.restart_redis_at, "postgres": plan.restart_postgres_at}
        self.happenings: list[str] = []
        self.kills = 0
        self.stopping = threading.Event()
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self.run, name="chaos-monkey", daemon=True)

    def note(self, what: str) -> None:
        self.happenings.append(f"{time.monotonic() - self.started:6.1f}s  {what}")

    def start(self) -> Monkey:
        self.thread.start()
        return self

    def stop(self, completed: bool = True) -> None:
        """Stop killing. When the run completed, a restart that has not happened yet happens
        now, so every run has both; an interrupted run just stops."""
        self.stopping.set()
        self.thread.join()
        if not completed:
            return
        for name in list(self.restarts):
            self.restart(name)
        for process in self.fleet.restart_dead():
            self.note(f"restarted {getattr(process, 'name', process.kind)} after it died")

    def run(self) -> None:
        next_kill = time.monotonic() + self.plan.kill_every
        while not self.stopping.wait(0.25):
            try:
                finished = self.progress.finished / self.total
                for name, share in list(self.restarts.items()):
                    if finished >= share:
                        self.restart(name)
                if time.monotonic() >= next_kill:
                    next_kill = time.monotonic() + self.plan.kill_every
                    self.kill_one()
                for process in self.fleet.restart_dead():
                    self.note(f"supervisor restarted {getattr(process, 'name', process.kind)}")
            except Exception as error:  # the monkey keeps going; the report says what went wrong
                self.note(f"chaos step failed: {type(error).__name__}: {error}")

    def kill_one(self) -> None:
        """Alternately a prefork pool child (its master forks another) and a whole worker."""
        self.kills += 1
        worker: WorkerProcess = self.rng.choice(self.fleet.workers())
        children = child_pids(worker.pid) if worker.is_running() else []
        if self.kills % 2 and children:
            victim = self.rng.choice(children)
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
            self.note(f"SIGKILL pool process {victim} of {worker.name}")
        else:
            worker.kill()
            self.note(f"SIGKILL worker {worker.name} (pid {worker.pid}) and its pool")

    def restart(self, name: str) -> None:
        self.restarts.pop(name, None)
        server = getattr(self.servers, name)
        reason = restartable(server)
        if reason:
            self.note(f"did not restart {name}: {reason}")
            return
        began = time.monotonic()
        with self.servers.lock():
            server.stop()
            server.start()
        self.note(f"restarted {name} on port {server.port} in {time.monotonic() - began:.1f}s")


def run_chaos(spec: LoadSpec, plan: ChaosPlan, **options) -> tuple[LoadResult, ChaosReport]:
    monkeys: list[Monkey] = []

    def unleash(fleet: Fleet, progress: Progress):
        monkeys.append(Monkey(plan, fleet, progress, spec.orders).start())
        return monkeys[0].stop

    result = run_load(spec, during=unleash, **options)
    return result, chaos_report(result, monkeys[0].happenings)


def repeated(ledger: QuerySet, *fields: str) -> QuerySet:
    """The ledger's groups by ``fields`` that hold more than one row, with their count ``n``."""
    return ledger.values(*fields).annotate(n=Count("pk")).filter(n__gt=1)


def chaos_report(result: LoadResult, happenings: list[str]) -> ChaosReport:
    orders = Order.objects.filter(pk__in=result.order_ids)
    refs = [str(order_id) for order_id in result.order_ids]
    failed: Counter[str] = Counter()
    for state, reason in (
        orders.filter(state__in=TERMINAL_STATES).exclude(state=OrderState.COMPLETED).values_list("state", "reason")
    ):
        failed[f"{state}: {re.sub(r'[0-9]+', 'N', reason)[:90] or 'no reason given'}"] += 1
    lost = [
        f"order {pk} is still {state}"
        for pk, state in orders.exclude(state__in=TERMINAL_STATES).values_list("pk", "state")
    ]
    duplicated = [
        f"order {row['order_ref']} charged {row['n']} times"
        for row in repeated(GatewayEntry.objects.filter(order_ref__in=refs, kind=GatewayEntry.Kind.CHARGE), "order_ref")
    ]
    duplicated += [
        f"order {row['order_ref']} has {row['n']} parcels"
        for row in repeated(CarrierParcel.objects.filter(order_ref__in=refs), "order_ref")
    ]
    duplicated += [
        f"order {row['order_ref']} got {row['n']} '{row['kind']}' messages"
        for row in repeated(ProviderMessage.objects.filter(order_ref__in=refs), "order_ref", "kind")
    ]
    return ChaosReport(
        accepted=len(result.order_ids),
        completed=orders.filter(state=OrderState.COMPLETED).count(),
        failed=dict(failed),
        lost=lost,
        duplicated=duplicated,
        happenings=happenings,
        invariants=result.invariants,
    )
