"""The order domain's errors; each names the order, field or state involved."""


class OrderError(Exception):
    """Base of the domain's errors."""


class InvalidOrder(OrderError):
    """The order as asked cannot be accepted; ``field`` names the culprit."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class IdempotencyKeyReused(OrderError):
    """The idempotency key was used before for a different order."""


class IllegalTransition(OrderError):
    def __init__(self, order_id: int, state: str, event: str, reason: str = ""):
        detail = f" ({reason})" if reason else ""
        super().__init__(f"order {order_id} in state {state} cannot take event '{event}'{detail}")
        self.order_id = order_id
        self.state = state
        self.event = event


class OutOfStock(OrderError):
    def __init__(self, sku: str, wanted: int):
        super().__init__(f"product {sku} has fewer than {wanted} units available")
        self.sku = sku
        self.wanted = wanted
