"""Hosts on one machine: Linux network namespaces joined to this machine's servers by links the
harness creates, and cut off by setting a link down.

    root namespace (the servers)             namespace agc-host-1 (hostname host-1)
    bridge agc-pg  169.254.10.1/24  <-veth->  pg  169.254.10.11/24
    bridge agc-rd  169.254.20.1/24  <-veth->  rd  169.254.20.11/24
    bridge agc-mt  169.254.30.1/24  <-veth->  mt  169.254.30.11/24   (metrics scrapes)

One bridge per service, so a host can be cut off from PostgreSQL only, from Redis only, or from
both: its end of one or two links goes down, and the kernel drops the packets both ways, as a
pulled cable would. No firewall is needed. The addresses are link-local (169.254.0.0/16) on
links made here; nothing adds a route or turns on forwarding, so no packet leaves the machine.

Everything is named with a prefix. One run per prefix at a time holds a lock; a run first
sweeps what a crashed earlier one left (its namespaces, the processes in them, its links), and
removes its own when it closes, also on Ctrl-C, SIGTERM, SIGHUP or an exception.

Usage (as root): python -m orchestration.testing.netns check|sweep
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

PREFIX = "agc"
FIRST_HOST = 10  # host i has address .(10 + i) on each link; .1 is the servers' end


class NetworkError(RuntimeError):
    """Hosts cannot be made here, or an `ip` command failed."""


@dataclass(frozen=True)
class Service:
    """One link per host to one service; the service listens on the bridge's address."""

    name: str
    short: str  # in link names, which Linux caps at 15 characters
    subnet: int  # the third byte of the link's /24 in 169.254.0.0/16

    @property
    def gateway(self) -> str:
        return f"169.254.{self.subnet}.1"

    @property
    def gateway_interface(self) -> str:
        return f"{self.gateway}/24"

    def address(self, index: int) -> str:
        return f"169.254.{self.subnet}.{FIRST_HOST + index}"


SERVICES = (Service("postgres", "pg", 10), Service("redis", "rd", 20), Service("metrics", "mt", 30))


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def why_unavailable() -> str:
    """Why worker hosts cannot be made on this machine ("need root ..."), or "" when they can."""
    if os.geteuid() != 0:
        return "need root for network namespaces: run as root (CI does), e.g. `sudo make cluster` or `sudo make test`"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"need `{tool}` ({package}) on PATH"
    # Anonymous namespaces: nothing to clean up if this fails half-way.
    probe = subprocess.run(["unshare", "--net", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot be made: network namespaces are not permitted here ({probe.stderr.strip() or 'unshare failed'})"
    return ""


@dataclass(frozen=True)
class Host:
    """A network namespace with a link to each service, and a hostname of its own."""

    name: str  # its hostname too
    index: int
    prefix: str
    services: tuple[Service, ...]

    @property
    def namespace(self) -> str:
        return f"{self.prefix}-{self.name}"

    def service(self, name: str) -> Service:
        return next(service for service in self.services if service.name == name)

    def address(self, service: str) -> str:
        return self.service(service).address(self.index)

    def link(self, service: Service) -> str:
        """The root namespace's end of this host's link to ``service``."""
        return f"{self.prefix}-{self.index}-{service.short}"

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host: its network namespace and a UTS namespace of its own,
        so socket.gethostname() (Celery's node name, the kernel's Worker rows) says the host."""
        rename = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.namespace, "unshare", "--uts", "sh", "-c", rename, self.name, *argv]

    def pids(self) -> list[int]:
        return namespace_pids(self.namespace)


def namespace_pids(namespace: str) -> list[int]:
    return [int(pid) for pid in ip("netns", "pids", namespace, check=False).split()]


def namespaces(prefix: str) -> list[str]:
    listed = ip("-j", "netns", "list", check=False).strip()
    return [entry["name"] for entry in json.loads(listed or "[]") if entry["name"].startswith(f"{prefix}-")]


def links(prefix: str) -> list[str]:
    listed = ip("-j", "link", "show", check=False).strip()
    return [entry["ifname"] for entry in json.loads(listed or "[]") if entry["ifname"].startswith(f"{prefix}-")]


def kill_everything_in(namespace: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (pids := namespace_pids(namespace)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def sweep(prefix: str = PREFIX) -> list[str]:
    """Remove every namespace and link named with ``prefix``, killing what runs inside first.
    Returns what it removed. Call it only under the prefix's lock (Network does)."""
    removed = []
    for namespace in namespaces(prefix):
        kill_everything_in(namespace)
        ip("netns", "del", namespace, check=False)
        removed.append(f"namespace {namespace}")
    for link in links(prefix):  # veth pairs die with their namespace; bridges do not
        ip("link", "del", link, check=False)
        removed.append(f"link {link}")
    return removed


class Network:
    """The bridges, the hosts on them, and cutting and healing their links. Use it as a context
    manager, or open() and close(); what it made is gone after close, whatever happened."""

    def __init__(self, prefix: str = PREFIX, services: tuple[Service, ...] = SERVICES):
        self.prefix = prefix
        self.services = services
        self.hosts: list[Host] = []
        self.swept: list[str] = []
        self._lock_file: IO[str] | None = None

    def bridge(self, service: Service) -> str:
        return f"{self.prefix}-{service.short}"

    def open(self) -> Network:
        reason = why_unavailable()
        if reason:
            raise NetworkError(reason)
        self._take_lock()
        _closing_on_exit(self)
        try:
            self.swept = sweep(self.prefix)
            for service in self.services:
                bridge = self.bridge(service)
                ip("link", "add", bridge, "type", "bridge")
                ip("addr", "add", service.gateway_interface, "dev", bridge)
                ip("link", "set", bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def add_host(self, name: str) -> Host:
        host = Host(name, len(self.hosts), self.prefix, self.services)
        self.hosts.append(host)
        ip("netns", "add", host.namespace)
        ip("-n", host.namespace, "link", "set", "lo", "up")
        for service in self.services:
            ip(
                "link",
                "add",
                host.link(service),
                "type",
                "veth",
                "peer",
                "name",
                service.short,
                "netns",
                host.namespace,
            )
            ip("link", "set", host.link(service), "master", self.bridge(service), "up")
            ip("-n", host.namespace, "addr", "add", f"{service.address(host.index)}/24", "dev", service.short)
            ip("-n", host.namespace, "link", "set", service.short, "up")
        return host

    def host(self, name: str) -> Host:
        return next(host for host in self.hosts if host.name == name)

    def cut(self, host: Host, services: tuple[str, ...] | None = None) -> None:
        """Cut ``host`` off from these services (all of them by default)."""
        for service in self._chosen(services):
            ip("link", "set", host.link(service), "down")

    def heal(self, host: Host, services: tuple[str, ...] | None = None) -> None:
        for service in self._chosen(services):
            ip("link", "set", host.link(service), "up")

    def _chosen(self, names: tuple[str, ...] | None) -> list[Service]:
        unknown = set(names or ()) - {service.name for service in self.services}
        if unknown:
            raise NetworkError(f"no link to {sorted(unknown)}; the links are {[s.name for s in self.services]}")
        return [service for service in self.services if names is None or service.name in names]

    def close(self) -> None:
        """Kill whatever still runs in the hosts, remove them and the bridges, let go of the lock."""
        if self._lock_file is None:
            return
        try:
            with _signals_held():  # a second Ctrl-C must not cut the clean-up short
                sweep(self.prefix)
        finally:
            self.hosts.clear()
            self._lock_file.close()  # releases the lock
            self._lock_file = None
            _forget(self)

    def __enter__(self) -> Network:
        return self.open()

    def __exit__(self, *_exc) -> None:
        self.close()

    def _take_lock(self) -> None:
        path = Path(tempfile.gettempdir()) / f"{self.prefix}-network.lock"
        handle = open(path, "w")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise NetworkError(
                f"another run is using the {self.prefix}-* hosts (it holds {path}); wait for it to end"
            ) from None
        self._lock_file = handle


# --- Closing on the way out, whatever the way ---------------------------------------

_open_networks: list[Network] = []
_previous_handlers: dict[int, Any] = {}
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_held():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = (signal.SIGINT, *EXIT_SIGNALS)
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_on_signal(signum, _frame) -> None:
    # SystemExit unwinds the stack, so every `finally` and context manager on the way runs.
    raise SystemExit(128 + signum)


def _close_all() -> None:
    for network in reversed(list(_open_networks)):
        network.close()


def _closing_on_exit(network: Network) -> None:
    """Close ``network`` at interpreter exit, and turn SIGTERM and SIGHUP into an orderly exit
    while it is open (Ctrl-C is a KeyboardInterrupt already). SIGKILL leaves it to the next
    run's sweep."""
    if not _open_networks:
        atexit.register(_close_all)
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_SIGNALS:
                if signal.getsignal(signum) in (signal.SIG_DFL, None):
                    _previous_handlers[signum] = signal.signal(signum, _exit_on_signal)
    _open_networks.append(network)


def _forget(network: Network) -> None:
    if network in _open_networks:
        _open_networks.remove(network)
    if not _open_networks:
        atexit.unregister(_close_all)
        for signum, handler in list(_previous_handlers.items()):
            if threading.current_thread() is threading.main_thread():
                signal.signal(signum, handler)
            del _previous_handlers[signum]


def main(argv: list[str]) -> int:
    if argv not in (["check"], ["sweep"]):
        print(__doc__, file=sys.stderr)
        return 2
    reason = why_unavailable()
    if reason:
        print(f"worker hosts on this machine {reason}", file=sys.stderr)
        return 1
    if argv == ["sweep"]:
        network = Network()
        try:
            network._take_lock()
        except NetworkError as error:
            print(error, file=sys.stderr)
            return 1
        try:
            for line in sweep(network.prefix) or ["nothing to remove"]:
                print(line)
        finally:
            if network._lock_file is not None:
                network._lock_file.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
