"""The request body: JSON only, bounded in size, refused with a clear error otherwise."""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpRequest
from ninja.parser import Parser

from api.errors import ApiError, too_large


class StrictJsonParser(Parser):
    """Checks the content type (415), the size (413) and the JSON (400) before pydantic
    sees the body. Duplicate keys and NaN are refused too: they hide what the client meant."""

    def parse_body(self, request: HttpRequest):
        if request.content_type != "application/json":
            raise ApiError(
                415,
                "unsupported_media_type",
                f"send the body as application/json, not {request.content_type or 'no content type'}",
                "Content-Type",
            )
        if len(request.body) > settings.API_MAX_BODY_BYTES:
            raise too_large()
        try:
            return json.loads(request.body, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}", "body") from None


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return result


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
