"""What the API takes and gives, as pydantic models; the OpenAPI schema is made from them."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated

from django.conf import settings
from ninja import Schema
from pydantic import AfterValidator, ConfigDict, Field, StrictInt

from orders.states import OrderState

MAX_ID = 2**63 - 1  # PostgreSQL bigint: a larger id is refused here, not by the database
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,200}$"  # visible ASCII, e.g. a UUID


def plain_text(value: str) -> str:
    """Refuse control characters and lone surrogates: PostgreSQL cannot store NUL, nor
    UTF-8 a surrogate, and neither belongs in a customer or a SKU."""
    for char in value:
        if unicodedata.category(char) in {"Cc", "Cs"}:
            raise ValueError(f"must not contain the control character {char!r}")
    return value


PlainText = Annotated[str, AfterValidator(plain_text)]


class Line(Schema):
    model_config = ConfigDict(extra="forbid")

    sku: PlainText = Field(min_length=1, max_length=64, description="A product's SKU.")
    quantity: StrictInt = Field(ge=1, le=settings.ORDER_MAX_QUANTITY, description="Units (ORDER_MAX_QUANTITY at most).")


class OrderIn(Schema):
    model_config = ConfigDict(extra="forbid")

    customer: PlainText = Field(min_length=1, max_length=254, description="Who the order is for (an address).")
    items: list[Line] = Field(
        min_length=1, max_length=settings.ORDER_MAX_LINES, description="One line per SKU (ORDER_MAX_LINES at most)."
    )


class LineOut(Schema):
    sku: str
    name: str
    quantity: int
    unit_price: str = Field(description="Decimal, as a string.")
    line_total: str = Field(description="Decimal, as a string.")


class StateChange(Schema):
    from_state: str = Field(description="Empty for the first entry.")
    to_state: str
    event: str
    at: datetime
    by: str = Field(description='The agent that made it, "api client <name>" for a client\'s cancel, or "operator".')
    detail: str


class OrderSummary(Schema):
    id: int
    state: OrderState
    customer: str
    total: str = Field(description="Decimal, as a string.")
    currency: str
    created_at: datetime
    updated_at: datetime


class OrderOut(OrderSummary):
    reason: str = Field(description="Why it ended the way it did (terminal states).")
    correlation_id: str = Field(description="Follow it with `manage.py trace`, and in the logs.")
    finished_at: datetime | None
    items: list[LineOut]
    history: list[StateChange] = Field(description="Every change of state, oldest first.")


class OrderPage(Schema):
    items: list[OrderSummary]
    next_cursor: int | None = Field(description="Pass as ?cursor= for the next page; null on the last one.")


class Problem(Schema):
    field: str
    message: str


class ErrorDetail(Schema):
    code: str = Field(description="Stable, for programs: e.g. invalid, not_found, illegal_state.")
    message: str = Field(description="For people.")
    field: str | None = Field(
        description="The request part at fault: a body path like items[0].sku, a query or path "
        "parameter, or a header such as Idempotency-Key."
    )
    details: list[Problem] = Field(default_factory=list, description="Every problem found, when there are several.")


class Error(Schema):
    error: ErrorDetail
