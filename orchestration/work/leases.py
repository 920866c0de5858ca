"""What a running attempt holds, and how a heartbeat keeps it.

A claim gives an attempt four things, and each ends with the lease unless the handler
heartbeats: the lease in the task row (the sweep reclaims it when it runs out), its guard
slots (semaphore entries in Redis that expire with the lease), its deadline in this process
(LeaseExpired in the handler), and its database session (the server ends a transaction left
idle for DATABASE_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS). A heartbeat moves all four together;
a process that stops heartbeating (frozen, stuck, cut off) loses all four, and its late
completion is fenced out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, connection, connections
from psycopg.pq import TransactionStatus

from orchestration.conf import kernel_settings
from orchestration.errors import LeaseExpired, LeaseLost
from orchestration.limits.admission import Admission
from orchestration.work import lifecycle
from orchestration.work.alarms import alarms
from orchestration.work.autonomous import run_autonomously
from orchestration.work.connections import give_back_if_pooled
from orchestration.work.deadline import Deadline

logger = logging.getLogger(__name__)

T = TypeVar("T")


class AttemptLease:
    """One attempt's lease, guard slots, deadline and database session, moved by heartbeats."""

    def __init__(self, task_id: int, fence: int, seconds: int, *, claimed_at: float):
        self.task_id = task_id
        self.fence = fence
        self.seconds = seconds
        self.deadline = Deadline(seconds, kernel_settings().max_runtime_seconds, start=claimed_at)
        self.admission: Admission | None = None  # set once the guards let the attempt in
        # The handler's own connection (Django's connections are per thread): the one whose
        # transaction holds the handler's locks until completion.
        self._session = connections[DEFAULT_DB_ALIAS]

    def run(self, handler: Callable[..., T], *args: Any) -> T:
        """Run the handler under the deadline."""
        with self.deadline.enforced():
            return handler(*args)

    def heartbeat(self, checkpoint: Any = lifecycle.UNSET) -> None:
        """Extend the lease, the guard slots, the deadline and the session's idle clock; save
        the checkpoint on its own connection. Raises LeaseLost when the lease is gone."""
        started = time.monotonic()  # before the lease moves: our deadline never outlasts it
        kept = run_autonomously(
            lifecycle.heartbeat, self.task_id, self.fence, lease_seconds=self.seconds, checkpoint=checkpoint
        )
        if not kept:
            raise LeaseLost(f"task {self.task_id}: lease lost (fence {self.fence})")
        if self.admission is not None and not self.admission.extend(self.seconds):
            raise LeaseExpired(f"task {self.task_id}: its guard slot expired and was taken by another holder")
        self.deadline.extend(started + self.seconds)
        self._touch_session()

    def beat_interval(self) -> float:
        """A third of the shorter of the lease and the database's idle-in-transaction timeout:
        two beats may be lost or late before either runs out."""
        idle = kernel_settings().idle_in_transaction_seconds
        return min(self.seconds, idle or self.seconds) / 3

    @contextmanager
    def keeping_alive(self) -> Iterator[None]:
        """Heartbeat from a background thread while the block runs (a slow outside call),
        started when the first beat is due (alarms.py: a block that ends before costs no thread).

        The thread touches the database only through run_autonomously's own connections and,
        for the idle clock, the handler's connection (psycopg connections are thread-safe); it
        never opens a Django connection of its own. If the process freezes, the thread freezes
        with it: the lease, the slots and the session still run out.
        """
        interval = self.beat_interval()
        stop = threading.Event()
        lost: list[BaseException] = []
        beating: list[threading.Thread] = []

        def beat() -> None:
            while not stop.is_set():
                try:
                    self.heartbeat()
                except (LeaseLost, LeaseExpired) as error:
                    lost.append(error)
                    return
                except Exception:  # the database or Redis is restarting: the next beat may do
                    logger.warning(
                        "heartbeat of task %s failed; next try in %.1f s", self.task_id, interval, exc_info=True
                    )
                stop.wait(interval)

        def start_beating() -> None:  # when the first beat is due: most blocks are over by then
            thread = threading.Thread(target=beat, name=f"keep-alive-{self.task_id}", daemon=True)
            beating.append(thread)
            thread.start()

        alarm = alarms().set(time.monotonic() + interval, start_beating)
        try:
            yield
        finally:
            stop.set()
            if not alarms().cancel(alarm):  # it went off: a thread is beating, or was
                _hold_no_connection_while_a_beat_ends()
                for thread in beating:
                    thread.join()
        if lost:
            raise lost[0]

    def _touch_session(self) -> None:
        """Reset the idle clock of the handler's open transaction: the server then ends only
        sessions whose handler stopped heartbeating."""
        raw = self._session.connection
        if raw is None or raw.closed or raw.info.transaction_status != TransactionStatus.INTRANS:
            return
        try:
            raw.execute("SELECT 1")
        except psycopg.Error:  # already ended or failed: the handler's next statement says so
            logger.debug("could not touch the session of task %s", self.task_id, exc_info=True)


class WaitingClaims:
    """The tasks a worker claimed in one batch and has not started yet: they keep their claims
    while the ones before them run. A task ahead that waits minutes on a model must not let the
    lease of the next one run out (it would be reclaimed, and run twice in parallel with a late
    first attempt fenced out). A background thread heartbeats those still waiting every third of
    their shortest lease; in a batch of quick tasks it never gets to."""

    def __init__(self, claims: list[lifecycle.Claim]):
        self.waiting = list(claims)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> WaitingClaims:
        if len(self.waiting) > 1:  # the first starts at once
            self._start()
        return self

    def _start(self) -> None:
        interval = min(claim.lease_seconds for claim in self.waiting) / 3
        self.thread = threading.Thread(target=self._beat, args=(interval,), name="batch-leases", daemon=True)
        self.thread.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        if self.thread is not None:
            _hold_no_connection_while_a_beat_ends()
            self.thread.join()

    def add(self, claims: list[lifecycle.Claim]) -> None:
        """More claims wait behind the one running now (follow-ups kept by this process)."""
        with self.lock:
            self.waiting.extend(claims)
            if len(self.waiting) > 1 and self.thread is None:
                self._start()

    def starting(self, claim: lifecycle.Claim) -> None:
        """This one runs now: its own attempt heartbeats from here on."""
        with self.lock:
            self.waiting = [other for other in self.waiting if other is not claim]

    def _beat(self, interval: float) -> None:
        while not self.stop.wait(interval):
            with self.lock:
                waiting = list(self.waiting)
            for claim in waiting:
                try:
                    run_autonomously(lifecycle.heartbeat, claim.task.pk, claim.fence, lease_seconds=claim.lease_seconds)
                except Exception:  # the database is restarting: the next beat may do
                    logger.warning("could not keep the claim of waiting task %s", claim.task.pk, exc_info=True)


def _hold_no_connection_while_a_beat_ends() -> None:
    """A heartbeat in flight needs a connection of its own (run_autonomously). With a pool, a
    thread that waits for it while holding one could, with enough threads doing the same,
    hold the whole pool and wait for ever: it hands its connection back first (outside a
    transaction only; the next query takes one again)."""
    if not connection.in_atomic_block:
        give_back_if_pooled()
