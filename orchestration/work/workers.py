"""Live workers: each worker process keeps a row fresh; a row unseen past a timeout is gone."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from django.db import close_old_connections
from django.utils import timezone

from orchestration.conf import kernel_settings
from orchestration.models import Worker

logger = logging.getLogger(__name__)

_started_in_pid: int | None = None
_queues = ""  # the queues this worker consumes, remembered before its pool forks


def worker_name() -> str:
    """This process as the kernel names it on claims, spans and its Worker row: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def touch(queues: str = "") -> None:
    """Say this process is alive (an upsert keyed by host:pid)."""
    now = timezone.now()
    Worker.objects.update_or_create(
        name=worker_name(),
        defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "last_seen_at": now,
            "stopped_at": None,
        },
        create_defaults={
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "started_at": now,
            "last_seen_at": now,
        },
    )


def mark_stopped() -> None:
    Worker.objects.filter(name=worker_name()).update(stopped_at=timezone.now())


def remembered_queues() -> list[str]:
    """The queues this worker consumes ([] outside a worker, e.g. a test calling the runner)."""
    return [name for name in _queues.split(",") if name]


def remember_queues(names: list[str]) -> None:
    """The worker's queues, for every heartbeat of its processes (the operators' workers page)."""
    global _queues
    _queues = ",".join(sorted(names))[: Worker._meta.get_field("queues").max_length]


def start_heartbeat() -> None:
    """Start the heartbeat thread of this process, once."""
    global _started_in_pid
    if _started_in_pid == os.getpid():
        return
    _started_in_pid = os.getpid()
    threading.Thread(target=_beat_forever, name="worker-heartbeat", daemon=True).start()


def _beat_forever() -> None:
    interval = kernel_settings().worker_heartbeat_seconds
    while True:
        try:
            close_old_connections()
            touch(_queues)
        except Exception:  # the database may be restarting; try again next beat
            logger.warning("worker heartbeat failed", exc_info=True)
        time.sleep(interval)
