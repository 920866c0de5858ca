"""The re-publish sweep against a real broker queue: a lost message is sent again, a message
merely waiting behind a backlog is not multiplied."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from orchestration.models import AgentTask
from orchestration.work import sweeps
from orchestration.work.enqueue import enqueue

pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "agent.testkit"


def queued_task(redis_client, key: str) -> AgentTask:
    """A ready task whose message went out a minute ago and still waits in its queue."""
    redis_client.delete(QUEUE)
    task, _ = enqueue("testkit", "record", {"key": key}, idempotency_key=key)
    assert redis_client.llen(QUEUE) == 1
    now = timezone.now()
    AgentTask.objects.filter(pk=task.pk).update(
        run_after=now - timedelta(minutes=2), dispatched_at=now - timedelta(minutes=1)
    )
    return task


def test_an_old_message_still_queued_is_not_sent_again(redis_client):
    queued_task(redis_client, "behind-a-backlog")

    assert sweeps.republish_lost_messages() == 0
    assert redis_client.llen(QUEUE) == 1


def test_an_old_message_gone_from_the_queue_is_sent_again(redis_client):
    queued_task(redis_client, "lost")
    redis_client.delete(QUEUE)  # the message was lost

    assert sweeps.republish_lost_messages() == 1
    assert redis_client.llen(QUEUE) == 1


def test_a_task_ready_after_its_backoff_is_sent_even_behind_a_backlog(redis_client):
    task = queued_task(redis_client, "backed-off")
    AgentTask.objects.filter(pk=task.pk).update(run_after=timezone.now() - timedelta(seconds=5))

    assert sweeps.republish_lost_messages() == 1
    assert redis_client.llen(QUEUE) == 2
