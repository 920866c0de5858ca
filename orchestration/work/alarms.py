"""Callbacks run at a time of their own, from one thread per process: a threading.Timer
without a thread for each timer.

An attempt that calls the outside world starts heartbeating a third of its lease later
(leases.AttemptLease.keeping_alive). Most calls end long before that; a thread started and
joined for each of them cost more than the call's bookkeeping. So the heartbeat's thread is
started by an alarm when its first beat is due, and an alarm cancelled before then costs two
dictionary operations. The alarms' thread only starts things: a callback must not block it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

from orchestration.work.perprocess import PerProcess

logger = logging.getLogger(__name__)


class _Alarms:
    def __init__(self):
        self._changed = threading.Condition()
        self._due: dict[int, tuple[float, Callable[[], None]]] = {}  # by token: (time.monotonic(), callback)
        self._tokens = itertools.count()
        self._wakes_at = float("inf")  # when the thread looks again, unless notified
        threading.Thread(target=self._run, name="alarms", daemon=True).start()

    def set(self, at: float, callback: Callable[[], None]) -> int:
        with self._changed:
            token = next(self._tokens)
            self._due[token] = (at, callback)
            if at < self._wakes_at:  # later alarms are seen when the thread looks next
                self._changed.notify()
            return token

    def cancel(self, token: int) -> bool:
        """True when the alarm had not gone off (and now never will). Decided under the lock
        the callback runs under: after False, whatever the callback did is done."""
        with self._changed:
            return self._due.pop(token, None) is not None

    def _run(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for token in [token for token, (at, _) in self._due.items() if at <= now]:
                    _, callback = self._due.pop(token)
                    try:
                        callback()
                    except Exception:
                        logger.exception("an alarm's callback failed")
                soonest = min((at for at, _ in self._due.values()), default=None)
                self._wakes_at = float("inf") if soonest is None else max(soonest, now + 0.001)
                self._changed.wait(None if soonest is None else self._wakes_at - now)


alarms = PerProcess(_Alarms)
