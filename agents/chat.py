"""Asking a chat-completions model: the openai SDK against MODEL_BASE_URL (any OpenAI-compatible
endpoint), or against this process's simulated endpoint when it is unset.

The SDK's own retries are off: the agent decides what a failure means (ask again, the next
model, the rule), and every ask it makes carries its own idempotency key. Prices come from
MODEL_PRICES, per million tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, cast

from django.conf import settings

from agents.outside import model_server
from orchestration.limits.breakers import CircuitBreaker

if TYPE_CHECKING:  # the SDK is imported on the first ask: about 30 MB a process that never asks
    import openai
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.shared_params import ResponseFormatJSONObject

MILLION = Decimal(1_000_000)
MONEY_PLACES = Decimal("0.000001")  # what a usage record keeps
# JSON mode: OpenAI, vLLM, Ollama and llama.cpp's server all take it (the answer is checked anyway).
JSON_OBJECT: ResponseFormatJSONObject = {"type": "json_object"}


class ModelUnavailable(Exception):
    """The endpoint answered with an error status, or could not be reached: nothing to act on."""


class ModelTimedOut(ModelUnavailable):
    """The client's timeout cut the call (the endpoint may still finish, and bill, it)."""


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    replayed: bool  # answered from the endpoint's idempotency record: not billed this time


_clients: dict[tuple[int, str], openai.OpenAI] = {}


def client() -> openai.OpenAI:
    """One client per process and endpoint (its connection pool does not survive a fork)."""
    import openai

    url = settings.MODEL_BASE_URL or model_server.base_url()
    key = (os.getpid(), url)
    if key not in _clients:
        _clients[key] = openai.OpenAI(
            base_url=url,
            api_key=settings.MODEL_API_KEY or "unused",  # local servers ask for none; the SDK wants one
            max_retries=0,
            timeout=settings.MODEL_TIMEOUT_SECONDS,
        )
    return _clients[key]


def ask(model: str, messages: list[dict[str, str]], *, key: str) -> Reply:
    """One completion, under an idempotency key; ModelTimedOut or ModelUnavailable when none came."""
    import openai

    try:
        raw = client().chat.completions.with_raw_response.create(
            model=model,
            messages=cast("list[ChatCompletionMessageParam]", messages),  # plain dicts of the SDK's shape
            response_format=JSON_OBJECT,
            temperature=0,
            extra_headers={"Idempotency-Key": key},
        )
        completion = raw.parse()
    except openai.APITimeoutError as error:
        raise ModelTimedOut(f"no answer within {settings.MODEL_TIMEOUT_SECONDS:g} s") from error
    except openai.APIStatusError as error:
        raise ModelUnavailable(f"HTTP {error.status_code}: {str(error)[:200]}") from error
    except openai.APIError as error:  # no connection, or a body the SDK could not read
        raise ModelUnavailable(f"{type(error).__name__}: {str(error)[:200]}") from error
    usage = completion.usage
    text = completion.choices[0].message.content if completion.choices else ""
    return Reply(
        text=text or "",
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        replayed=raw.headers.get(model_server.REPLAYED_HEADER, "").lower() == "true",
    )


def price(model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """What the tokens cost, from MODEL_PRICES (per million tokens)."""
    rates = settings.MODEL_PRICES[model]
    cost = (
        prompt_tokens * Decimal(str(rates["prompt"])) + completion_tokens * Decimal(str(rates["completion"]))
    ) / MILLION
    return cost.quantize(MONEY_PLACES)


def breaker(model: str) -> CircuitBreaker:
    """Each model has a circuit breaker of its own, shared by the fleet (GUARD_LIMITS may set
    its policy under "model:<name>")."""
    return CircuitBreaker(f"model:{model}")
