"""The pair of local servers for one data folder, shared by the runs that use it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from devservers.folder import (
    default_run_dir,
)
from devservers.postgres_server import PostgresServer
from devservers.processes import (
    pid_is_alive,
    process_start_time,
)
from devservers.redis_server import RedisServer
from settings.env import redacted

# ---------------------------------------------------------------------------


class LocalServers:
    def __init__(self, run_dir: Path | None = None, listen: tuple[str, ...] = ()):
        self.run_dir = (run_dir or default_run_dir()).resolve()
        self.postgres = PostgresServer("postgres", self.run_dir, listen)
        self.redis = RedisServer("redis", self.run_dir, listen)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One process at a time starts or stops the servers of a run folder."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, postgres: bool = True, redis: bool = True) -> dict[str, str]:
        with self.lock():
            if postgres:
                self.postgres.start()
            if redis:
                self.redis.start()
        environment = self.environment()
        return {
            name: value
            for name, value in environment.items()
            if (name == "DATABASE_URL" and postgres) or (name == "REDIS_URL" and redis)
        }

    def stop(self) -> None:
        with self.lock():
            self.redis.stop()
            self.postgres.stop()

    @property
    def runs_dir(self) -> Path:
        return self.run_dir / "runs"

    def attach(self) -> None:
        """Count this process among the runs using the servers (``make up`` and ``make demo``
        side by side share them): the last run to ``detach`` stops them."""
        with self.lock():
            self.runs_dir.mkdir(exist_ok=True)
            (self.runs_dir / str(os.getpid())).write_text(process_start_time(os.getpid()))

    def detach(self) -> bool:
        """Leave; stop the servers unless another live run still uses them. Says whether it stopped them."""
        with self.lock():
            (self.runs_dir / str(os.getpid())).unlink(missing_ok=True)
            for entry in self.runs_dir.glob("*"):
                if run_is_alive(entry):
                    return False
                entry.unlink(missing_ok=True)  # a run that died without leaving
            self.redis.stop()
            self.postgres.stop()
        return True

    def environment(self) -> dict[str, str]:
        return {"DATABASE_URL": self.postgres.url(), "REDIS_URL": self.redis.url()}

    def status(self) -> dict[str, str]:
        return {
            "postgres": f"running on {redacted(self.postgres.url())}" if self.postgres.is_running() else "stopped",
            "redis": f"running on {redacted(self.redis.url())}" if self.redis.is_running() else "stopped",
        }


def run_is_alive(entry: Path) -> bool:
    """A run's entry names its pid and holds its start time, so a reused pid does not count."""
    try:
        pid = int(entry.name)
        return pid_is_alive(pid) and entry.read_text() == process_start_time(pid)
    except (OSError, ValueError):
        return False


def ensure_database_url() -> str:
    return LocalServers().start(redis=False)["DATABASE_URL"]


def ensure_redis_url() -> str:
    return LocalServers().start(postgres=False)["REDIS_URL"]


def run_with_servers(command: list[str]) -> int:
    """Start the servers the environment does not name, run ``command`` with their URLs, stop them.

    Ctrl-C or SIGTERM at any moment, even while the servers start, ends the command and then
    the servers, which run in their own session where the terminal's Ctrl-C does not reach.
    """
    servers = LocalServers()
    needed = {"postgres": not os.environ.get("DATABASE_URL"), "redis": not os.environ.get("REDIS_URL")}
    child: subprocess.Popen | None = None

    def forward(signum, _frame):
        if child is None:
            raise KeyboardInterrupt  # still starting: stop what has started
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        if any(needed.values()):
            servers.attach()
        child = subprocess.Popen(command, env={**os.environ, **servers.start(**needed)})
        return child.wait()
    except KeyboardInterrupt:
        print("devservers: interrupted while starting the servers", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        # A second Ctrl-C must not cut the stop short and leave servers behind.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        if any(needed.values()) and not servers.detach():
            print(f"devservers: {servers.run_dir} is still used by another run", file=sys.stderr)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
