"""Worker hosts on one machine, against the project's own PostgreSQL and Redis: a control host
for the one beat and the maintenance worker, and worker hosts host-1, host-2, ..., each a
network namespace with a hostname of its own (netns.py), running real Celery workers and a
metrics exporter. The servers are restarted to listen on the links too, for the run only.

    with Cluster(database_url=..., redis_url=..., log_dir=...) as cluster:
        host = cluster.add_hosts(2)[0]
        Fleet([cluster.worker(host, queues), cluster.beat()]).start()
        cluster.cut(host, ("postgres",)); ...; cluster.heal(host)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.db import connections

from devservers.server import Server
from devservers.stack import LocalServers
from orchestration.testing.fleet import BeatProcess, CeleryProcess, WorkerProcess
from orchestration.testing.netns import Host, Network, NetworkError

METRICS_PORT = 9809
CONTROL = "control"
SERVER_LINKS = ("postgres", "redis")

# Scrapes go straight to a host's link, never through an HTTP proxy from the environment.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def on_link(url: str, address: str) -> str:
    """The same server reached at another address: ``url`` with its host replaced."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{userinfo}{'@' if userinfo else ''}{address}{port}"))


def local_servers_for(database_url: str, redis_url: str) -> LocalServers:
    """The project's local servers that these URLs name; an error naming the URL otherwise."""
    servers = LocalServers()
    checks: tuple[tuple[str, Server, str], ...] = (
        ("DATABASE_URL", servers.postgres, database_url),
        ("REDIS_URL", servers.redis, redis_url),
    )
    for variable, server, url in checks:
        parts = urlsplit(url)
        if not server.is_running() or parts.hostname not in {"127.0.0.1", "localhost"} or parts.port != server.port:
            raise NetworkError(
                f"{variable} is not a server the project runs under {servers.run_dir}: hosts on this machine "
                "reach the project's own local servers over their links (unset DATABASE_URL and REDIS_URL)"
            )
    return servers


def restart(servers: LocalServers) -> None:
    with servers.lock():
        for server in (servers.postgres, servers.redis):
            server.stop()
            server.start()
    connections.close_all()  # this process's connection went with the old server


@contextlib.contextmanager
def listening_on_links(servers: LocalServers, network: Network):
    """The servers listen on their links' addresses too while this lasts, on loopback alone after."""
    links = tuple(service.gateway_interface for service in network.services if service.name in SERVER_LINKS)
    try:
        restart(LocalServers(servers.run_dir, listen=links))
        yield
    finally:
        restart(LocalServers(servers.run_dir))


class Cluster:
    """The hosts, their processes, their links, and the servers listening on them. Leaving the
    context stops every process, removes every namespace and link, and puts the servers back
    on loopback alone, whatever happened inside."""

    def __init__(self, *, database_url: str, redis_url: str, log_dir: Path, env: dict[str, str] | None = None):
        self.database_url = database_url
        self.redis_url = redis_url
        self.log_dir = Path(log_dir)
        self.env = env or {}
        self.network = Network()
        self.processes: list[CeleryProcess] = []
        self.exporters: dict[str, subprocess.Popen] = {}  # by host name
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Cluster:
        servers = local_servers_for(self.database_url, self.redis_url)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.network)
            stack.enter_context(listening_on_links(servers, self.network))
            stack.callback(self._stop_processes)
            self.add_host(CONTROL)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *_exc) -> None:
        self._stack.close()

    # --- Hosts ------------------------------------------------------------------------

    @property
    def control(self) -> Host:
        return self.network.host(CONTROL)

    @property
    def hosts(self) -> list[Host]:
        """The worker hosts, host-1 first (not the control host)."""
        return [host for host in self.network.hosts if host.name != CONTROL]

    def add_host(self, name: str) -> Host:
        host = self.network.add_host(name)
        metrics = self.metrics_dir(host)
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(parents=True)
        return host

    def add_hosts(self, count: int) -> list[Host]:
        """As many worker hosts as ``count``, adding the missing ones; returns them all."""
        while len(self.hosts) < count:
            self.add_host(f"host-{len(self.hosts) + 1}")
        return self.hosts[:count]

    def cut(self, host: Host, services: tuple[str, ...] | None = None) -> None:
        """Cut ``host`` off from these services ("postgres", "redis", "metrics"; all by default)."""
        self.network.cut(host, services)

    def heal(self, host: Host, services: tuple[str, ...] | None = None) -> None:
        self.network.heal(host, services)

    # --- Processes on the hosts ---------------------------------------------------------

    def metrics_dir(self, host: Host) -> Path:
        return self.log_dir / host.name / "metrics"

    def environment(self, host: Host) -> dict[str, str]:
        """What a process on ``host`` sees: the servers at their link addresses, and the host's
        own metrics folder."""
        return {
            **self.env,
            "DATABASE_URL": on_link(self.database_url, host.service("postgres").gateway),
            "REDIS_URL": on_link(self.redis_url, host.service("redis").gateway),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir(host)),
        }

    def worker(self, host: Host, queues: list[str], **options) -> WorkerProcess:
        """A Celery worker to run on ``host`` (not started: start it, or put it in a Fleet)."""
        options.setdefault("name", f"agents-{len(self.processes)}")
        env = {**self.environment(host), **options.pop("env", {})}
        process = WorkerProcess(queues, env=env, log_dir=self.log_dir / host.name, wrapper=host.command([]), **options)
        self.processes.append(process)
        return process

    def beat(self) -> BeatProcess:
        """The one beat, on the control host."""
        process = BeatProcess(self.environment(self.control), self.log_dir / CONTROL, self.control.command([]))
        self.processes.append(process)
        return process

    def start_exporter(self, host: Host, timeout: float = 60) -> None:
        """Serve the host's worker metrics on its metrics link, and wait until a scrape answers."""
        argv = [sys.executable, "-m", "django", "serve_worker_metrics"]
        argv += ["--address", host.address("metrics"), "--port", str(METRICS_PORT)]
        log_path = self.log_dir / host.name / "exporter.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                host.command(argv),
                env={**os.environ, **self.environment(host)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.exporters[host.name] = process
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.scrape(host, timeout=1)
                return
            if process.poll() is not None:
                break
            time.sleep(0.2)
        raise NetworkError(f"the metrics exporter on {host.name} did not answer:\n{log_path.read_text()[-2000:]}")

    def scrape_target(self, host: Host) -> str:
        return f"{host.address('metrics')}:{METRICS_PORT}"

    def scrape(self, host: Host, timeout: float = 5) -> str:
        """What Prometheus would read from ``host``, read from this (the root) namespace."""
        with _direct.open(f"http://{self.scrape_target(host)}/metrics", timeout=timeout) as response:
            return response.read().decode()

    def write_scrape_targets(self, path: Path) -> Path:
        """A Prometheus file_sd file naming every host's exporter."""
        targets = [
            {"targets": [self.scrape_target(host)], "labels": {"host": host.name}}
            for host in self.network.hosts
            if host.name in self.exporters
        ]
        path.write_text(json.dumps(targets, indent=2) + "\n")
        return path

    def _stop_processes(self) -> None:
        for process in self.processes:
            process.stop(timeout=10)
        for exporter in self.exporters.values():
            exporter.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                exporter.wait(5)
