"""Scale-out: worker hosts as network namespaces of this machine, on the same PostgreSQL and Redis,
with real Celery workers in each; a host cut off past its lease; and a harness that leaves
nothing behind. Needs root (CI runs as root)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse

from devservers.processes import pid_is_alive
from loadlab.chaos import chaos_report
from loadlab.cluster import LINKS, PartitionPlan, open_cluster, run_on_hosts
from loadlab.loadtest import NO_FAILURES, LoadSpec
from orchestration.models import AgentTask, AttemptStatus, TaskAttempt, TaskStatus, Worker
from orchestration.registry import registry
from orchestration.schedules import all_periodic_jobs, install_periodic_jobs
from orchestration.testing.fleet import Fleet
from orchestration.testing.hosts import NetworkError
from orchestration.testing.netns import PREFIX, Network, Service, links, namespace_pids, namespaces, why_unavailable
from orchestration.work.enqueue import enqueue
from tests.kernelapp.models import Effect
from tests.support import wait_until

UNAVAILABLE = why_unavailable()
pytestmark = [
    pytest.mark.skipif(
        bool(UNAVAILABLE),
        reason=f"worker hosts on this machine {UNAVAILABLE}; "
        "these tests alone: `sudo make test PYTEST_ARGS=tests/test_cluster.py`",
    ),
    pytest.mark.django_db(transaction=True),
]

# Small and quick: a few dozen orders, slow enough outside calls that hosts are busy when cut.
SPEC = LoadSpec(orders=24, concurrency=12, latency_ms=150, transient_rate=0, mix=NO_FAILURES, lease_seconds=5)
PROBE = (Service("probe", "pb", 99),)  # a network of its own for the leftover tests: prefix agt


@pytest.fixture
def cluster(transactional_db, redis_client, tmp_path):
    try:
        with open_cluster(SPEC, tmp_path) as cluster:
            yield cluster
    except NetworkError as error:
        if "is not a server the project runs" in str(error):
            pytest.skip(str(error))
        raise


def run(cluster, hosts: int, spec: LoadSpec = SPEC, plan: PartitionPlan | None = None):
    return run_on_hosts(cluster, hosts, spec, run=f"t{os.getpid()}h{hosts}", plan=plan, progress=False, out=str)


def test_two_hosts_share_the_work_of_one_run_and_do_nothing_twice(cluster):
    outcome = run(cluster, 2)

    assert set(outcome.attempts_by_host) == {"host-1", "host-2"}, outcome.attempts_by_host
    assert all(count > 0 for count in outcome.attempts_by_host.values())
    report = chaos_report(outcome.result, [])
    assert report.lost == [] and report.duplicated == []
    assert all(invariant.holds for invariant in outcome.result.invariants)
    succeeded_twice = (
        TaskAttempt.objects.filter(status=AttemptStatus.SUCCEEDED).values("task_id").order_by().distinct().count()
    )
    assert succeeded_twice == TaskAttempt.objects.filter(status=AttemptStatus.SUCCEEDED).count()
    # Each host's workers were live, under the host's name, with their queues.
    live = {(worker.hostname, worker.queues) for worker in outcome.live_workers}
    queues = ",".join(sorted(registry.queues()))
    assert {("host-1", queues), ("host-2", queues), ("control", "orchestration")} <= live
    # Prometheus reads each host's share from that host's /metrics, scraped from outside it.
    assert outcome.scraped_by_host == {
        host: float(n) for host, n in outcome.attempts_by_host.items() if host != "control"
    }


def test_the_admin_shows_the_live_workers_of_each_host(cluster, client):
    hosts = cluster.add_hosts(2)
    fleet = Fleet([cluster.worker(host, registry.queues()) for host in hosts]).start()
    try:
        wait_until(
            lambda: {"host-1", "host-2"} <= {w.hostname for w in Worker.objects.filter(stopped_at=None)},
            timeout=60,
            what="both hosts' heartbeat rows",
        )
        client.force_login(User.objects.create_superuser("boss", "boss@example.com", "x" * 20))
        workers_page = client.get(reverse("admin:orchestration_worker_changelist")).content.decode()
        dashboard = client.get(reverse("admin:dashboard")).content.decode()
    finally:
        fleet.stop()
    for page in (workers_page, dashboard):
        assert "host-1:" in page and "host-2:" in page  # Worker rows are named host:pid
        assert "agent.payment" in page  # with the queues each consumes


def test_a_host_cut_off_past_its_lease_is_finished_elsewhere_once_and_its_late_completion_fenced_out(cluster):
    # Given host-2 in a slow outside call for a task with a 3 s lease, on a thread pool (no time
    # limit cuts its handler short), and the sweeps running on the control host
    host_1, host_2 = cluster.add_hosts(2)
    install_periodic_jobs(all_periodic_jobs())
    Fleet([cluster.worker(cluster.control, ["orchestration"], name="maintenance"), cluster.beat()]).start()
    cluster.worker(host_2, ["agent.testkit"], pool="threads", concurrency=2).start()
    task, _ = enqueue("testkit", "call_then_record", {"key": "away", "sleep": 15}, idempotency_key="away")
    wait_until(
        lambda: TaskAttempt.objects.filter(task=task, worker__startswith="host-2:").exists(),
        timeout=30,
        what="host-2 to claim the task",
    )

    # When host-2 is cut off from everything past the lease, and host-1 is there to take over
    cluster.cut(host_2)
    cluster.worker(host_1, ["agent.testkit"]).start()
    wait_until(lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, timeout=60)
    cluster.heal(host_2)

    # Then host-1 finished it, once; host-2's completion, late, is refused and says so
    first = wait_until(
        lambda: TaskAttempt.objects.filter(task=task, number=1, status=AttemptStatus.FENCED_OUT).first(),
        timeout=90,
        what="host-2's late completion",
    )
    assert first.worker.startswith("host-2:")
    second = TaskAttempt.objects.get(task=task, number=2)
    assert second.worker.startswith("host-1:") and second.status == AttemptStatus.SUCCEEDED
    assert list(Effect.objects.filter(key="away").values_list("attempt", flat=True)) == [2]


def test_orders_through_a_host_cut_off_past_its_lease_end_with_nothing_lost_or_done_twice(cluster):
    plan = PartitionPlan(host=2, links=LINKS, at=0.1, seconds=3 * SPEC.lease_seconds)

    outcome = run(cluster, 2, plan=plan)

    assert outcome.outcome.lost == [] and outcome.outcome.duplicated == []
    assert all(invariant.holds for invariant in outcome.result.invariants)
    assert any("cut host-2" in line for line in outcome.outcome.happenings)
    # The attempts host-2 had running when it was cut never completed: the spans say so.
    cut_off = outcome.cut_off_attempts
    assert cut_off and set(cut_off) <= {AttemptStatus.RECLAIMED, AttemptStatus.FENCED_OUT}, cut_off
    # ...and each of those tasks was finished once, by a later attempt; host-1 did so while host-2 was away.
    interrupted = TaskAttempt.objects.filter(
        worker__startswith="host-2:", started_at__lte=outcome.cut_at, status__in=cut_off
    ).exclude(finished_at__lt=outcome.cut_at)
    finished_meanwhile = 0
    for span in interrupted:
        done = TaskAttempt.objects.get(task_id=span.task_id, status=AttemptStatus.SUCCEEDED)
        assert AgentTask.objects.get(pk=span.task_id).status == TaskStatus.SUCCEEDED and done.fence > span.fence
        finished_meanwhile += done.worker.startswith("host-1:") and done.finished_at < outcome.healed_at
    assert finished_meanwhile > 0


def test_a_failing_run_leaves_no_namespace_link_or_process_and_the_servers_on_loopback(transactional_db, tmp_path):
    with pytest.raises(RuntimeError, match="the test failed here"), open_cluster(SPEC, tmp_path) as cluster:
        host = cluster.add_hosts(1)[0]
        cluster.worker(host, ["agent.order"]).start()
        cluster.start_exporter(host)
        started = host.pids()
        raise RuntimeError("the test failed here")

    assert namespaces(PREFIX) == [] and links(PREFIX) == []
    assert started and not any(pid_is_alive(pid) for pid in started)
    with connection.cursor() as cursor:
        cursor.execute("SHOW listen_addresses")
        assert cursor.fetchone()[0] == "127.0.0.1"


def test_a_harness_killed_with_sigkill_leaves_what_the_next_start_sweeps():
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS_THEN_SLEEP], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert harness.stdout.readline().strip() == "ready", harness.stderr.read()
        sleeper = namespace_pids("agt-host-1")
    finally:
        harness.kill()
        harness.wait()
    assert namespaces("agt") == ["agt-host-1"] and set(links("agt")) == {"agt-pb", "agt-0-pb"}
    assert sleeper and all(pid_is_alive(pid) for pid in sleeper)

    with Network(prefix="agt", services=PROBE) as network:
        assert network.swept == ["namespace agt-host-1", "link agt-pb"]

    assert namespaces("agt") == [] and links("agt") == []
    wait_until(lambda: not any(pid_is_alive(pid) for pid in sleeper), what="the swept processes to be gone")


def test_a_network_left_by_an_exception_takes_its_hosts_and_their_processes_along():
    with pytest.raises(ValueError, match="boom"), Network(prefix="agt", services=PROBE) as network:
        host = network.add_host("host-1")
        subprocess.Popen(host.command(["sleep", "600"]))
        wait_until(host.pids, what="the process in the host")
        started = host.pids()
        raise ValueError("boom")

    assert namespaces("agt") == [] and links("agt") == []
    wait_until(lambda: not any(pid_is_alive(pid) for pid in started), what="the host's processes to be gone")


HARNESS_THEN_SLEEP = textwrap.dedent(
    """
    import subprocess, time
    from orchestration.testing.netns import Network, Service
    network = Network(prefix="agt", services=(Service("probe", "pb", 99),)).open()
    host = network.add_host("host-1")
    subprocess.Popen(host.command(["sleep", "600"]))

    def only_the_sleeper():
        # Until the host's wrapper has run `hostname` (a child of its own) and exec'd into sleep,
        # the namespace also holds a process that is about to end.
        pids = host.pids()
        try:
            return pids and all(open(f"/proc/{pid}/comm").read().strip() == "sleep" for pid in pids)
        except FileNotFoundError:
            return False

    while not only_the_sleeper():
        time.sleep(0.05)
    print("ready", flush=True)
    time.sleep(600)
    """
)
