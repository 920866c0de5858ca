"""The load, chaos and benchmark commands, in small runs on real workers and servers: what the
user sees is the figures, the HTML report, and a chaos run that loses and doubles nothing."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from agents.outside.models import CarrierParcel, GatewayEntry
from devservers.stack import LocalServers
from loadlab.chaos import restartable
from orchestration.models import AgentTask, TaskStatus
from orchestration.work.enqueue import enqueue
from orders.models import Order, OrderState, Product

pytestmark = pytest.mark.django_db(transaction=True)


def run(command: str, **options) -> str:
    out = io.StringIO()
    call_command(command, stdout=out, **options)
    return out.getvalue()


def test_loadtest_prints_the_figures_and_writes_a_report_with_plots(redis_client, tmp_path):
    report = tmp_path / "load.html"
    # Work an interrupted earlier run left behind: the fleet will do it too, and says so first.
    for i in range(2):
        enqueue("testkit", "record", {"key": f"left-{i}"}, idempotency_key=f"left-over-{i}")

    out = run("loadtest", orders=20, rate=20, ramp_up=1, latency_ms=20, report=report)

    assert re.search(r"^load\d+: 2 unfinished tasks of earlier runs are in this database", out, re.MULTILINE), out
    assert set(AgentTask.objects.filter(agent="testkit").values_list("status", flat=True)) == {TaskStatus.SUCCEEDED}
    assert "orders placed      20 of 20" in out
    for figure in ("throughput", "success rate", "p50", "p95", "p99", "retries", "reclaims", "peak worker memory"):
        assert figure in out
    for agent in ("order", "inventory", "payment", "fulfillment", "notification"):
        assert re.search(rf"^  {agent} +n=\d+ +p50 .* ms +p95 .* ms", out, re.MULTILINE), agent
    assert out.count("  ok   ") == 7
    # The whole fleet's memory, beat included: the share that is the fleet's own (PSS) is what it
    # costs the machine; RSS counts the pages a pool's children share with their parent in each.
    fleet = re.search(r"^peak fleet memory .*: PSS (\d+) MiB .*, RSS (\d+) MiB$", out, re.MULTILINE)
    assert fleet and 0 < int(fleet[1]) < int(fleet[2]), out
    html = report.read_text()
    for title in ("Throughput over time", "Latency over time", "Latency histogram"):
        assert f'<img alt="{title}" src="data:image/png;base64,' in html


def test_loadtest_names_the_option_it_cannot_use(transactional_db):
    with pytest.raises(CommandError, match="transient-rate must be between 0 and 1"):
        run("loadtest", orders=5, transient_rate=2)
    with pytest.raises(CommandError, match="orders must be at least 1"):
        run("loadtest", orders=0)
    with pytest.raises(CommandError, match="pay-timeouts must be between 0 and 1"):
        run("loadtest", orders=5, pay_timeouts=1.5)


def test_chaos_kills_workers_restarts_both_servers_and_loses_nothing(redis_client, tmp_path):
    out = run(
        "chaos",
        orders=30,
        rate=10,
        kill_every=2,
        restart_redis_at=0.1,
        restart_postgres_at=0.3,
        lease_seconds=5,
        pay_timeouts=0.1,  # with this seed, 5 charges and 1 booking die after taking effect
        ship_timeouts=0.1,
        report=tmp_path / "chaos.html",
    )

    assert "SIGKILL" in out
    assert "PAYMENT_FAILED: RetryableError: gateway timed out (simulated) after taking effect" in out
    # A booking that died after the carrier took it was voided, whatever else hit that order's last
    # attempt (a kill or a restart may word its reason differently).
    doomed = Order.objects.filter(customer__contains="+shiptimeout@")
    assert doomed.exists() and set(doomed.values_list("state", flat=True)) <= {OrderState.CANCELLED}
    parcels = CarrierParcel.objects.filter(order_ref__in=[str(pk) for pk in doomed.values_list("pk", flat=True)])
    assert parcels.exists() and set(parcels.values_list("status", flat=True)) == {CarrierParcel.Status.VOIDED}
    assert re.search(r"restarted redis on port \d+", out)
    assert re.search(r"restarted postgres on port \d+", out)
    assert "orders accepted    30" in out
    assert "lost               0  (must be 0)" in out
    assert "duplicated effects 0  (must be 0)" in out
    assert "invariants         7 of 7 hold" in out


def test_chaos_leaves_alone_servers_it_did_not_start(tmp_path):
    elsewhere = LocalServers(tmp_path)
    assert restartable(elsewhere.redis) == f"no local redis server runs under {tmp_path}"

    ours = LocalServers()
    with override_settings(REDIS_URL="redis://redis.internal:6379/0"):
        assert restartable(ours.redis) == "REDIS_URL points at a server the project did not start"
    assert restartable(ours.redis) == ""


def test_a_load_placed_before_the_workers_start_has_every_order_in_flight_and_finishes(redis_client):
    out = run("loadtest", orders=12, place_first=True, latency_ms=20, transient_rate=0)

    assert re.search(r"placed 12 orders in [\d.]+ s before any worker ran", out)
    assert re.search(r"^peak in flight +12 orders", out, re.MULTILINE)
    assert out.count("  ok   ") == 7


def test_slow_calls_on_threads_sharing_two_connections_keep_their_leases_and_finish(redis_client):
    # Eight threads, two connections, calls that outlast a heartbeat: a thread in a call must
    # hold no connection, or the threads' heartbeats (which need one) wait for each other.
    out = run(
        "loadtest",
        orders=12,
        place_first=True,
        slow_pool="threads",
        slow_concurrency=8,
        slow_connections=2,
        latency_ms=2500,
        lease_seconds=6,
        transient_rate=0,
        timeout=120,
    )

    assert re.search(r"^orders placed +12 of 12", out, re.MULTILINE)
    assert re.search(r"reclaims 0 +fenced out 0 +dead tasks 0", out), out
    assert out.count("  ok   ") == 7


def test_bench_prints_both_throughputs_their_ratio_and_the_full_table_latency(redis_client):
    out = run("bench", orders=10, warm_up=3, paced_orders=6, fill=5000, samples=20)

    assert re.search(r"^  system +\d+\.\d orders/s +p50 .* p95 ", out, re.MULTILINE)
    assert re.search(r"^  naive chain +\d+\.\d orders/s +p50 .* p95 ", out, re.MULTILINE)
    # Two bursts each, alternated (system, chain, chain, system), their ratios side by side.
    assert re.search(r"^workflow, 2 bursts of 10 orders each way", out, re.MULTILINE)
    assert re.search(r"^bench\d+w-system: 3 orders", out, re.MULTILINE), out  # the warm-up, not measured
    assert re.search(r"ratio +system / naive = \d+\.\d\d   \(round by round: \d+\.\d\d, \d+\.\d\d\)", out)
    assert re.search(r"^  system .*\(20 orders in", out, re.MULTILINE)
    # Where the CPU went, per order, from the kernel's accounting of the fleet and the servers.
    # The kernel counts in 10 ms ticks: the naive chain's two statements an order can leave
    # PostgreSQL at 0.0 over ten orders, so only the system's PostgreSQL share must show.
    cpu = {}
    for name in ("system", "naive chain"):
        line = re.search(rf"^  {name} +workers +([\d.]+), postgres +([\d.]+), redis +([\d.]+)", out, re.MULTILINE)
        assert line, out
        cpu[name] = {"workers": float(line[1]), "postgres": float(line[2])}
    assert cpu["system"]["workers"] > 0 and cpu["system"]["postgres"] > 0, out
    assert cpu["naive chain"]["workers"] > 0, out
    totals = [
        float(total)
        for total in re.findall(r"^  (?:system|naive chain) +workers .*\(all +([\d.]+)\)", out, re.MULTILINE)
    ]
    by_cpu = re.search(r"^  by CPU per order, naive / system = (\d+\.\d\d)$", out, re.MULTILINE)
    assert by_cpu and abs(float(by_cpu[1]) - totals[1] / totals[0]) < 0.02, out
    # How much of the machine the host gave other guests meanwhile: the noise, in numbers.
    assert re.search(
        r"^  taken by the host for other guests \(steal\): \d+\.\d% .* \d+\.\d% during the chain's$", out, re.M
    ), out
    # The write-ahead log each phase made, per order: the system's durable rows against the
    # chain's one payment row and the simulated services' ledgers.
    wal = dict(re.findall(r"^  (system|naive chain) +.* ([\d.]+) KiB of WAL", out, re.MULTILINE))
    assert set(wal) == {"system", "naive chain"}, out
    assert float(wal["system"]) > float(wal["naive chain"]) > 0, out
    assert re.search(r"^paced at half the burst's rate .*, 6 orders", out, re.MULTILINE)
    assert re.search(r"^  before .* rows +p50 .* ms +p95 .* ms", out, re.MULTILINE)
    assert re.search(r"^  full .* rows +p50 .* ms +p95 .* ms", out, re.MULTILINE)
    # The naive chain's effects and the filler rows are gone: later checks are not about the benchmark.
    assert not GatewayEntry.objects.filter(order_ref__contains="-naive-").exists()
    assert not Product.objects.filter(sku__contains="-naive-").exists()
    assert not AgentTask.objects.filter(agent__startswith="bench").exists()
