"""The correlation id of a web request: the caller's (`traceparent`, `X-Request-ID`) or a
new one, on every line the request logs and in its answer."""

from __future__ import annotations

import re

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

from orchestration.observability.logcontext import bind_log_context, clear_log_context, valid_correlation_id
from orchestration.work.enqueue import new_correlation_id

# W3C Trace Context: version-traceid-parentid-flags, lowercase hex.
TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def correlation_from_request(request: HttpRequest) -> str:
    """The correlation id a caller sent: the trace id of a W3C `traceparent` (so our
    spans join the caller's trace), else a well-formed `X-Request-ID`; "" when neither."""
    traceparent = TRACEPARENT.match(request.headers.get("traceparent", "").strip().lower())
    if traceparent and traceparent[1] != "ff" and traceparent[2] != "0" * 32:
        return traceparent[2]
    return valid_correlation_id(request.headers.get("x-request-id", "").strip())


class CorrelationIdMiddleware:
    """Gives each request a correlation id (the caller's, or a new one) as
    `request.correlation_id`, on every line it logs, and in the `X-Request-ID` answer."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.correlation_id = correlation_from_request(request) or new_correlation_id()
        # Cleared when the request finishes, not here: Django logs 4xx/5xx answers
        # after the middleware chain has returned, and those lines belong to the request.
        clear_log_context()
        bind_log_context(correlation_id=request.correlation_id)
        response = self.get_response(request)
        response.headers.setdefault("X-Request-ID", request.correlation_id)
        return response


@request_finished.connect
def _clear_request_context(**_kwargs) -> None:
    clear_log_context()
