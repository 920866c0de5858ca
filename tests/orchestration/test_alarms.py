"""The alarms' thread (orchestration/work/alarms.py): what starts a heartbeat's thread when its
first beat is due, so an outside call that ends sooner costs no thread."""

from __future__ import annotations

import threading
import time

from orchestration.work.alarms import alarms
from orchestration.work.leases import AttemptLease
from tests.support import wait_until


def test_an_alarm_goes_off_at_its_time_and_a_cancelled_one_never():
    fired: list[str] = []
    kept = alarms().set(time.monotonic() + 0.2, lambda: fired.append("kept"))
    cancelled = alarms().set(time.monotonic() + 0.2, lambda: fired.append("cancelled"))

    assert alarms().cancel(cancelled) is True
    time.sleep(0.1)
    assert fired == []  # not before its time
    wait_until(lambda: fired == ["kept"], timeout=5)
    time.sleep(0.3)
    assert fired == ["kept"]
    assert alarms().cancel(kept) is False  # it went off


def test_an_alarm_set_before_the_one_the_thread_waits_for_still_goes_off_on_time():
    fired: list[float] = []
    late = alarms().set(time.monotonic() + 60, lambda: fired.append(time.monotonic()))
    time.sleep(0.05)  # the thread now sleeps until the late one
    set_at = time.monotonic()
    alarms().set(set_at + 0.1, lambda: fired.append(time.monotonic()))

    wait_until(lambda: fired, timeout=5)
    assert fired[0] - set_at < 2  # woken for it, not left sleeping for a minute
    assert alarms().cancel(late) is True


def test_a_block_shorter_than_a_beat_starts_no_heartbeat_thread(monkeypatch):
    started: list[str] = []
    original = threading.Thread.start

    def watched_start(thread):
        started.append(thread.name)
        return original(thread)

    lease = AttemptLease(1, 1, 30, claimed_at=time.monotonic())
    monkeypatch.setattr(threading.Thread, "start", watched_start)
    with lease.keeping_alive():
        pass
    assert not [name for name in started if name.startswith("keep-alive")]
