"""Where the CPU went during a run: the seconds used by the worker processes, PostgreSQL, Redis
and the load generator itself, read from the kernel's accounting (Linux /proc), so the figures
do not depend on what else the machine was doing.

A phase is read between its fleet being up and its fleet stopping, so the workers' start-up
(imports, Django's set-up) is not charged to the orders. The servers are read only when they
are the project's own local ones (devservers); a PostgreSQL backend that has exited is counted
in its postmaster's children's time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

from devservers.stack import LocalServers
from loadlab.chaos import restartable
from orchestration.testing.fleet import Fleet, child_pids

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSeconds:
    workers: float = 0.0  # the fleet: agent workers with their pools, the maintenance worker, beat
    postgres: float | None = None  # None: not a server this process may read
    redis: float | None = None
    generator: float = 0.0  # this process: placing orders, polling for the end

    def __sub__(self, earlier: CpuSeconds) -> CpuSeconds:
        def minus(now: float | None, then: float | None) -> float | None:
            return None if now is None or then is None else now - then

        return CpuSeconds(*(minus(getattr(self, f.name), getattr(earlier, f.name)) for f in fields(self)))

    def per_order_ms(self, orders: int) -> CpuSeconds:
        count = max(orders, 1)
        return CpuSeconds(*(None if (v := getattr(self, f.name)) is None else v * 1000 / count for f in fields(self)))

    @property
    def total(self) -> float:
        return sum(value for f in fields(self) if (value := getattr(self, f.name)) is not None)

    def line(self) -> str:
        parts = [f"{f.name} {value:5.1f}" for f in fields(self) if (value := getattr(self, f.name)) is not None]
        return ", ".join(parts) + f"  (all {self.total:5.1f})"


def _times(pid: int, with_children: bool) -> float:
    """CPU seconds of one process (and of its reaped children), 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # After the command: state is field 0, utime 11, stime 12, cutime 13, cstime 14.
    ticks = int(stat[11]) + int(stat[12])
    if with_children:
        ticks += int(stat[13]) + int(stat[14])
    return ticks / TICKS_PER_SECOND


def _tree_seconds(pid: int) -> float:
    """A process, its reaped children and its live children (a worker and its pool)."""
    return _times(pid, with_children=True) + sum(_times(child, with_children=True) for child in child_pids(pid))


def _server_seconds(server) -> float | None:
    if restartable(server) or server.pid is None:
        return None  # not ours, or not running: its processes are not this run's to read
    # PostgreSQL puts every backend in a session of its own: its children are found by parent.
    leader = server.pid
    return _times(leader, with_children=True) + sum(_times(pid, with_children=False) for pid in child_pids(leader))


def sample(fleet: Fleet) -> CpuSeconds:
    own = os.times()
    servers = LocalServers()
    return CpuSeconds(
        workers=sum(_tree_seconds(process.pid) for process in fleet.processes if process.process is not None),
        postgres=_server_seconds(servers.postgres),
        redis=_server_seconds(servers.redis),
        generator=own.user + own.system,
    )


def machine_ticks() -> tuple[int, int] | None:
    """(stolen, all) clock ticks of this machine's CPUs since it booted (/proc/stat): stolen is
    the time a virtual machine's CPUs were ready to run but the host ran another guest. None
    where the kernel does not say."""
    try:
        columns = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal [guest guest_nice: within user]
    if columns[:1] != ["cpu"] or len(columns) < 9:
        return None
    ticks = [int(value) for value in columns[1:9]]
    return ticks[7], sum(ticks)


class CpuMeter:
    """Reads a fleet's phase: ``started`` once it is up, ``ended`` before it stops. ``stolen``
    is the share of the machine's CPU time the host gave to other guests meanwhile: on a shared
    machine, the noise that moves orders/s and latencies while CPU per order stays put."""

    def __init__(self) -> None:
        self.before: CpuSeconds | None = None
        self.machine_before: tuple[int, int] | None = None
        self.used = CpuSeconds()
        self.stolen: float | None = None

    def started(self, fleet: Fleet) -> None:
        self.before, self.machine_before = sample(fleet), machine_ticks()

    def ended(self, fleet: Fleet) -> None:
        if self.before is not None:
            self.used = sample(fleet) - self.before
        after = machine_ticks()
        if self.machine_before is not None and after is not None and after[1] > self.machine_before[1]:
            self.stolen = (after[0] - self.machine_before[0]) / (after[1] - self.machine_before[1])
