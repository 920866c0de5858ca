"""An attempt's own time limit: a lease after its last heartbeat, and never past
AGENT_TASK_MAX_RUNTIME_SECONDS. When it passes, the handler gets LeaseExpired, a
retryable failure, and its effects roll back.

How the error reaches the handler depends on the thread the handler runs in:

- The main thread (the prefork pool's processes, the solo pool): a SIGALRM timer. The
  signal interrupts blocking calls (sleep, socket and database waits), so the handler
  stops at its deadline even while it waits.
- Any other thread (the threads pool): one watchdog thread per process raises the error
  in the handler's thread (PyThreadState_SetAsyncExc). Python delivers it at that
  thread's next bytecode, so a thread blocked in a C call sees it only when the call
  returns; meanwhile its lease runs out, the sweep reclaims it and its late completion
  is fenced out.

Neither stops a frozen process (SIGSTOP, a C extension that never returns): Celery's hard
time limit (the ceiling plus 30 s) kills a prefork pool process, and the database's
session timeouts free its locks. Celery enforces no time limit on the threads and solo
pools, so there the lease, the fence and the session timeouts are the whole answer.

Why hand-written: the timeout libraries (stopit, func-timeout, timeout-decorator) are
unmaintained or run the function in another thread or process, and none moves a deadline
that is already armed, which is what a heartbeat does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from orchestration.errors import LeaseExpired, RuntimeCeilingReached


class Deadline:
    """When the running attempt must stop. A heartbeat moves it later, up to the ceiling."""

    def __init__(self, lease_seconds: float, ceiling_seconds: float, *, start: float | None = None):
        start = time.monotonic() if start is None else start
        self.ceiling = start + ceiling_seconds
        self.at = min(start + lease_seconds, self.ceiling)  # time.monotonic() values
        self._lock = threading.Lock()
        self._alarm: _Alarm | None = None

    def error(self) -> type[LeaseExpired]:
        return RuntimeCeilingReached if self.at >= self.ceiling else LeaseExpired

    def extend(self, at: float) -> None:
        """Move the deadline to ``at`` (a time.monotonic() value): never back, never past the
        ceiling. Safe from any thread."""
        with self._lock:
            self.at = min(max(self.at, at), self.ceiling)
            if self._alarm is not None:
                self._alarm.arm()

    @contextmanager
    def enforced(self) -> Iterator[None]:
        """Raise LeaseExpired in this thread if the deadline passes inside the block."""
        on_main_thread = threading.current_thread() is threading.main_thread()
        alarm: _Alarm = _SignalAlarm(self) if on_main_thread else _ThreadAlarm(self)
        with self._lock:
            self._alarm = alarm
            alarm.arm()
        try:
            yield
        finally:
            with self._lock:
                self._alarm = None
                alarm.disarm()


class _Alarm(Protocol):
    def arm(self) -> None: ...

    def disarm(self) -> None: ...


# --- The main thread: SIGALRM --------------------------------------------------------------

_signal_alarm: _SignalAlarm | None = None  # the main thread runs one attempt at a time


def _on_sigalrm(_signum, _frame) -> None:
    # Runs in the main thread between two bytecodes, possibly inside Deadline.extend: it takes
    # no lock, and reads the deadline as it is now.
    alarm = _signal_alarm
    if alarm is None:
        return  # a late signal after the attempt ended
    left = alarm.deadline.at - time.monotonic()
    if left > 0:  # a heartbeat moved the deadline after this timer was set
        signal.setitimer(signal.ITIMER_REAL, left)
        return
    alarm.disarm()
    raise alarm.deadline.error()


class _SignalAlarm:
    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        # Installed once and left in place: restoring the default disposition would let a
        # signal already on its way terminate the process.
        if signal.getsignal(signal.SIGALRM) is not _on_sigalrm:
            signal.signal(signal.SIGALRM, _on_sigalrm)

    def arm(self) -> None:
        global _signal_alarm
        _signal_alarm = self
        # setitimer works from any thread (a keep-alive heartbeat re-arms it); the signal
        # itself is handled in the main thread.
        signal.setitimer(signal.ITIMER_REAL, max(self.deadline.at - time.monotonic(), 0.001))

    def disarm(self) -> None:
        global _signal_alarm
        if _signal_alarm is self:
            _signal_alarm = None
            signal.setitimer(signal.ITIMER_REAL, 0)


# --- Other threads: a watchdog ---------------------------------------------------------------


class _Watchdog:
    """One thread per process that raises the error in handler threads past their deadline."""

    def __init__(self):
        self._changed = threading.Condition()
        self._watched: dict[int, Deadline] = {}  # thread ident -> its deadline
        self._fired: set[int] = set()
        threading.Thread(target=self._run, name="deadline-watchdog", daemon=True).start()

    def watch(self, ident: int, deadline: Deadline) -> None:
        with self._changed:
            self._watched[ident] = deadline
            self._changed.notify()

    def forget(self, ident: int) -> None:
        with self._changed:
            self._watched.pop(ident, None)
            if ident in self._fired:
                # Raised but perhaps not yet delivered: it must not land after the block, in
                # the kernel's own code or in the thread's next task.
                self._fired.discard(ident)
                _raise_in_thread(ident, None)

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for ident, deadline in list(self._watched.items()):
                    if deadline.at <= now:
                        del self._watched[ident]
                        self._fired.add(ident)
                        _raise_in_thread(ident, deadline.error())
                soonest = min((deadline.at for deadline in self._watched.values()), default=None)
                self._changed.wait(None if soonest is None else max(soonest - now, 0.001))


def _raise_in_thread(ident: int, error: type[BaseException] | None) -> None:
    """Schedule ``error`` in thread ``ident`` (None cancels one not yet delivered)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(error) if error else None)


_watchdog: _Watchdog | None = None
_watchdog_pid: int | None = None
_watchdog_lock = threading.Lock()


def watchdog() -> _Watchdog:
    global _watchdog, _watchdog_pid
    with _watchdog_lock:
        if _watchdog is None or _watchdog_pid != os.getpid():  # a forked child needs its own thread
            _watchdog = _Watchdog()
            _watchdog_pid = os.getpid()
        return _watchdog


class _ThreadAlarm:
    def __init__(self, deadline: Deadline):
        self.deadline = deadline
        self.ident = threading.get_ident()

    def arm(self) -> None:
        watchdog().watch(self.ident, self.deadline)

    def disarm(self) -> None:
        watchdog().forget(self.ident)
