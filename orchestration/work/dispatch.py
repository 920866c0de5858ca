"""Wake-up messages to Celery, sent after the rows they point at are committed.

A wake-up says "an agent of this queue has ready work": the worker that takes it claims
and runs the ready tasks of the agents it serves (runner.drain). It is a hint, delivered at
least once, possibly twice, possibly never: a lost one is found again by the re-publish
sweep, a duplicate finds nothing to claim. Wake-ups are not multiplied by the work: while
one is queued for a queue and not yet taken, committing more work sends none (a key in
Redis says so), so under load Celery carries a few messages per worker, not one per task.
A drain that runs out of time is the exception: it hands over with a wake-up of its own
(``force``), so the busy drains are replaced one for one and never fall together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import redis
from django.db import transaction

from orchestration.conf import kernel_settings
from orchestration.observability.logcontext import CORRELATION_HEADER
from orchestration.observability.tracing import first_line
from orchestration.redis_client import redis_client
from orchestration.registry import registry

logger = logging.getLogger(__name__)

RUN_AGENT_TASK = "orchestration.run_agent_task"
WAKE = "orchestration.wake"


def after_commit(callback: Callable[[], object]) -> None:
    """The one way business code runs side effects after its transaction commits."""
    transaction.on_commit(callback, robust=True)


def wake_on_commit(agents: Iterable[str]) -> None:
    """Once the transaction commits, wake the queues of these agents (those with new work)."""
    queues = sorted({queue_for(agent) for agent in agents})
    if queues:
        after_commit(lambda: [wake_queue(queue) for queue in queues])


def wake_queue(queue: str, *, force: bool = False) -> bool:
    """Send a wake-up to ``queue`` unless one is already waiting there (``force``: send anyway,
    for a drain handing over and for the sweep that finds work whose wake-up was lost). True
    when one was sent."""
    if not force:
        try:
            if not redis_client().set(_waiting_key(queue), "1", nx=True, ex=kernel_settings().wakeup_ttl_seconds):
                return False
        except redis.RedisError:  # no way to know: a duplicate wake-up is harmless
            logger.debug("could not check for a waiting wake-up on %s", queue, exc_info=True)
    return _send(WAKE, {}, queue)


def woken(queue: str) -> None:
    """The wake-up waiting on ``queue`` is taken: work committed from now on sends another."""
    try:
        redis_client().delete(_waiting_key(queue))
    except redis.RedisError:  # the key expires on its own
        logger.debug("could not clear the waiting wake-up of %s", queue, exc_info=True)


def _waiting_key(queue: str) -> str:
    return f"wakeup:{queue}"


def lease_for(agent: str, operation: str) -> int:
    """The lease of one attempt of this operation (the kernel's default when unset)."""
    declared = registry.operation(agent, operation)
    return (declared.lease_seconds if declared else None) or kernel_settings().default_lease_seconds


def queue_for(agent: str) -> str:
    """The broker queue an agent's wake-up messages go to."""
    definition = registry.agent(agent)
    return definition.queue if definition else f"agent.{agent}"


def publish(task_id: int, agent: str, operation: str = "", correlation_id: str = "") -> bool:
    """Send a message for this one task now (an operator's replay; a duplicate in a test)."""
    return _send(RUN_AGENT_TASK, {"task_id": task_id}, queue_for(agent), correlation_id)


def _send(name: str, kwargs: dict, queue: str, correlation_id: str = "") -> bool:
    """A failure is logged, not raised: the database still holds the truth, and the sweep
    sends again. No per-message time limits: a heartbeat cannot move those. The kernel's
    deadline follows each task's lease (orchestration.work.deadline); Celery's worker-wide
    hard limit is the ceiling on one message."""
    from celery import current_app

    try:
        current_app.send_task(
            name, kwargs=kwargs, queue=queue, headers={CORRELATION_HEADER: correlation_id}, ignore_result=True
        )
        return True
    except Exception as error:  # a broker restart, expected: one line, no traceback
        logger.warning(
            "could not send %s to %s (%s: %s); the sweep will send it again",
            name,
            queue,
            type(error).__name__,
            first_line(str(error), 200),
        )
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
