"""The ground everything stands on: settings, local servers, a real worker round trip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis
from django.urls import path

from devservers.folder import BASE_DIR
from devservers.processes import process_command_line
from devservers.stack import LocalServers
from orchestration.models import AgentTask, TaskStatus
from orchestration.work.enqueue import enqueue
from tests.kernelapp.models import Effect
from tests.support import wait_until

PRODUCTION_ENV = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "x" * 20 + "production-secret-key-with-enough-entropy-0123456789",
    "ALLOWED_HOSTS": "orders.example.com",
    "DATABASE_URL": "postgresql://app@db.internal:5432/app",
    "REDIS_URL": "redis://redis.internal:6379/0",
    "MODEL_BASE_URL": "https://models.internal/v1",
    "MODEL_NAME": "risk-model",
    "MODEL_PRICES": '{"risk-model": {"prompt": 0.5, "completion": 1.5}}',
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
        ("DEBUG", "true"),  # the debug page would show settings and variables to anyone
        ("METRICS_TOKEN", "too-short"),
        ("MODEL_BASE_URL", None),  # the risk agent would ask a model nobody named
        ("MODEL_NAME", None),
        ("MODEL_PRICES", '{"another-model": {"prompt": 1, "completion": 1}}'),
        ("MODEL_TIMEOUT_SECONDS", "90"),  # above the lease
    ],
)
def test_production_start_up_names_the_missing_or_malformed_variable(variable, value):
    result = run_manage({**PRODUCTION_ENV, variable: value}, "check")

    assert result.returncode != 0
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://app:hunter2-db-secret@db.internal/app"),
        ("REDIS_URL", "redis//:hunter2-db-secret@redis.internal:6379/0"),
        ("REDIS_URL", "http://redis.internal/0?password=hunter2-db-secret"),
    ],
)
def test_a_malformed_url_is_named_without_its_password(variable, value):
    result = run_manage({**PRODUCTION_ENV, variable: value}, "check")

    assert result.returncode != 0
    assert variable in result.stderr and "***" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout


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


SECRET = "-".join(["hunter2", "not", "for", "your", "eyes"])  # never in the source, which the page quotes


def failing_view(request):
    broker_url = f"redis://:{SECRET}@redis.internal:6379/0"  # a frame variable the page lists
    raise RuntimeError(f"could not reach {broker_url.split('@')[1]}")


urlpatterns = [path("fail", failing_view)]


@pytest.mark.urls(__name__)
def test_the_debug_page_shows_no_password_from_urls_settings_environment_or_variables(client, settings):
    settings.DEBUG = True
    settings.DATABASE_URL = f"postgresql://app:{SECRET}@db.internal:5432/app"
    settings.REDIS_URL = settings.CELERY_BROKER_URL = f"redis://:{SECRET}@redis.internal:6379/0"
    settings.FLOWER_BASIC_AUTH = f"operator:{SECRET}"
    client.raise_request_exception = False

    response = client.get(
        "/fail",
        HTTP_AUTHORIZATION=f"Bearer {SECRET}",
        REDIS_URL=f"redis://:{SECRET}@redis.internal:6379/0",  # the environment, as runserver passes it
    )

    page = response.content.decode()
    assert response.status_code == 500 and "RuntimeError" in page and "CELERY_BROKER_URL" in page
    assert "redis://:***@redis.internal:6379/0" in page  # what it points at stays readable
    assert SECRET not in page


def refuses_without_password(servers: LocalServers) -> bool:
    """Neither server lets in a client that does not give the folder's password."""
    try:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{servers.postgres.port}/app", connect_timeout=5).close()
        return False
    except psycopg.OperationalError as refusal:
        assert "password" in str(refusal)
    anonymous = redis.Redis(host="127.0.0.1", port=servers.redis.port, socket_timeout=5)
    try:
        anonymous.set("written-by", "a stranger")
        return False
    except redis.AuthenticationError:
        return True
    finally:
        anonymous.close()


def test_local_servers_ask_for_the_folder_password_and_give_it_to_servers_made_before_passwords():
    run_dir = Path(tempfile.mkdtemp(prefix="servers-", dir=BASE_DIR / ".run"))
    run_dir.chmod(0o755)
    servers = LocalServers(run_dir)
    try:
        urls = servers.start()
        assert refuses_without_password(servers)
        assert (run_dir / "password").stat().st_mode & 0o777 == 0o600
        password = (run_dir / "password").read_text().strip()
        assert password in urls["DATABASE_URL"] and password in urls["REDIS_URL"]
        assert password not in process_command_line(servers.redis.pid) + process_command_line(servers.postgres.pid)
        with psycopg.connect(urls["DATABASE_URL"]) as connection:
            assert connection.execute("SELECT current_database()").fetchone() == ("app",)
        assert redis.Redis.from_url(urls["REDIS_URL"]).ping()

        # Servers still running as a folder made before passwords had them: no password
        # in Redis, trust in pg_hba.conf, no password file.
        with psycopg.connect(urls["DATABASE_URL"], autocommit=True) as connection:
            (servers.postgres.data_dir / "pg_hba.conf").write_text(
                "local all all trust\nhost all all 127.0.0.1/32 trust\n"
            )
            connection.execute("SELECT pg_reload_conf()")
        redis.Redis.from_url(urls["REDIS_URL"]).config_set("requirepass", "")
        for leftover in (run_dir / "password", servers.postgres.password_marker, servers.redis.config_path):
            leftover.unlink()
        assert not refuses_without_password(servers)

        upgraded = LocalServers(run_dir).start()

        assert refuses_without_password(servers)
        assert upgraded != urls and (run_dir / "password").read_text().strip() in upgraded["DATABASE_URL"]
        with psycopg.connect(upgraded["DATABASE_URL"]) as connection:
            assert connection.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(upgraded["REDIS_URL"]).ping()
    finally:
        servers.stop()


def test_a_real_worker_round_trips_a_task_through_redis_and_postgres(start_worker):
    start_worker(["agent.testkit"])

    task, _ = enqueue("testkit", "record", {"key": "round-trip"}, idempotency_key="round-trip")

    wait_until(lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, what="task done")
    effect = Effect.objects.get(key="round-trip")
    assert effect.pid != os.getpid()  # it ran in the worker process, not here
