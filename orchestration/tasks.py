"""The kernel's Celery tasks: the wake-up that drains an agent queue's ready work, the run of
one task by id (an operator's replay), and the periodic sweeps."""

from __future__ import annotations

import json
import logging

from celery import shared_task
from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from django.db import connection

from orchestration.broker import rejection
from orchestration.models import RejectionReason
from orchestration.work import connections, runner, sweeps, workers

logger = logging.getLogger(__name__)


@shared_task(name="orchestration.wake", bind=True, acks_late=True, ignore_result=True)
def wake(self, *args, **unexpected) -> int | str:
    """Ready work waits on this queue: claim and run the ready tasks of the agents this worker
    serves (runner.drain). Returns how many ran."""
    workers.start_heartbeat()
    if args or unexpected:
        return _refuse_arguments(self, args, None, unexpected, expected="wake takes no arguments")
    return runner.drain(_queue_of(self))


@shared_task(name="orchestration.run_agent_task", bind=True, acks_late=True, ignore_result=True)
def run_agent_task(self, *args, task_id=None, **unexpected) -> str:
    """Wake-up for agent task ``task_id``: claim it, run it, complete it, or do nothing."""
    workers.start_heartbeat()
    if args or unexpected or not is_task_id(task_id):
        return _refuse_arguments(self, args, task_id, unexpected)
    return runner.run_task(task_id, queue=_queue_of(self))


def is_task_id(value: object) -> bool:
    """A primary key of the task table: a positive integer that fits a bigint."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63


def _queue_of(task) -> str:
    delivery = getattr(task.request, "delivery_info", None) or {}
    return delivery.get("routing_key") or ""


def _refuse_arguments(
    task,
    args,
    task_id,
    unexpected,
    expected: str = "run_agent_task takes exactly one argument, task_id, a positive integer",
) -> str:
    """A message we cannot act on is kept as a dead letter for an operator, not retried forever."""
    arrived = [list(args), {"task_id": task_id, **unexpected} if task_id is not None else unexpected]
    rejection.reject(
        queue=_queue_of(task),
        reason=RejectionReason.BAD_ARGUMENTS,
        detail=expected,
        body=json.dumps(arrived, default=repr),
        message_id=task.request.id or "",
        task_name=task.name,
    )
    return "rejected"


@shared_task(name="orchestration.reclaim_expired_leases", ignore_result=True)
def reclaim_expired_leases() -> int:
    return sweeps.reclaim_expired_leases()


@shared_task(name="orchestration.expire_overdue_tasks", ignore_result=True)
def expire_overdue_tasks() -> int:
    return sweeps.expire_overdue_tasks()


@shared_task(name="orchestration.republish_lost_messages", ignore_result=True)
def republish_lost_messages() -> int:
    return sweeps.republish_lost_messages()


@shared_task(name="orchestration.prune_finished_tasks", ignore_result=True)
def prune_finished_tasks() -> int:
    return sweeps.prune_finished_tasks()


@task_prerun.connect
def _drop_a_connection_left_mid_transaction(**_kwargs) -> None:
    """A time limit that fires inside a statement (a COMMIT waiting on a lock held by a cut-off
    host, say) can leave Django believing it is inside a transaction on a connection psycopg
    has closed; closing is then a no-op, and every later task of the process fails with "the
    connection is closed". No task starts inside a transaction, so drop that state and reconnect."""
    if connection.in_atomic_block or connection.closed_in_transaction:
        logger.warning("dropping a database connection an interrupted statement left mid-transaction")
        connection.in_atomic_block = False
        connection.closed_in_transaction = False
        connection.needs_rollback = False
        connection.savepoint_ids = []
        connection.atomic_blocks = []
        connection.close()
    # Celery keeps the connection between tasks (CELERY_DB_REUSE_MAX): drop it here when it
    # broke (a database restart) or outlived DATABASE_CONN_MAX_AGE.
    connections.drop_broken_or_old()


@task_postrun.connect
def _give_back_a_pooled_connection(**_kwargs) -> None:
    connections.give_back_if_pooled()


@celeryd_after_setup.connect
def _on_worker_setup(sender=None, instance=None, **_kwargs) -> None:
    # After -Q is applied and before the pool forks, so every pool process inherits them.
    workers.remember_queues(list(instance.app.amqp.queues.consume_from))


@worker_process_init.connect
def _on_pool_process_start(**_kwargs) -> None:
    workers.start_heartbeat()


@worker_ready.connect
def _on_worker_ready(sender=None, **_kwargs) -> None:
    # Thread and solo pools run tasks in the main process, which has no pool init. Under
    # prefork the main process runs none: only its pool processes keep a row.
    pool = getattr(getattr(sender, "controller", None), "pool_cls", None)
    if "prefork" not in getattr(pool, "__module__", ""):
        workers.start_heartbeat()


@worker_process_shutdown.connect
def _on_pool_process_stop(**_kwargs) -> None:
    try:
        workers.mark_stopped()
    except Exception:  # shutting down: the row will simply age out
        logger.debug("could not mark worker stopped", exc_info=True)
