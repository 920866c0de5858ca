"""The attempt deadline on its own, in this process: on the main thread (how prefork and solo
pools run handlers) and on another thread (the threads pool). Real signals, real threads."""

from __future__ import annotations

import signal
import threading
import time

import pytest

from orchestration.errors import LeaseExpired, RuntimeCeilingReached
from orchestration.work.deadline import Deadline


def run_in_thread(work) -> list[str]:
    """Run ``work`` in a new thread; returns what it recorded, and how it ended."""
    seen: list[str] = []

    def target() -> None:
        try:
            work(seen)
            seen.append("returned")
        except LeaseExpired as error:
            seen.append(type(error).__name__)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    return seen


def test_the_deadline_interrupts_a_main_thread_handler_in_a_blocking_call():
    with pytest.raises(LeaseExpired), Deadline(0.2, 60).enforced():
        time.sleep(30)


def test_heartbeats_keep_a_handler_running_past_its_first_lease():
    deadline = Deadline(0.3, 60)
    with deadline.enforced():
        for _ in range(6):  # 0.9 s in all: three leases
            time.sleep(0.15)
            deadline.extend(time.monotonic() + 0.3)
    # nothing raised, and nothing is raised after the block either
    time.sleep(0.5)


def test_a_sigalrm_from_elsewhere_does_not_stop_the_handler():
    with Deadline(30, 60).enforced():
        signal.pthread_kill(threading.get_ident(), signal.SIGALRM)
        time.sleep(0.2)
    # nothing raised: only the deadline stops the handler


def test_heartbeats_cannot_move_the_deadline_past_the_ceiling():
    deadline = Deadline(0.2, 0.5)
    with pytest.raises(RuntimeCeilingReached), deadline.enforced():
        while True:
            time.sleep(0.05)
            deadline.extend(time.monotonic() + 0.2)


def test_a_thread_is_stopped_when_its_blocking_call_returns():
    def work(seen: list[str]) -> None:
        with Deadline(0.2, 60).enforced():
            time.sleep(0.6)  # a C call: the error waits for it to return
            seen.append("went on after the call")

    assert run_in_thread(work) == ["LeaseExpired"]


def test_a_thread_whose_deadline_moves_runs_to_the_end_and_is_not_hit_later():
    def work(seen: list[str]) -> None:
        deadline = Deadline(0.3, 60)
        with deadline.enforced():
            for _ in range(6):
                time.sleep(0.15)
                deadline.extend(time.monotonic() + 0.3)
        for _ in range(10):  # the thread's next work: no error left over for it
            time.sleep(0.05)

    assert run_in_thread(work) == ["returned"]
