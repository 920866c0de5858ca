"""One object per process, made on first use: the kernel's helper threads (the deadline's
watchdog, the alarms) live in their object, and a forked child (a prefork pool's process) does
not inherit its parent's threads, so it makes its own."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerProcess(Generic[T]):
    def __init__(self, make: Callable[[], T]):
        self._make = make
        self._made: T | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        with self._lock:
            if self._made is None or self._pid != os.getpid():
                self._made, self._pid = self._make(), os.getpid()
            return self._made
