"""An attempt's own time limit: a lease after its last heartbeat, and never past
AGENT_TASK_MAX_RUNTIME_SECONDS. When it passes, the handler gets LeaseExpired, a
retryable failure, and its effects roll back.

One watchdog thread per process watches the deadlines of the attempts running in it and
stops each one in the way its thread allows:

- The main thread (the prefork pool's processes, the solo pool): a SIGALRM sent to that
  thread (pthread_kill). It interrupts blocking calls (sleep, socket and database waits),
  and the handler raises the error there. (Not a process-wide setitimer: a timer that fires
  while the process is stopped may be taken by any thread when it resumes, and the main
  thread would sleep on.)
- Any other thread (the threads pool): the error is raised in that thread with
  PyThreadState_SetAsyncExc. Python delivers it at the thread's next bytecode, so a thread
  blocked in a C call sees it only when the call returns; meanwhile its lease runs out, the
  sweep reclaims it and its late completion is fenced out.

Neither stops a frozen process (SIGSTOP, a C extension that never returns): Celery's hard
time limit (the ceiling plus 30 s) kills a prefork pool process, and the database's
session timeouts free its locks. Celery enforces no time limit on the threads and solo
pools, so there the lease, the fence and the session timeouts are the whole answer.

Why hand-written: the timeout libraries (stopit, func-timeout, timeout-decorator) are
unmaintained or run the function in another thread or process, and none moves a deadline
that is already armed, which is what a heartbeat does.
"""

from __future__ import annotations

import _signal
import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from orchestration.errors import LeaseExpired, RuntimeCeilingReached
from orchestration.work.perprocess import PerProcess


class Deadline:
    """When the running attempt must stop. A heartbeat moves it later, up to the ceiling."""

    def __init__(self, lease_seconds: float, ceiling_seconds: float, *, start: float | None = None):
        start = time.monotonic() if start is None else start
        self.ceiling = start + ceiling_seconds
        self.at = min(start + lease_seconds, self.ceiling)  # time.monotonic() values

    def error(self) -> type[LeaseExpired]:
        return RuntimeCeilingReached if self.at >= self.ceiling else LeaseExpired

    def extend(self, at: float) -> None:
        """Move the deadline to ``at`` (a time.monotonic() value): never back, never past the
        ceiling. Safe from any thread."""
        watchdog().move(self, at)

    @contextmanager
    def enforced(self) -> Iterator[None]:
        """Raise LeaseExpired in this thread if the deadline passes inside the block."""
        global _main_thread_deadline
        ident = threading.get_ident()
        on_main_thread = threading.current_thread() is threading.main_thread()
        if on_main_thread:
            if _signal.getsignal(signal.SIGALRM) is not _on_sigalrm:
                # Installed once and left in place: the default disposition would let a
                # signal already on its way terminate the process. Asked every time (another
                # library may have put its own handler there: pytest-timeout does) from
                # _signal, the C module under signal: signal.getsignal raises and catches an
                # error on every call to say the handler is no enum.
                signal.signal(signal.SIGALRM, _on_sigalrm)
            _main_thread_deadline = self
        watchdog().watch(ident, self, by_signal=on_main_thread)
        try:
            yield
        finally:
            watchdog().forget(ident)  # no new signal or error after this...
            if on_main_thread:
                _main_thread_deadline = None  # ...and one already sent is ignored


_main_thread_deadline: Deadline | None = None  # the main thread runs one attempt at a time


def _on_sigalrm(_signum, _frame) -> None:
    # Runs in the main thread between two bytecodes, so it takes no lock (the main thread may
    # hold the watchdog's). It checks the deadline itself: a heartbeat may have moved it since
    # the watchdog sent the signal (the watchdog then signals again), and a SIGALRM from
    # elsewhere must not stop an attempt.
    deadline = _main_thread_deadline
    if deadline is not None and deadline.at <= time.monotonic():
        raise deadline.error()


@dataclass
class _Watch:
    deadline: Deadline
    by_signal: bool  # the main thread: SIGALRM; another thread: an asynchronous exception
    signalled_for: float | None = None  # the deadline the last signal was sent for

    def due(self, now: float) -> bool:
        return self.deadline.at <= now and self.signalled_for != self.deadline.at


class _Watchdog:
    """One thread per process that stops handler threads past their deadline."""

    def __init__(self):
        self._changed = threading.Condition()
        self._watched: dict[int, _Watch] = {}  # by thread ident
        self._raised: set[int] = set()
        self._wakes_at = float("inf")  # when the thread looks again, unless notified
        threading.Thread(target=self._run, name="deadline-watchdog", daemon=True).start()

    def watch(self, ident: int, deadline: Deadline, *, by_signal: bool) -> None:
        with self._changed:
            self._watched[ident] = _Watch(deadline, by_signal)
            # A deadline after the thread's next look is seen then: no wake-up (and no
            # switch to the watchdog's thread) for each attempt that starts.
            if deadline.at < self._wakes_at:
                self._changed.notify()

    def move(self, deadline: Deadline, at: float) -> None:
        with self._changed:  # decided under the same lock as the watchdog's verdict
            deadline.at = min(max(deadline.at, at), deadline.ceiling)

    def forget(self, ident: int) -> None:
        with self._changed:
            self._watched.pop(ident, None)
            if ident in self._raised:
                # Raised but perhaps not yet delivered: it must not land after the block, in
                # the kernel's own code or in the thread's next task.
                self._raised.discard(ident)
                _raise_in_thread(ident, None)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for ident, watch in list(self._watched.items()):
                    if not watch.due(now):
                        continue
                    if watch.by_signal:  # stays watched: the handler may find the deadline moved
                        watch.signalled_for = watch.deadline.at
                        signal.pthread_kill(ident, signal.SIGALRM)
                    else:  # delivered unconditionally, so once
                        del self._watched[ident]
                        self._raised.add(ident)
                        _raise_in_thread(ident, watch.deadline.error())
                pending = [
                    watch.deadline.at for watch in self._watched.values() if watch.signalled_for != watch.deadline.at
                ]
                soonest = min(pending, default=None)
                # A moved deadline is only ever later: waking up at the old one costs a loop.
                self._wakes_at = float("inf") if soonest is None else max(soonest, now + 0.001)
                self._changed.wait(None if soonest is None else self._wakes_at - now)


def _raise_in_thread(ident: int, error: type[BaseException] | None) -> None:
    """Schedule ``error`` in thread ``ident`` (None cancels one not yet delivered)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(error) if error else None)


watchdog = PerProcess(_Watchdog)
