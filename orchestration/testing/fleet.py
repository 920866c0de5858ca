"""Starting and stopping real Celery worker and beat processes from Python.

Used by the demo, the load and chaos commands and the tests: the same
`celery -A settings worker` an operator runs, as child processes we can watch,
signal and kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import quote


def database_url() -> str:
    """The database this process uses (the test database too), as a URL for child processes,
    password included."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    password = f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    return f"postgresql://{quote(db['USER'] or '', safe='')}{password}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


class ProcessFailed(RuntimeError):
    """A worker or beat process exited or never became ready."""


def child_pids(pid: int) -> list[int]:
    return children_by_parent().get(pid, [])


def children_by_parent() -> dict[int, list[int]]:
    """Every live process's children, from one pass over /proc (each pass reads a file per
    process on the machine: ask once, then look up many)."""
    children: dict[int, list[int]] = {}
    # Not Path.glob: it stats each entry and raises when a process exits meanwhile.
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def proportional_bytes(pid: int) -> int:
    """The process's proportional share of memory (PSS): each page shared with other processes
    (a prefork pool's children share their parent's pages until written) counted once across
    them, where RSS counts it in each."""
    return _kilobytes_field(f"/proc/{pid}/smaps_rollup", "Pss:") * 1024


def resident_bytes(pid: int) -> int:
    return _kilobytes_field(f"/proc/{pid}/status", "VmRSS:") * 1024


def _kilobytes_field(path: str, name: str) -> int:
    """A "Name:  123 kB" line of a /proc file; 0 when the process is gone."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class CeleryProcess:
    """One `celery -A settings <kind>` process with its own log file."""

    ready_marker = ""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        wrapper: list[str] | None = None,
    ):
        self.args = args
        self.wrapper = wrapper or []  # a command that runs the process elsewhere (a host's namespace)
        self.env = {**os.environ, **(env or {})}
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="celery-"))
        self.log_path = self.log_dir / f"{self.kind}-{uuid.uuid4().hex[:8]}.log"
        self.process: subprocess.Popen | None = None

    kind = ""

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self, wait: bool = True, timeout: float = 60) -> CeleryProcess:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.process is not None:  # a restart: a fresh log, so "ready" means ready again
            self.log_path = self.log_dir / f"{self.kind}-{uuid.uuid4().hex[:8]}.log"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [*self.wrapper, sys.executable, "-m", "celery", "-A", "settings", self.kind, *self.args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready(timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready_marker in self.log():
                return
            if self.process is not None and self.process.poll() is not None:
                raise ProcessFailed(f"celery {self.kind} exited with {self.process.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.1)
        raise ProcessFailed(f"celery {self.kind} not ready after {timeout}s:\n{self.log()[-3000:]}")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL for the whole group if it lingers."""
        self.ask_to_stop()
        self.wait_stopped(timeout)

    def ask_to_stop(self) -> None:
        """SIGTERM: a worker finishes what it runs, then exits (Celery's warm shutdown)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float) -> None:
        """Wait for the exit asked for, then SIGKILL the whole group if it lingers."""
        if self.process is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(max(timeout, 0))
        self.kill()

    def memory(self, children: dict[int, list[int]]) -> tuple[int, int]:
        """(RSS, PSS) bytes of the process and its pool children (``children_by_parent()``),
        now; PSS counts the pages they share once."""
        if not self.is_running():
            return 0, 0
        pids = [self.pid, *children.get(self.pid, [])]
        return sum(resident_bytes(pid) for pid in pids), sum(proportional_bytes(pid) for pid in pids)

    def kill(self) -> None:
        """SIGKILL the process and everything in its group: a crash, not a shutdown."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


class WorkerProcess(CeleryProcess):
    kind = "worker"
    ready_marker = " ready."

    def __init__(
        self,
        queues: list[str],
        *,
        concurrency: int = 1,
        pool: str = "prefork",
        name: str | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        extra_args: list[str] | None = None,
        wrapper: list[str] | None = None,
    ):
        name = name or f"worker-{uuid.uuid4().hex[:6]}"
        args = [
            "-Q",
            ",".join(queues),
            "-c",
            str(concurrency),
            "-P",
            pool,
            "-n",
            f"{name}@%h",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "info",
            *(extra_args or []),
        ]
        self.name = name
        self.pool = pool
        super().__init__(args, env, log_dir, wrapper)

    def pool_pids(self) -> list[int]:
        """The pool's child processes, the ones that run tasks under prefork."""
        return child_pids(self.pid)


class BeatProcess(CeleryProcess):
    kind = "beat"
    ready_marker = "beat: Starting..."

    def __init__(
        self, env: dict[str, str] | None = None, log_dir: Path | None = None, wrapper: list[str] | None = None
    ):
        args = ["--scheduler", "django_celery_beat.schedulers:DatabaseScheduler", "-l", "info"]
        super().__init__(args, env, log_dir, wrapper)


def stop_together(processes: list[CeleryProcess], timeout: float) -> None:
    """Ask them all to stop at once, then wait for each within one shared timeout: their warm
    shutdowns overlap instead of adding up."""
    for process in processes:
        process.ask_to_stop()
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait_stopped(deadline - time.monotonic())


class Fleet:
    """Worker and beat processes started, watched and stopped together."""

    def __init__(self, processes: list[CeleryProcess]):
        self.processes = processes

    def start(self, timeout: float = 60) -> Fleet:
        for process in self.processes:
            process.start(wait=False)
        for process in self.processes:
            process.wait_ready(timeout)
        return self

    def stop(self, timeout: float = 30) -> None:
        stop_together(self.processes, timeout)

    def workers(self) -> list[WorkerProcess]:
        return [process for process in self.processes if isinstance(process, WorkerProcess)]

    def restart_dead(self, timeout: float = 60) -> list[CeleryProcess]:
        """Start again whatever has died, as a process supervisor would; returns them."""
        dead = [process for process in self.processes if not process.is_running()]
        for process in dead:
            process.kill()  # reap what is left of its group
            process.start(wait=False)
        for process in dead:
            process.wait_ready(timeout)
        return dead

    def memory(self) -> dict[CeleryProcess, tuple[int, int]]:
        """Each process's (RSS, PSS) bytes now, workers with their pools and beat."""
        children = children_by_parent()
        return {process: process.memory(children) for process in self.processes}
