"""Serve one host's worker metrics to Prometheus: the counters every worker process on the host
writes to PROMETHEUS_MULTIPROC_DIR, added up at each scrape.

Run one per worker host, beside its workers and with their PROMETHEUS_MULTIPROC_DIR. It serves
only what the host's processes counted; the database-wide figures (tasks by status, stuck
tasks, breakers) come from the web's /metrics, scraped once, so nothing is counted twice.
"""

from __future__ import annotations

import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector


class Command(BaseCommand):
    help = "Serve the counters of this host's worker processes (PROMETHEUS_MULTIPROC_DIR) at /metrics."

    def add_arguments(self, parser):
        parser.add_argument("--address", default="127.0.0.1", help="address to listen on (the host's own)")
        parser.add_argument("--port", type=int, default=9809)

    def handle(self, *args, address: str, port: int, **options):
        directory = settings.PROMETHEUS_MULTIPROC_DIR
        if not directory:
            raise CommandError(
                "PROMETHEUS_MULTIPROC_DIR is not set: give this command and every worker on the host the same folder"
            )
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, path=directory)
        try:
            start_http_server(port, addr=address, registry=registry)
        except OSError as error:
            raise CommandError(f"cannot listen on {address}:{port}: {error.strerror}") from None
        self.stdout.write(f"serving the worker metrics in {directory} at http://{address}:{port}/metrics")
        self.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            return
