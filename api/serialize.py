"""Orders as the API shows them: plain JSON, money as decimal strings."""

from __future__ import annotations

from api.models import ApiClient
from api.schemas import OrderOut, OrderSummary
from orders.models import Order, OrderTransition

CLIENT_ACTOR_PREFIX = "api client "
OPERATOR = "operator"


def client_actor(client: ApiClient) -> str:
    """How a change a client made is recorded in the order's audit trail."""
    return f"{CLIENT_ACTOR_PREFIX}{client.name}"


def shown_actor(change: OrderTransition) -> str:
    """Who made a change, as the API shows it: the agent, the calling client, or "operator":
    an operator's username stays in the audit trail, never leaves through the API."""
    if change.agent:
        return change.agent
    if change.actor.startswith(CLIENT_ACTOR_PREFIX):
        return change.actor
    return OPERATOR if change.actor else ""


def summary_fields(order: Order) -> dict:
    return {
        "id": order.pk,
        "state": order.state,
        "customer": order.customer,
        "total": str(order.total),
        "currency": order.currency,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def order_summary(order: Order) -> dict:
    return OrderSummary.model_validate(summary_fields(order)).model_dump(mode="json")


def order_detail(order: Order) -> dict:
    """State, lines, totals and the whole history, as JSON (it is also stored for replays)."""
    items = [
        {
            "sku": item.product.sku,
            "name": item.product.name,
            "quantity": item.quantity,
            "unit_price": str(item.unit_price),
            "line_total": str(item.unit_price * item.quantity),
        }
        for item in order.items.select_related("product").order_by("pk")
    ]
    history = [
        {
            "from_state": change.from_state,
            "to_state": change.to_state,
            "event": change.event,
            "at": change.created_at,
            "by": shown_actor(change),
            "detail": change.detail,
        }
        for change in order.transitions.order_by("created_at", "pk")
    ]
    detail = {
        **summary_fields(order),
        "reason": order.reason,
        "correlation_id": order.correlation_id,
        "finished_at": order.finished_at,
        "items": items,
        "history": history,
    }
    return OrderOut.model_validate(detail).model_dump(mode="json")
