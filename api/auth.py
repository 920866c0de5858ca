"""Per-client bearer tokens: looked up by their hash, refused (401) when unknown or inactive."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from api.models import ApiClient, hash_token

# last_used_at is for operators ("is this client still calling?"), so a minute's precision
# is enough, and most requests write nothing.
LAST_USED_PRECISION = timedelta(minutes=1)


def client_for_token(token: str) -> ApiClient | None:
    """The active client holding this token, or None."""
    client = ApiClient.objects.filter(token_hash=hash_token(token), is_active=True).first()
    if client is not None:
        now = timezone.now()
        ApiClient.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_PRECISION), pk=client.pk
        ).update(last_used_at=now)
    return client


class ClientToken(HttpBearer):
    """`Authorization: Bearer <token>`; sets request.auth to the ApiClient."""

    def __call__(self, request: HttpRequest) -> ApiClient | None:
        # Ninja's own version logs a malformed header, token and all, in DEBUG: not here.
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return self.authenticate(request, token.strip())

    def authenticate(self, request: HttpRequest, token: str) -> ApiClient | None:
        return client_for_token(token)
