"""OpenTelemetry export of task attempts: off unless an OTLP endpoint is configured.

With OTEL_EXPORTER_OTLP_ENDPOINT set (the exporter reads the standard OTEL_* variables:
headers, timeout, OTEL_SERVICE_NAME...), every attempt becomes a span named
`agent.operation`, from claim to end, with its task, attempt and outcome. Its trace id is
the correlation id (taken as is when it is 32 hex digits, as ours and a `traceparent`'s
are, hashed otherwise), so one order's attempts on every worker form one trace, and join
the caller's trace when the order came with a `traceparent`.

Without the opentelemetry packages installed nothing is exported, and nothing breaks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from typing import Any

from django.conf import settings

from orchestration.observability.logcontext import current_log_context
from orchestration.work.outcome import RunOutcome

logger = logging.getLogger(__name__)

HEX_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

_provider: Any = None
_provider_pid: int | None = None


def trace_id_of(correlation_id: str) -> int:
    """The 128-bit trace id of a correlation id; 0 (invalid, so: a random one) for none."""
    if not correlation_id:
        return 0
    if HEX_TRACE_ID.match(correlation_id):
        return int(correlation_id, 16)
    return int.from_bytes(hashlib.sha256(correlation_id.encode()).digest()[:16], "big")


def install(exporter: Any = None, *, batch: bool = True) -> None:
    """Export this process's spans to ``exporter`` (None: stop exporting)."""
    global _provider, _provider_pid
    _provider_pid = os.getpid()
    if exporter is None:
        _provider = None
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class CorrelationTraceIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            return trace_id_of(current_log_context().get("correlation_id", "")) or super().generate_trace_id()

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "agents"})
    _provider = TracerProvider(resource=resource, id_generator=CorrelationTraceIds())
    _provider.add_span_processor((BatchSpanProcessor if batch else SimpleSpanProcessor)(exporter))


def _tracer() -> Any:
    # Set up once per process: a batch processor's thread does not survive a fork.
    if _provider_pid != os.getpid():
        install(_otlp_exporter())
    return _provider.get_tracer("orchestration") if _provider is not None else None


def _otlp_exporter() -> Any:
    if not getattr(settings, "OTEL_EXPORTER_OTLP_ENDPOINT", ""):
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        logger.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set, but opentelemetry is not installed: no spans exported")
        return None
    return OTLPSpanExporter()


def record_attempt(context: dict[str, Any], outcome: RunOutcome, start_ns: int, end_ns: int) -> None:
    """One span for one attempt, under the trace of its correlation id."""
    if not context.get("agent"):
        return  # nothing was claimed: no attempt
    tracer = _tracer()
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    attributes = {
        "agent.correlation_id": context.get("correlation_id", ""),
        "agent.workflow_id": context.get("workflow_id", ""),
        "agent.name": context["agent"],
        "agent.operation": context.get("operation", ""),
        "agent.task_id": context.get("task_id", 0),
        "agent.attempt": context.get("attempt", 0),
        "agent.outcome": outcome,
    }
    span = tracer.start_span(
        f"{context['agent']}.{context.get('operation', '')}",
        kind=SpanKind.CONSUMER,
        start_time=start_ns,
        attributes=attributes,
    )
    if outcome.failed:
        span.set_status(Status(StatusCode.ERROR, outcome))
    span.end(end_time=end_ns)
