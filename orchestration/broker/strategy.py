"""The shape check a task message passes before Celery builds a request from it.

Celery's default strategy (celery.worker.strategy.default) unpacks the body as
[args, kwargs, embed] and trusts headers such as the id and the time limits. A message that
breaks them raises out of the worker's event loop with the message in the unacked hash, so
it is restored and takes down every worker that starts. `guarded_strategy`, the Strategy of
every task of the app (GuardedTask, named in settings/celery.py), checks first and turns a
bad message into InvalidTaskError: Celery's own refusal, rejected without requeue, which the
kernel's consumer keeps as a dead letter (orchestration.broker.consumer).

No models here: the app loads its task class before Django's apps are ready.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.contrib.django.task import DjangoTask
from celery.exceptions import InvalidTaskError
from celery.worker.strategy import default as default_strategy
from kombu.message import Message


def task_message_problem(message: Message, body: Any) -> str | None:
    """What stops this message from becoming a task request, or None. Decoding errors
    (DecodeError, ContentDisallowed) propagate: Celery has its own refusal for each."""
    if body is not None:
        return "not Celery's task protocol 2 (the kernel sends nothing else)"
    headers = message.headers
    message_id = headers.get("id")
    if not isinstance(message_id, str) or not message_id or not message_id.isprintable():
        return f"the id header must be a non-empty printable string, not {message_id!r:.100}"
    shadow = headers.get("shadow")
    if shadow is not None and not (isinstance(shadow, str) and shadow.isprintable()):
        return f"the shadow header must be a printable string, not {shadow!r:.100}"
    timelimit = headers.get("timelimit")
    if timelimit is not None and not (
        isinstance(timelimit, list | tuple) and len(timelimit) == 2 and all(map(_is_seconds, timelimit))
    ):
        return f"the timelimit header must be [soft, hard] seconds, not {timelimit!r:.100}"
    if headers.get("eta") is not None:
        return "it carries an eta: the kernel schedules with the row's run_after, never with a held message"
    payload = message.payload
    if not (isinstance(payload, list | tuple) and len(payload) == 3):
        return f"the body must be [args, kwargs, embed], not {type(payload).__name__} {payload!r:.100}"
    args, kwargs, embed = payload
    if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
        return f"the body's args must be a list and its kwargs an object, not {args!r:.100} and {kwargs!r:.100}"
    if embed is not None and not isinstance(embed, dict):
        return f"the body's embed must be an object, not {embed!r:.100}"
    return None


def _is_seconds(value: Any) -> bool:
    # JSON from kombu may hold NaN and Infinity; the comparison refuses both.
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf)


def guarded_strategy(task: Task, app, consumer, **options) -> Callable:
    """Celery's default strategy behind task_message_problem."""
    handle = default_strategy(task, app, consumer, **options)

    def on_message(message: Message, body: Any, ack, reject, callbacks, **kwargs):
        problem = task_message_problem(message, body)
        if problem:
            raise InvalidTaskError(problem)
        return handle(message, body, ack, reject, callbacks, **kwargs)

    return on_message


class GuardedTask(DjangoTask):
    """The base of every task of the app (settings/celery.py): Celery's Django task class
    (the one it picks for a Django project), with the guarded strategy."""

    Strategy = "orchestration.broker.strategy:guarded_strategy"
