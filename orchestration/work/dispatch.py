"""Publishing wake-up messages to Celery, after the rows they point at are committed.

A message carries only the task id. It is a hint: delivered at least once,
possibly twice, possibly never. A lost one is found again by the re-publish sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import transaction

from orchestration.conf import kernel_settings
from orchestration.observability.logcontext import CORRELATION_HEADER
from orchestration.registry import registry

logger = logging.getLogger(__name__)

RUN_AGENT_TASK = "orchestration.run_agent_task"


def after_commit(callback: Callable[[], object]) -> None:
    """The one way business code runs side effects after its transaction commits."""
    transaction.on_commit(callback, robust=True)


def publish_on_commit(task_id: int, agent: str, operation: str = "", correlation_id: str = "") -> None:
    after_commit(lambda: publish(task_id, agent, operation, correlation_id))


def lease_for(agent: str, operation: str) -> int:
    """The lease of one attempt of this operation (the kernel's default when unset)."""
    declared = registry.operation(agent, operation)
    return (declared.lease_seconds if declared else None) or kernel_settings().default_lease_seconds


def queue_for(agent: str) -> str:
    """The broker queue an agent's wake-up messages go to."""
    definition = registry.agent(agent)
    return definition.queue if definition else f"agent.{agent}"


def publish(task_id: int, agent: str, operation: str = "", correlation_id: str = "") -> bool:
    """Send the message now. A failure is logged, not raised: the sweep will send it again."""
    from celery import current_app

    queue = queue_for(agent)
    try:
        # No per-message time limits: a heartbeat cannot move those. The kernel's deadline
        # follows the lease (orchestration.work.deadline); Celery's worker-wide hard limit is the
        # ceiling on one attempt.
        current_app.send_task(
            RUN_AGENT_TASK,
            kwargs={"task_id": task_id},
            queue=queue,
            headers={CORRELATION_HEADER: correlation_id},
            ignore_result=True,
        )
        return True
    except Exception:  # the broker is down or unreachable; the database still holds the truth
        logger.warning("could not publish task %s to %s; the sweep will retry", task_id, queue, exc_info=True)
        return False


def queue_depth(queue: str) -> int | None:
    """Messages waiting in a broker queue (not those a worker holds); None when the broker
    cannot say. A queue that does not exist yet holds none."""
    from celery import current_app
    from kombu.exceptions import ChannelError

    try:
        with current_app.connection_for_write() as connection:
            try:
                _name, depth, _consumers = connection.default_channel.queue_declare(queue=queue, passive=True)
            except ChannelError:
                return 0
            return depth
    except Exception:  # the broker is unreachable: the caller falls back to its old behaviour
        logger.debug("could not read the depth of queue %s", queue, exc_info=True)
        return None
