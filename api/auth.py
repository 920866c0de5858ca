"""Per-client bearer tokens: looked up by their hash, refused (401) when unknown or inactive;
then the client's own rate limit (429), so one busy client cannot crowd out the others."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer
from redis.exceptions import RedisError

from api.errors import ApiError
from api.models import ApiClient, hash_token
from orchestration.limits.buckets import TokenBucket

logger = logging.getLogger(__name__)

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
        client = client_for_token(token)
        if client is not None:
            admit(client)
        return client


def admit(client: ApiClient) -> None:
    """Take one request from the client's token bucket (the kernel's, shared by every web
    process through Redis), or refuse with 429 and Retry-After. A Redis outage lets requests
    through: the limit is about fairness, and the database still guards every order."""
    rate, burst = settings.API_RATE_PER_SECOND, settings.API_RATE_BURST
    if rate <= 0:
        return
    try:
        wait = TokenBucket(f"api-client:{client.pk}", rate, burst).take()
    except RedisError:
        logger.warning("API rate limit not checked: Redis is unreachable", exc_info=True)
        return
    if wait:
        raise ApiError(
            429,
            "rate_limited",
            f"this client is over its rate limit of {rate:g} requests per second (burst {burst}, "
            "API_RATE_PER_SECOND and API_RATE_BURST); retry after Retry-After seconds",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
