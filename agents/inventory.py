"""InventoryAgent: holds stock for orders, and gives it back."""

from __future__ import annotations

from orchestration.registry import AgentDefinition, Operation, register
from orchestration.work.context import TaskContext
from orders import actions
from orders.errors import OutOfStock

NAME = "inventory"


def reserve_stock(context: TaskContext) -> dict:
    order_id = context.payload["order_id"]
    try:
        lines = actions.reserve_stock(order_id, context.held)
    except OutOfStock as shortage:
        context.emit("inventory.out_of_stock", {"order_id": order_id, "reason": str(shortage)})
        return {"reserved": False, "sku": shortage.sku}
    if not lines:
        return {"reserved": False, "skipped": "the order no longer waits for stock"}
    context.emit("inventory.reserved", {"order_id": order_id})
    return {"reserved": True, "lines": lines}


def commit_stock(context: TaskContext) -> dict:
    return {"committed": actions.commit_stock(context.payload["order_id"])}


def release_stock(context: TaskContext) -> dict:
    return {"released": actions.release_stock(context.payload["order_id"])}


def hold_for_review(context: TaskContext) -> dict:
    return {"extended": actions.hold_for_review(context.payload["order_id"], context.held)}


def expire_reservation(context: TaskContext) -> dict:
    order_id = context.payload["order_id"]
    expired = actions.expire_reservations(order_id, context.held)
    if expired:
        context.emit("inventory.expired", {"order_id": order_id, "reason": "reservation expired before payment"})
    return {"expired": expired}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Keeps each order's hold on stock in step with its fate.",
        operations=(
            # A reservation that fails for good (a bug, or its attempts spent) ends the order
            # cancelled, as running out of stock does, instead of leaving it CREATED.
            Operation("reserve_stock", reserve_stock, dead_event="inventory.failed"),
            # Outside the budget, like a compensation: it books a sale the charge already made,
            # so an order stopped after it shipped still has its stock counted as sold. Inline:
            # in the transaction that confirms the payment, so the stock is sold the moment the
            # money is, and the order pays for no task, claim and commit of its own to book it.
            Operation("commit_stock", commit_stock, compensation=True, inline=True),
            Operation("release_stock", release_stock, compensation=True),
            Operation("expire_reservation", expire_reservation),
            # Inline: in the transaction that puts the order in review, so the reservation expiry
            # cannot slip in between and cancel it under an operator's eyes.
            Operation("hold_for_review", hold_for_review, inline=True),
        ),
        emits=frozenset({"inventory.reserved", "inventory.out_of_stock", "inventory.failed", "inventory.expired"}),
        writes=frozenset({"orders.Product", "orders.Reservation"}),
        must_not=("change an order's state", "call an outside service"),
    )
)
