"""Fixtures shared by every test: real Redis, and real Celery worker and beat processes
pointed at the test database."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings

from orchestration.testing.fleet import BeatProcess, WorkerProcess, stop_together
from tests.support import child_environment


@pytest.fixture(scope="session", autouse=True)
def _close_autonomous_connections(django_db_setup):
    """The test database is dropped at the end; the helper threads' connections must be gone."""
    yield
    from orchestration.work.autonomous import close_connections

    close_connections()


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()  # no stale wake-ups from an earlier test
    yield client
    client.close()


@pytest.fixture
def start_worker(transactional_db, redis_client, tmp_path):
    """Start real `celery worker` processes; all are stopped (or killed) at the end of the test."""
    started: list[WorkerProcess] = []

    def start(queues: list[str], **options) -> WorkerProcess:
        env = {**child_environment(), **options.pop("env", {})}
        worker = WorkerProcess(queues, env=env, log_dir=tmp_path, **options)
        started.append(worker.start())
        return worker

    yield start
    stop_together(started, timeout=10)


@pytest.fixture
def start_beat(transactional_db, tmp_path):
    from orchestration.schedules import all_periodic_jobs, install_periodic_jobs

    started: list[BeatProcess] = []

    def start() -> BeatProcess:
        install_periodic_jobs(all_periodic_jobs())  # the flush between tests removes them
        beat = BeatProcess(env=child_environment(), log_dir=tmp_path / "beat")
        started.append(beat.start())
        return beat

    yield start
    stop_together(started, timeout=10)


def pytest_report_header(config) -> str:
    """Says up front whether the browser tests will run, and where their screenshots go."""
    from tests.operations.browser import ARTIFACTS, find_chromium, why_skipped

    reason = why_skipped()
    if reason:
        return f"browser tests: SKIPPED - {reason}"
    return f"browser tests: Chromium at {find_chromium()}; screenshots in {ARTIFACTS}"
