"""Poison messages: whatever lands on an agent queue, the worker keeps consuming, the next
good message runs, and each message that cannot become a task run is one dead letter."""

from __future__ import annotations

import base64
import copy
import json
import re

import pytest
from celery import current_app
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from orchestration.broker import rejection
from orchestration.models import AgentTask, RejectedMessage, RejectionReason, TaskStatus
from orchestration.observability.logcontext import CORRELATION_HEADER, valid_correlation_id
from orchestration.work.dispatch import RUN_AGENT_TASK
from orchestration.work.enqueue import enqueue
from tests.support import wait_until

QUEUE = "agent.testkit"  # the test agent "testkit" listens here
LONG_ID = "poison:long-id-" + "x" * 285


def real_envelope(redis_client) -> dict:
    """The envelope Celery's publish writes for a run_agent_task message on the queue, taken
    back off it (so call it before a worker listens); the cases below change one thing each."""
    current_app.send_task(RUN_AGENT_TASK, kwargs={"task_id": 1}, queue=QUEUE)
    return json.loads(redis_client.rpop(QUEUE))


def changed(envelope: dict, *, body: bytes | None = None, drop: tuple[str, ...] = (), **headers) -> dict:
    message = copy.deepcopy(envelope)
    if body is not None:
        message["body"] = base64.b64encode(body).decode()
    message["headers"].update(headers)
    for name in drop:
        del message["headers"][name]
    return message


def push(redis_client, item: bytes | dict) -> None:
    """LPUSH onto the queue's list, as kombu's Redis transport does: BRPOP takes them in order."""
    redis_client.lpush(QUEUE, item if isinstance(item, bytes) else json.dumps(item))


def poison_cases(envelope: dict) -> dict[str, tuple[bytes | dict, RejectionReason]]:
    """marker -> (what is pushed, the reason it must be refused for). Each marker is in the
    message's id or in its bytes, so its dead letter can be found."""
    wrong_arguments = json.dumps([[], {"task_id": "abc"}, {}]).encode()
    not_base64 = changed(envelope, id="poison:not-base64")
    not_base64["body"] = "!!!not base64***"
    headers_list = copy.deepcopy(envelope)
    headers_list["headers"] = ["poison:headers-list"]
    pickled = changed(envelope, id="poison:pickle")
    pickled["content-type"] = "application/x-python-serialize"
    return {
        "poison:raw-bytes": (b"\x00\xff poison:raw-bytes, not JSON", RejectionReason.NOT_JSON),
        "poison:json-list": (b'["poison:json-list", 1, 2]', RejectionReason.NOT_AN_ENVELOPE),
        "poison:not-base64": (not_base64, RejectionReason.UNDECODABLE_BODY),
        "poison:not-a-triple": (
            changed(envelope, id="poison:not-a-triple", body=b'{"hello": "world"}'),
            RejectionReason.MALFORMED_TASK,
        ),
        "poison:unknown-task": (
            changed(envelope, id="poison:unknown-task", task="no.such.task"),
            RejectionReason.UNKNOWN_TASK,
        ),
        "poison:long-id": (changed(envelope, id=LONG_ID, body=wrong_arguments), RejectionReason.BAD_ARGUMENTS),
        "poison:headers-list": (headers_list, RejectionReason.NOT_AN_ENVELOPE),
        "poison:time-limits": (
            changed(envelope, id="poison:time-limits", timelimit="abc"),
            RejectionReason.MALFORMED_TASK,
        ),
        "poison:no-id": (
            changed(envelope, drop=("id",), body=b'[[], {"task_id": 1, "note": "poison:no-id"}, {}]'),
            RejectionReason.MALFORMED_TASK,
        ),
        "poison:pickle": (pickled, RejectionReason.REFUSED_CONTENT),
    }


def dead_letter_of(marker: str) -> list[RejectedMessage]:
    return [row for row in RejectedMessage.objects.all() if marker in row.message_id or marker in row.body]


@pytest.mark.django_db(transaction=True)
def test_no_malformed_message_kills_the_worker_and_each_becomes_one_dead_letter(start_worker, redis_client):
    # Given a worker on the test agent's queue, and a task whose message carries a newline
    # in its correlation header
    envelope = real_envelope(redis_client)
    worker = start_worker([QUEUE])
    pid = worker.pid
    cases = poison_cases(envelope)
    forged = AgentTask.objects.create(
        agent="testkit",
        operation="record",
        payload={"key": "forged-header"},
        idempotency_key="forged-header",
        correlation_id="c-forged",
    )

    # When every kind of poison lands on the queue, then the forged header, then a good task
    for item, _reason in cases.values():
        push(redis_client, item)
    forged_body = json.dumps([[], {"task_id": forged.pk}, {}]).encode()
    push(redis_client, changed(envelope, body=forged_body, **{CORRELATION_HEADER: "evil\nFAKE-LOG-LINE"}))
    task, _ = enqueue("testkit", "record", {"key": "after-poison"}, idempotency_key="after-poison")

    # Then the worker is the same process, still running, and the good task ran behind them
    wait_until(lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, timeout=60)
    assert worker.is_running() and worker.pid == pid
    # ... each poison is exactly one dead letter, on its queue, with its reason
    for marker, (_item, reason) in cases.items():
        rows = dead_letter_of(marker)
        assert [(row.queue, row.reason) for row in rows] == [(QUEUE, reason)], marker
    assert RejectedMessage.objects.count() == len(cases)
    long_id = dead_letter_of("poison:long-id")[0]
    assert len(long_id.message_id) <= 255 and long_id.message_id.startswith("poison:long-id-xxx")
    # ... the forged header ran its task, and never started a log line of its own
    wait_until(lambda: AgentTask.objects.get(pk=forged.pk).status == TaskStatus.SUCCEEDED)
    assert not re.search(r"^FAKE-LOG-LINE", worker.log(), re.MULTILINE)
    # ... and nothing is left on the queue or in kombu's unacked hash
    wait_until(lambda: redis_client.llen(QUEUE) == 0 and redis_client.hlen("unacked") == 0)


@pytest.mark.django_db(transaction=True)
def test_a_restarted_worker_does_not_see_the_poison_again(start_worker, redis_client):
    # Given a worker that refused two poison messages, one of which Celery would restore
    not_a_triple = changed(real_envelope(redis_client), body=b'{"hello": "world"}')
    first = start_worker([QUEUE])
    push(redis_client, not_a_triple)
    push(redis_client, b"poison:raw-bytes, not JSON")
    wait_until(lambda: RejectedMessage.objects.count() == 2, timeout=60, what="two dead letters")

    # When it stops and a new worker takes the queue
    first.stop()
    assert redis_client.llen(QUEUE) == 0 and redis_client.hlen("unacked") == 0
    second = start_worker([QUEUE])
    task, _ = enqueue("testkit", "record", {"key": "after-restart"}, idempotency_key="after-restart")

    # Then the new worker runs the good task and meets neither poison again
    wait_until(lambda: AgentTask.objects.get(pk=task.pk).status == TaskStatus.SUCCEEDED, timeout=60)
    assert second.is_running()
    assert RejectedMessage.objects.count() == 2


@pytest.mark.django_db
def test_a_dead_letter_keeps_any_bytes_once():
    # Given a message with NUL bytes, invalid UTF-8, a lone surrogate and a 1000-character id
    body = b"\x00\xfe" + "é".encode() + b"x" * 10_000
    headers = {"id": "y" * 1000, "note": "\ud800 and \x00"}

    # When it is refused twice (a redelivery)
    for _ in range(2):
        rejection.reject(
            queue=QUEUE,
            reason=RejectionReason.NOT_JSON,
            detail="test",
            body=body,
            headers=headers,
            message_id="y" * 1000,
        )

    # Then it is one row PostgreSQL could store, with its bytes escaped and cut
    row = RejectedMessage.objects.get()
    assert row.body.startswith("\\x00\\xfeé") and row.body.endswith("…") and len(row.body) <= rejection.KEPT_CHARS
    assert row.size == len(body)
    assert len(row.message_id) <= 255
    assert "\\ud800" in row.headers and "\\u0000" in row.headers


@pytest.mark.parametrize(
    "value, kept",
    [
        ("c-1.a:b", "c-1.a:b"),
        ("a" * 64, "a" * 64),
        ("evil\nFAKE", ""),
        ("ok\n", ""),
        ("a" * 65, ""),
        (42, ""),
        ("", ""),
    ],
)
def test_only_a_well_formed_correlation_id_is_kept(value, kept):
    assert valid_correlation_id(value) == kept


@pytest.mark.django_db
def test_operators_see_rejected_messages_read_only_by_queue_and_reason(admin_client):
    # Given two refused messages on two queues
    rejection.reject(queue=QUEUE, reason=RejectionReason.NOT_JSON, detail="not JSON", body=b"<script>x</script>")
    rejection.reject(queue="agent.payment", reason=RejectionReason.UNKNOWN_TASK, detail="no task", message_id="m-2")
    listing = reverse("admin:orchestration_rejectedmessage_changelist")

    # When an operator filters the list by queue, and by reason
    by_queue = admin_client.get(listing, {"queue": QUEUE})
    by_reason = admin_client.get(listing, {"reason__exact": RejectionReason.UNKNOWN_TASK})

    # Then each shows its own row, and a row's page shows what arrived, escaped, with no way to edit
    assert by_queue.status_code == 200 and list(by_queue.context["cl"].result_list) == [
        RejectedMessage.objects.get(queue=QUEUE)
    ]
    assert [row.message_id for row in by_reason.context["cl"].result_list] == ["m-2"]
    row = RejectedMessage.objects.get(queue=QUEUE)
    page = admin_client.get(reverse("admin:orchestration_rejectedmessage_change", args=[row.pk]))
    assert page.status_code == 200
    assert b"&lt;script&gt;x&lt;/script&gt;" in page.content and b"<script>x</script>" not in page.content
    assert b'name="_save"' not in page.content
    assert admin_client.post(reverse("admin:orchestration_rejectedmessage_delete", args=[row.pk])).status_code == 403
    dashboard = admin_client.get(reverse("admin:dashboard"))
    assert re.search(rb'id="rejected-message-count">2<', dashboard.content)


@pytest.mark.django_db
def test_refused_messages_are_counted_for_prometheus(client):
    def refused() -> float:
        text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {settings.METRICS_TOKEN}").content.decode()
        found = re.search(r'^broker_messages_rejected_total\{reason="not_an_envelope"\} (\S+)$', text, re.MULTILINE)
        return float(found[1]) if found else 0.0

    before = refused()
    rejection.reject(queue=QUEUE, reason=RejectionReason.NOT_AN_ENVELOPE, detail="a JSON list", body=b"[1]")
    assert refused() == before + 1


@pytest.mark.django_db
def test_refused_messages_are_pruned_with_the_dead_letters():
    from orchestration.work.sweeps import prune_finished_tasks

    rejection.reject(queue=QUEUE, reason=RejectionReason.NOT_JSON, detail="old", body=b"old")
    rejection.reject(queue=QUEUE, reason=RejectionReason.NOT_JSON, detail="new", body=b"new")
    RejectedMessage.objects.filter(detail="old").update(received_at=timezone.now() - timezone.timedelta(days=400))

    prune_finished_tasks()

    assert list(RejectedMessage.objects.values_list("detail", flat=True)) == ["new"]
