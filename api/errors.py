"""One JSON shape for every error the API gives: {"error": {"code", "message", "field", "details"}},
and the handlers that turn each kind of failure into it. No input gives a 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from orchestration.limits.backpressure import Overloaded
from orders.errors import IdempotencyKeyReused, IllegalTransition, InvalidOrder

logger = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"


class ApiError(Exception):
    """A refusal with its status, a stable code, and the request part at fault."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}
        self.details: list[dict[str, str]] = []


def error_response(api: NinjaAPI, request: HttpRequest, error: ApiError) -> HttpResponse:
    body = {"error": {"code": error.code, "message": error.message, "field": error.field, "details": error.details}}
    response = api.create_response(request, body, status=error.status)
    for name, value in error.headers.items():
        response[name] = value
    return response


def field_name(loc: Sequence[str | int]) -> str:
    """("body", "payload", "items", 0, "sku") -> "items[0].sku"; ("query", "state") -> "state"."""
    source, *path = loc
    if source == "body":
        path = path[1:]  # the view's argument name, not part of the request
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "body"


def from_validation(exc: ValidationError) -> ApiError:
    """Pydantic's findings, named by request field. A bad or missing Idempotency-Key is a
    400 (the request cannot be made safe to retry); anything else is a 422."""
    problems = [{"field": field_name(e["loc"]), "message": e["msg"]} for e in exc.errors]
    key_errors = [e for e in exc.errors if field_name(e["loc"]) == IDEMPOTENCY_HEADER]
    if key_errors:
        missing = key_errors[0]["type"] == "missing"
        return ApiError(
            400,
            "missing_idempotency_key" if missing else "invalid_idempotency_key",
            f"the {IDEMPOTENCY_HEADER} header is {'required' if missing else 'malformed'}: "
            "1 to 200 visible ASCII characters, e.g. a UUID",
            IDEMPOTENCY_HEADER,
        )
    missing_body = [p for p in problems if p["field"] == "body" and p["message"] == "Field required"]
    if missing_body:
        return ApiError(400, "missing_body", "a JSON body is required", "body")
    first = problems[0]
    error = ApiError(422, "invalid", f"{first['field']}: {first['message']}", first["field"])
    error.details = problems
    return error


def install_error_handlers(api: NinjaAPI) -> None:
    """Every exception the API can meet, mapped to the one shape."""

    def handle(exc_class, to_error):
        api.add_exception_handler(exc_class, lambda request, exc: error_response(api, request, to_error(exc)))

    handle(ApiError, lambda exc: exc)
    handle(ValidationError, from_validation)
    handle(
        AuthenticationError,
        lambda exc: ApiError(
            401,
            "unauthenticated",
            "send a valid, active client token as 'Authorization: Bearer <token>'",
            "Authorization",
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        ),
    )
    # Ninja wraps a body its parser refused in HttpError(400); the cause says why.
    handle(
        HttpError,
        lambda exc: (
            exc.__cause__ if isinstance(exc.__cause__, ApiError) else ApiError(exc.status_code, "http_error", str(exc))
        ),
    )
    handle(RequestDataTooBig, lambda exc: too_large())
    handle(Http404, lambda exc: ApiError(404, "not_found", "no such resource"))
    handle(InvalidOrder, lambda exc: ApiError(422, "invalid", str(exc), exc.field))
    handle(IdempotencyKeyReused, lambda exc: key_reused())
    handle(IllegalTransition, lambda exc: ApiError(409, "illegal_state", str(exc), "state"))
    handle(
        Overloaded,
        lambda exc: ApiError(
            503,
            "overloaded",
            f"{exc.backlog} or more tasks wait for a worker (BACKPRESSURE_MAX_PENDING is {exc.limit}); "
            "retry after Retry-After seconds with the same Idempotency-Key",
            headers={"Retry-After": str(max(1, int(exc.retry_after)))},
        ),
    )
    handle(Exception, unexpected)


def too_large() -> ApiError:
    return ApiError(413, "body_too_large", f"the body is over {settings.API_MAX_BODY_BYTES} bytes", "body")


def key_reused() -> ApiError:
    return ApiError(
        422,
        "idempotency_key_reused",
        f"this {IDEMPOTENCY_HEADER} was used with a different body; use a new key for a new order",
        IDEMPOTENCY_HEADER,
    )


def unexpected(exc: Exception) -> ApiError:
    # A bug: logged with its traceback for us, never shown to the caller.
    logger.error("unexpected error in the API", exc_info=exc)
    return ApiError(500, "internal", "an unexpected error; it has been logged")
