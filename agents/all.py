"""Importing this module registers every agent and the routing table with the kernel."""

from agents import fulfillment, inventory, notification, order, payment
from orchestration.budgets import BUDGET_EVENT
from orchestration.registry import subscribe

for event in order.HEARS:
    subscribe(event, order.NAME, "advance")

subscribe(BUDGET_EVENT, order.NAME, "stop_for_budget")

subscribe("order.placed", inventory.NAME, "reserve_stock")
subscribe("order.payment_confirmed", inventory.NAME, "commit_stock")
subscribe("order.cancelled", inventory.NAME, "release_stock")
subscribe("order.payment_failed", inventory.NAME, "release_stock")

subscribe("order.payment_requested", payment.NAME, "charge")
# Compensation: an order that ends unpaid gets back what the gateway took, and its parcel, if
# one was booked, is voided. Both ask the outside service, since a call that timed out or a task
# that died leaves an effect our own rows never saw.
subscribe("order.cancelled", payment.NAME, "refund")
subscribe("order.payment_failed", payment.NAME, "refund")

subscribe("order.fulfillment_requested", fulfillment.NAME, "ship")
subscribe("order.cancelled", fulfillment.NAME, "void_parcel")

for event in notification.KIND_BY_EVENT:
    subscribe(event, notification.NAME, "notify")

AGENTS = (
    order.definition,
    inventory.definition,
    payment.definition,
    fulfillment.definition,
    notification.definition,
)
