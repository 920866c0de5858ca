"""How the bench puts its alternated bursts together (arithmetic only: no servers)."""

from __future__ import annotations

import pytest

from loadlab.bench import Throughput, Traffic, combined
from loadlab.cpu import CpuSeconds, machine_ticks
from loadlab.measures import Latencies


def test_bursts_combine_into_orders_over_seconds_and_figures_weighted_by_orders():
    quiet = Throughput(
        "system", 300, 5.0, Latencies([0.1, 0.3]), Traffic(40.0, 4.0, 40_000, 50.0), CpuSeconds(10.0, 8.0, 1.0, 2.0)
    )
    busy = Throughput(
        "system", 100, 5.0, Latencies([0.2]), Traffic(60.0, 4.0, 80_000, 70.0), CpuSeconds(30.0, 12.0, 1.0, 4.0)
    )

    both = combined([quiet, busy])

    assert (both.name, both.orders, both.seconds, both.per_second) == ("system", 400, 10.0, 40.0)
    assert both.latencies.samples == [0.1, 0.2, 0.3]
    assert both.traffic == Traffic(45.0, 4.0, 50_000, 55.0)
    assert both.cpu == CpuSeconds(15.0, 9.0, 1.0, 2.5)


def test_the_hosts_share_of_the_machine_is_weighted_by_each_bursts_seconds():
    calm = Throughput("system", 300, 6.0, Latencies([0.1]), stolen=0.02)
    stormy = Throughput("system", 100, 2.0, Latencies([0.1]), stolen=0.30)
    unread = Throughput("system", 100, 2.0, Latencies([0.1]))

    assert combined([calm, stormy]).stolen == pytest.approx(0.09)
    assert combined([calm, unread]).stolen is None


def test_the_machine_says_how_much_of_its_cpu_time_the_host_took():
    stolen, everything = machine_ticks()

    assert 0 <= stolen <= everything and everything > 0


def test_a_figure_one_burst_could_not_read_is_unknown_for_the_whole():
    counted = Throughput("system", 10, 1.0, Latencies([0.1]), Traffic(40.0, 4.0), CpuSeconds(10.0, 8.0, 1.0, 2.0))
    uncounted = Throughput("system", 10, 1.0, Latencies([0.1]), Traffic(None, None), CpuSeconds(10.0, None, 1.0, 2.0))

    both = combined([counted, uncounted])

    assert both.traffic.statements is None and both.cpu.postgres is None
    assert both.cpu.workers == pytest.approx(10.0)
