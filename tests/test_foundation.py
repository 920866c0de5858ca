"""The ground everything stands on: settings, local servers, a real worker round trip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orchestration.enqueue import enqueue
from orchestration.models import AgentTask, TaskStatus
from settings.localservers import BASE_DIR, LocalServers
from tests.conftest import wait_until
from tests.kernelapp.models import Effect

PRODUCTION_ENV = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "x" * 20 + "production-secret-key-with-enough-entropy-0123456789",
    "ALLOWED_HOSTS": "orders.example.com",
    "DATABASE_URL": "postgresql://app@db.internal:5432/app",
    "REDIS_URL": "redis://redis.internal:6379/0",
}


def run_manage(env_overrides: dict[str, str | None], *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["DJANGO_SETTINGS_MODULE"] = "settings.config"
    for name, value in env_overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SECRET_KEY", None),
        ("SECRET_KEY", "short"),
        ("DATABASE_URL", None),
        ("DATABASE_URL", "mysql://app@db/app"),
        ("REDIS_URL", "not a url"),
        ("ALLOWED_HOSTS", None),
        ("DEBUG", "maybe"),
        ("SIMULATED_FAILURES", "true"),
    ],
)
def test_production_start_up_names_the_missing_or_malformed_variable(variable, value):
    result = run_manage({**PRODUCTION_ENV, variable: value}, "check")

    assert result.returncode != 0
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_production_settings_pass_the_deploy_check():
    result = run_manage(PRODUCTION_ENV, "check", "--deploy")

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_local_servers_start_stop_and_recover_from_a_killed_run():
    run_dir = Path(tempfile.mkdtemp(prefix="servers-", dir=BASE_DIR / ".run"))
    run_dir.chmod(0o755)  # under root, PostgreSQL runs as an unprivileged user who must reach it
    servers = LocalServers(run_dir)
    try:
        first = servers.start()
        assert servers.postgres.accepts_queries() and servers.redis.answers_ping()

        servers.stop()
        assert not servers.postgres.is_running() and not servers.redis.is_running()

        servers.start()
        os.kill(servers.postgres.pid, signal.SIGKILL)
        os.kill(servers.redis.pid, signal.SIGKILL)
        again = servers.start()
        assert servers.postgres.accepts_queries() and servers.redis.answers_ping()
        assert again == first  # same ports: URLs handed out earlier stay valid
    finally:
        servers.stop()


def test_a_real_worker_round_trips_a_task_through_redis_and_postgres(start_worker):
    start_worker(["agent.testkit"])

    task, _ = enqueue("testkit", "record", {"key": "round-trip"}, idempotency_key="round-trip")

    wait_until(lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, what="task done")
    effect = Effect.objects.get(key="round-trip")
    assert effect.pid != os.getpid()  # it ran in the worker process, not here
