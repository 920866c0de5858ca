"""A dead letter for each message Celery's consumer refuses.

Celery's consumer already refuses, without a crash, a message that names no task, names an
unknown one, is invalid (InvalidTaskError, from the kernel's shape check in
orchestration.broker.strategy too, or a refused content type) or does not decode: it logs it and
acks or rejects it (celery.worker.consumer.Consumer.on_*). This consumer, named by
CELERY_WORKER_CONSUMER, keeps each as a dead letter first (orchestration.broker.rejection), and makes
sure the message is gone even when Celery's handler trips on the same flaw.
"""

from __future__ import annotations

import logging

from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.exceptions import ContentDisallowed
from kombu.message import Message

from orchestration.broker import rejection
from orchestration.models import RejectionReason

logger = logging.getLogger(__name__)


def keep(message: Message, reason: str, detail: str) -> None:
    """Keep a message Celery refused as a dead letter."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    message_id = headers.get("id")
    if not isinstance(message_id, str):
        message_id = message.delivery_tag if isinstance(message.delivery_tag, str) else ""
    task_name = headers.get("task")
    rejection.reject(
        queue=str((message.delivery_info or {}).get("routing_key") or ""),
        reason=reason,
        detail=detail,
        body=message.body if isinstance(message.body, bytes | str) else repr(message.body),
        headers=headers,
        message_id=message_id,
        task_name=task_name if isinstance(task_name, str) else "",
    )


class Consumer(CeleryConsumer):
    """Celery's consumer, with every refusal kept as a dead letter."""

    def on_unknown_message(self, body, message):
        self._refuse(message, RejectionReason.NOT_A_TASK, "it names no task", super().on_unknown_message, body, message)

    def on_unknown_task(self, body, message, exc):
        name = message.headers.get("task") if isinstance(message.headers, dict) else None
        detail = f"no task named {name!r:.200} is registered here"
        self._refuse(message, RejectionReason.UNKNOWN_TASK, detail, super().on_unknown_task, body, message, exc)

    def on_invalid_task(self, body, message, exc):
        refused = isinstance(exc, ContentDisallowed)
        reason = RejectionReason.REFUSED_CONTENT if refused else RejectionReason.MALFORMED_TASK
        self._refuse(message, reason, str(exc), super().on_invalid_task, body, message, exc)

    def on_decode_error(self, message, exc):
        detail = f"the body does not decode as {message.content_type!r:.100}: {exc}"
        self._refuse(message, RejectionReason.UNDECODABLE_BODY, detail, super().on_decode_error, message, exc)

    def _refuse(self, message: Message, reason: str, detail: str, celery_handler, *args) -> None:
        keep(message, reason, detail)  # first: a crash between the two leaves a redelivery, not a loss
        try:
            celery_handler(*args)
        except Exception:
            # Celery's handler reads the message again (its id, its task name) and may trip on
            # the same flaw: the message must leave all the same, or it comes back to every worker.
            logger.warning("Celery's handler failed on a refused message; rejecting it", exc_info=True)
            if not message.acknowledged:
                message.reject_log_error(logger, self.connection_errors)
