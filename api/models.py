"""The API's rows: the clients that may call it, and which client placed which order
under which idempotency key (with the first response, replayed to retries)."""

from __future__ import annotations

import hashlib
import secrets

from django.db import models
from django.utils import timezone

from orders.models import Order

TOKEN_PREFIX = "oc_"
VISIBLE_CHARS = 11  # "oc_" and 8 random characters: enough to tell tokens apart in the admin


def hash_token(token: str) -> str:
    # A token is 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class ApiClient(models.Model):
    """A caller of the HTTP API; its bearer token is kept only as a hash."""

    name = models.CharField(max_length=100, unique=True)
    token_prefix = models.CharField(max_length=VISIBLE_CHARS, editable=False, help_text="The token's visible start.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    is_active = models.BooleanField(default=True, help_text="Inactive clients get 401.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API client"
        indexes = [models.Index(fields=["token_prefix"], name="apiclient_token_prefix")]  # the admin's search

    def __str__(self) -> str:
        return f"{self.name} ({self.token_prefix}...)"

    def issue_token(self) -> str:
        """Give the client a new token (replacing any old one) and return it: the only time it is seen."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        self.token_prefix = token[:VISIBLE_CHARS]
        self.token_hash = hash_token(token)
        return token


class ClientOrder(models.Model):
    """An order placed through the API: by which client, under which key, and the first
    response, which a retry with the same key and body gets again."""

    client = models.ForeignKey(ApiClient, on_delete=models.PROTECT, related_name="orders")
    idempotency_key = models.CharField(max_length=200)
    request_fingerprint = models.CharField(max_length=64)
    # Null only inside the placing transaction: a committed row always has its order.
    order = models.OneToOneField(Order, on_delete=models.CASCADE, null=True, related_name="api_placement")
    response_status = models.PositiveSmallIntegerField(null=True)
    # The exact bytes of the first response, so a replay is the same response to the byte.
    response_body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Decides between concurrent requests with one key: the second insert waits for
            # the first transaction, then fails, and replays what the first one stored.
            models.UniqueConstraint(fields=["client", "idempotency_key"], name="one_order_per_client_key"),
        ]
        indexes = [models.Index(fields=["client", "order"], name="client_orders_newest")]

    def __str__(self) -> str:
        return f"order {self.order_id} by client {self.client_id} under {self.idempotency_key!r}"
