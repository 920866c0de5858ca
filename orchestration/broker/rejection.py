"""Broker messages that cannot become a task run: each is taken off its queue for good and
kept as a RejectedMessage (what arrived, truncated; the queue; why; when; which worker).

Three places refuse a message, each at the first point that can tell:
- orchestration.broker.transport: bytes kombu cannot turn into a message (not JSON, not an envelope,
  a body that does not decode), screened as they come off Redis;
- orchestration.broker.consumer: messages Celery cannot turn into a task request (no task, an
  unknown task, a malformed or refused one);
- orchestration.tasks: a task request whose arguments the task refuses.

Keeping the dead letter never raises: a refusal must not take the worker down, whatever
arrived. When even the database cannot take it, the log line is all that is left.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from django.db import close_old_connections, connection

from orchestration.models import RejectedMessage, RejectionReason
from orchestration.observability.metrics import REJECTED_MESSAGES
from orchestration.work.workers import worker_name

logger = logging.getLogger(__name__)

KEPT_CHARS = 4096  # of the body and the headers: enough to see what it was, not a copy of a flood
DETAIL_CHARS = 2000


def printable(value: str | bytes, limit: int) -> str:
    """Text PostgreSQL can store and an operator can read, at most ``limit`` characters:
    bytes that are not UTF-8 and lone surrogates as backslash escapes, NUL as \\x00."""
    if isinstance(value, bytes):
        cut = len(value) > 4 * limit  # a character is at most 4 bytes: decode no more than needed
        text = value[: 4 * limit].decode("utf-8", "backslashreplace")
    else:
        cut = len(value) > limit
        text = value[: limit + 1]
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[: limit - 1] + "…" if cut or len(text) > limit else text


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")


def fingerprint(queue: str, message_id: str, raw: bytes) -> str:
    """One per message however often it is delivered: its queue and id, or its bytes."""
    what = b"id:" + _as_bytes(message_id) if message_id else b"bytes:" + raw
    return hashlib.sha256(_as_bytes(queue) + b"\n" + what).hexdigest()


def headers_text(headers: Mapping[str, Any] | None) -> str:
    if not headers:
        return ""
    try:
        # ASCII-only JSON: every control character, NUL and surrogate comes out escaped.
        return printable(json.dumps(dict(headers), default=repr, sort_keys=True), KEPT_CHARS)
    except (TypeError, ValueError, RecursionError):
        return printable(repr(headers), KEPT_CHARS)


def reject(
    *,
    queue: str,
    reason: str,
    detail: str,
    body: str | bytes = b"",
    headers: Mapping[str, Any] | None = None,
    message_id: str = "",
    task_name: str = "",
) -> None:
    """Keep a refused message as a dead letter, count it and log it. Never raises."""
    raw = _as_bytes(body)
    reason = RejectionReason(reason)
    REJECTED_MESSAGES.labels(reason.value).inc()
    # repr() of all that may hold outside text: no newline of theirs starts a log line of ours.
    logger.error(
        "refused a message on queue %r (%s): %r; kept as a dead letter (id %r)",
        queue,
        reason.label,
        printable(detail, DETAIL_CHARS),
        printable(message_id, 100),
    )
    row = {
        "queue": printable(queue, 200),
        "reason": reason,
        "detail": printable(detail, DETAIL_CHARS),
        "message_id": printable(message_id, 255),
        "task_name": printable(task_name, 255),
        "headers": headers_text(headers),
        "body": printable(raw, KEPT_CHARS),
        "size": len(raw),
        "worker": worker_name(),
    }
    try:
        if not connection.in_atomic_block:
            # The consumer's process has no request cycle to drop a connection a database
            # restart broke; this does (with CONN_HEALTH_CHECKS, it checks before reuse).
            close_old_connections()
        RejectedMessage.objects.get_or_create(fingerprint=fingerprint(queue, message_id, raw), defaults=row)
    except Exception:  # the database is away: the log line above is the record
        logger.exception("could not keep the refused message from queue %r as a dead letter", queue)
