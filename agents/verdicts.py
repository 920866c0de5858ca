"""What the risk-review agent asks a model, and how it checks the answer before acting on it.

The model gets the order as facts (a JSON object) and must answer one JSON object:
``{"verdict": "approve" | "review" | "reject", "reasons": [...], "order_id": ..., "order_total": ...}``.
The answer is parsed against that schema (pydantic); restating the order's id and total lets us
catch a model that answers about facts it made up: an answer naming another order or another
amount contradicts the order, and is never acted on, however well formed.
"""

from __future__ import annotations

import json
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from orders.models import Order, OrderItem

SYSTEM_PROMPT = (
    "You review orders for fraud risk before the customer is charged. The user message is one "
    "order as a JSON object: its id, the customer, the lines, the total, and the customer's other "
    "orders counted by state. Answer with one JSON object and nothing else, of this shape: "
    '{"verdict": "approve" | "review" | "reject", "reasons": ["..."], "order_id": <the order id>, '
    '"order_total": "<the order total, exactly as given>"}. '
    "approve: nothing suspicious. review: a person should look before payment. reject: clearly "
    "fraudulent. Give one to five short reasons, each about this order's facts."
)


class AskOutcome(StrEnum):
    """How one ask of one model ended: only DECIDED is ever acted on."""

    DECIDED = "decided"  # a valid verdict about this order
    MALFORMED = "malformed"  # not a JSON object
    OFF_SCHEMA = "off_schema"  # JSON, not the verdict's shape
    CONTRADICTS = "contradicts"  # a valid verdict naming another order or amount
    TIMEOUT = "timeout"  # the client's timeout cut the call
    UNAVAILABLE = "unavailable"  # an error status or no connection
    BREAKER_OPEN = "breaker_open"  # not asked: the model's circuit breaker is open


Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]


class Verdict(BaseModel):
    """The answer's schema. Extra keys are ignored: models like to add a confidence."""

    model_config = ConfigDict(extra="ignore")

    verdict: Literal["approve", "review", "reject"]
    reasons: list[Reason] = Field(min_length=1, max_length=5)
    order_id: int
    order_total: Decimal


class InvalidAnswer(Exception):
    """An answer that must not be acted on, and why."""

    def __init__(self, outcome: AskOutcome, detail: str):
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


def order_facts(order: Order, items: list[OrderItem], history: dict[str, dict]) -> dict:
    """The order as the model sees it (amounts as strings: exact, as the answer must restate them)."""
    return {
        "order_id": order.pk,
        "customer": order.customer,
        "currency": order.currency,
        "total": str(order.total),
        "lines": [
            {
                "sku": item.product.sku,
                "name": item.product.name,
                "quantity": item.quantity,
                "unit_price": str(item.unit_price),
            }
            for item in items
        ],
        "history": {state: {"orders": row["orders"], "total": str(row["total"])} for state, row in history.items()},
    }


def messages_for(facts: dict) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": json.dumps(facts, sort_keys=True)},
    ]


def parse_verdict(text: str, order: Order) -> Verdict:
    """The model's verdict on this order, or InvalidAnswer saying why it cannot be acted on."""
    body = _without_code_fence(text)
    try:
        raw = json.loads(body)
    except ValueError as error:
        raise InvalidAnswer(AskOutcome.MALFORMED, f"not JSON ({error}): {text[:80]!r}") from None
    if not isinstance(raw, dict):
        raise InvalidAnswer(AskOutcome.MALFORMED, f"not a JSON object: {text[:80]!r}")
    try:
        verdict = Verdict.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in error.errors()[:3])
        raise InvalidAnswer(AskOutcome.OFF_SCHEMA, problems) from None
    if verdict.order_id != order.pk:
        raise InvalidAnswer(AskOutcome.CONTRADICTS, f"names order {verdict.order_id}, not {order.pk}")
    if verdict.order_total != order.total:
        raise InvalidAnswer(AskOutcome.CONTRADICTS, f"names a total of {verdict.order_total}, not {order.total}")
    return verdict


def _without_code_fence(text: str) -> str:
    """Models often wrap JSON in a Markdown code fence; the JSON inside is what they meant."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        first_line, _, rest = stripped.partition("\n")
        return rest if first_line.strip().isalpha() or not first_line.strip() else stripped
    return stripped
