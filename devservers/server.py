"""One local server process: its data folder, pid file, start, stop and status."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devservers.folder import (
    LocalServerError,
    folder_password,
)
from devservers.processes import (
    find_free_port,
    pid_is_alive,
    port_is_open,
    process_command_line,
    processes_in_group,
    stop_process_group,
    wait_for,
)

# ---------------------------------------------------------------------------


@dataclass
class Server:
    """One server process under ``run_dir/name``: a port file and a pid file."""

    name: str
    run_dir: Path
    # Link addresses (with their prefix, "169.254.10.1/24") to listen on besides loopback: the
    # cluster harness's links (orchestration.testing), for one run. Never a public interface.
    listen: tuple[str, ...] = ()

    binary_name = ""  # what the server's command line contains, to recognise our own process
    stop_signal = signal.SIGTERM

    @property
    def home(self) -> Path:
        return self.run_dir / self.name

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def pid_path(self) -> Path:
        return self.home / "server.pid"

    @property
    def port_path(self) -> Path:
        return self.home / "port"

    def read_int(self, path: Path) -> int | None:
        try:
            return int(path.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def pid(self) -> int | None:
        pid = self.read_int(self.pid_path)
        return pid if pid and pid_is_alive(pid) else None

    @property
    def port(self) -> int | None:
        return self.read_int(self.port_path)

    @property
    def password(self) -> str:
        return folder_password(self.run_dir)

    def is_running(self) -> bool:
        return self.pid is not None and self.port is not None and port_is_open(self.port)

    @property
    def listen_hosts(self) -> list[str]:
        return ["127.0.0.1", *(str(ipaddress.ip_interface(address).ip) for address in self.listen)]

    def choose_port(self) -> int:
        """Keep the port of earlier runs so URLs stay stable, unless someone else took it."""
        port = self.port
        if port is None or port_is_open(port):
            port = find_free_port()
            self.port_path.write_text(f"{port}\n")
        return port

    def reap_leftovers(self) -> None:
        """Kill what a SIGKILLed earlier run left behind, then forget its pid."""
        old_pid = self.read_int(self.pid_path)
        if old_pid:
            if self.owns(old_pid):
                stop_process_group(old_pid, signal.SIGKILL, timeout=5)
            for orphan in processes_in_group(old_pid):
                if self.binary_name in process_command_line(orphan):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(orphan, signal.SIGKILL)
        self.pid_path.unlink(missing_ok=True)

    def owns(self, pid: int) -> bool:
        return pid_is_alive(pid) and self.binary_name in process_command_line(pid)

    def spawn(self, argv: list[str], user: str | None = None) -> int:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        kwargs: dict = {}
        if user is not None:
            kwargs.update(user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[])
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C in a terminal does not reach it
            close_fds=True,
            **kwargs,
        )
        log.close()
        self.pid_path.write_text(f"{process.pid}\n")
        return process.pid

    def wait_until(self, ready, what: str) -> None:
        def ready_or_dead() -> bool:
            if self.pid is None:
                raise LocalServerError(f"{self.name} exited while starting{self.log_tail()}")
            return ready()

        try:
            wait_for(ready_or_dead, what)
        except LocalServerError as error:
            if "exited while starting" in str(error):
                raise
            raise LocalServerError(f"{error}{self.log_tail()}") from None

    def log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()[-20:]
        return f"\n--- last lines of {self.log_path} ---\n" + "\n".join(lines)

    def stop(self) -> bool:
        pid = self.read_int(self.pid_path)
        if not pid or not self.owns(pid):
            self.pid_path.unlink(missing_ok=True)
            return False
        stop_process_group(pid, self.stop_signal)
        self.pid_path.unlink(missing_ok=True)
        return True
