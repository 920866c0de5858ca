"""The routing table: which agent operations hear which events. Importing this module
registers every agent and the table with the kernel (settings.AGENT_MODULES).

It is the README's table, one row per (event, subscriber). Routing happens in the emitting
transaction (an outbox): a row here is a task created with the event, never a call.
"""

from agents import fulfillment, inventory, notification, order, payment, risk
from orchestration.limits.budgets import BUDGET_EVENT
from orchestration.registry import subscribe

ROUTES: tuple[tuple[str, str, str], ...] = (
    # event                          agent           operation
    ("order.placed",                 "inventory",    "reserve_stock"),
    # What the coordinator hears: every event that moves an order.
    ("inventory.reserved",           "order",        "advance"),
    ("inventory.out_of_stock",       "order",        "advance"),
    ("inventory.failed",             "order",        "advance"),
    ("inventory.expired",            "order",        "advance"),
    ("risk.approved",                "order",        "advance"),
    ("risk.rejected",                "order",        "advance"),
    ("risk.review",                  "order",        "advance"),
    ("risk.failed",                  "order",        "advance"),
    ("payment.charged",              "order",        "advance"),
    ("payment.declined",             "order",        "advance"),
    ("payment.failed",               "order",        "advance"),
    ("fulfillment.shipped",          "order",        "advance"),
    ("fulfillment.failed",           "order",        "advance"),
    # Orders the screening rule picks are judged before payment; one sent to an operator keeps
    # its stock held until its review deadline has passed.
    ("order.screening_requested",    "risk",         "screen"),
    ("order.review_requested",       "inventory",    "hold_for_review"),
    ("order.payment_requested",      "payment",      "charge"),
    ("order.payment_confirmed",      "inventory",    "commit_stock"),
    ("order.payment_confirmed",      "notification", "notify"),
    ("order.fulfillment_requested",  "fulfillment",  "ship"),
    ("order.shipped",                "notification", "notify"),
    # Compensation: an order that ends unpaid gives back its stock and whatever the gateway
    # took, and voids a booked parcel. Refund and void ask the outside service, since a call
    # that timed out or a task that died leaves an effect our own rows never saw.
    ("order.payment_failed",         "inventory",    "release_stock"),
    ("order.payment_failed",         "payment",      "refund"),
    ("order.payment_failed",         "notification", "notify"),
    ("order.cancelled",              "inventory",    "release_stock"),
    ("order.cancelled",              "payment",      "refund"),
    ("order.cancelled",              "fulfillment",  "void_parcel"),
    ("order.cancelled",              "notification", "notify"),
    # An outside effect that landed after its order ended (the call was in flight meanwhile).
    ("payment.charged_late",         "payment",      "refund"),
    ("fulfillment.booked_late",      "fulfillment",  "void_parcel"),
    # From the kernel: the workflow's budget is spent.
    (BUDGET_EVENT,                   "order",        "stop_for_budget"),
)  # fmt: skip

AGENTS = (
    order.definition,
    inventory.definition,
    payment.definition,
    fulfillment.definition,
    notification.definition,
    risk.definition,
)

for event, agent, operation in ROUTES:
    subscribe(event, agent, operation)
