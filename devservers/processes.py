"""Small process helpers: is a pid alive, whose is it, ports, waiting, stopping a process group."""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import socket
import time
from pathlib import Path

from devservers.folder import (
    START_TIMEOUT_SECONDS,
    LocalServerError,
)

# ---------------------------------------------------------------------------


def pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def process_command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def process_start_time(pid: int) -> str:
    """When the process started (clock ticks since boot): tells a live pid from a reused one."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def processes_in_group(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (a killed leader's orphans)."""
    members = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat_path).read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat_path.split("/")[2]))
    return members


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def find_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, what: str, timeout: float = START_TIMEOUT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise LocalServerError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop_process_group(pid: int, first_signal: int, timeout: float = 30) -> None:
    """Signal a server and its children; escalate to SIGKILL when it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first_signal)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (pid_is_alive(pid) or processes_in_group(pid)):
        time.sleep(0.1)
    for member in [pid, *processes_in_group(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)
