"""Log lines that say which workflow they belong to.

A context variable carries the correlation id (and, during agent work, the workflow id,
agent, task id and attempt); a filter copies it onto every record, and the formatters
print it: one JSON object per line in production, a readable line otherwise.
`grep '"correlation_id": "<id>"'` over every process's log then follows one request's
orders, and `grep '"workflow_id": "<id>"'` one order's agent work.

This module is loaded by the LOGGING setting, before Django's apps are ready, so it
imports no models.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from celery.signals import task_postrun, task_prerun

CONTEXT_FIELDS = ("correlation_id", "workflow_id", "agent", "operation", "task_id", "attempt")
# The Celery message header that carries the correlation id. Not "correlation_id":
# Celery keeps that name for its own reply correlation and overwrites it with the task id.
CORRELATION_HEADER = "x_correlation_id"
# What we take as a correlation id from outside (an X-Request-ID, a message header): it is
# printed on log lines and kept in 64-character columns, so no spaces, no control characters.
CORRELATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")

_NOTHING: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("orchestration_log_context", default=_NOTHING)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def valid_correlation_id(value: object) -> str:
    """``value`` when it is a well-formed correlation id, else "": never a raw outside string."""
    return value if isinstance(value, str) and CORRELATION_ID.fullmatch(value) else ""


def current_log_context() -> dict[str, Any]:
    return dict(_context.get())


def bind_log_context(**fields: Any) -> None:
    """Add fields to the current context, until the enclosing log_context() ends."""
    _context.set({**_context.get(), **{name: value for name, value in fields.items() if value not in (None, "")}})


def clear_log_context() -> None:
    _context.set({})


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every line logged inside the block (in this thread or task) carries these fields."""
    token = _context.set(dict(_context.get()))
    try:
        bind_log_context(**fields)
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the log context onto the record (put it on handlers, so propagated records get it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


def _context_of(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in CONTEXT_FIELDS if getattr(record, name, None) not in (None, "")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the context, any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        line.update(_context_of(record))
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and name not in line and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)


class ReadableFormatter(logging.Formatter):
    """`time LEVEL logger [correlation agent.operation task=N attempt=N] message`, for people at a terminal."""

    def __init__(
        self, fmt: str | None = None, datefmt: str | None = None, style: Literal["%", "{", "$"] = "%", **kwargs: Any
    ):
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s %(_context)s%(message)s", datefmt, style, **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        context = _context_of(record)
        context.pop("workflow_id", None)  # 32 hex digits: in the JSON lines, too long for a terminal
        work = ".".join(str(context.pop(name)) for name in ("agent", "operation") if name in context)
        parts = [str(context.pop("correlation_id", "")), work]
        parts += [f"{name.removesuffix('_id')}={value}" for name, value in context.items()]
        shown = " ".join(part for part in parts if part)
        record._context = f"[{shown}] " if shown else ""
        return super().format(record)


@task_prerun.connect
def _bind_celery_task(task=None, **_kwargs) -> None:
    """A Celery task's lines carry the correlation id of the message that woke it (when it
    is well formed: a message's headers are outside input)."""
    clear_log_context()
    headers = getattr(getattr(task, "request", None), "headers", None)
    if isinstance(headers, dict):
        bind_log_context(correlation_id=valid_correlation_id(headers.get(CORRELATION_HEADER)))


@task_postrun.connect
def _unbind_celery_task(**_kwargs) -> None:
    clear_log_context()
