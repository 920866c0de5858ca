"""The simulated chat-completions endpoint: an OpenAI-compatible HTTP server that plays the
language model when MODEL_BASE_URL is unset (the demo, the tests, the load runs).

Why a real HTTP server, and why in-process: the risk agent asks its models through the openai
SDK, which speaks HTTP, so the simulation answers HTTP and the code under test is the code that
runs against a real endpoint (timeouts, status codes, headers and all). Each process that asks
starts its own server on a loopback port, on daemon threads, the first time it asks (so after a
prefork worker has forked): nothing to start, stop or find, and nothing left behind. What the
processes must share is shared as the other simulated services share it: the ledger of billed
calls in the database (ModelCall, written on the service's own connections, never the caller's
transaction) and the behaviour in Redis (configure_model), so a test or a load run sets it for
the whole fleet. The standard library's ThreadingHTTPServer is enough for a loopback simulation;
it is never a production server here.

The ledger works like a provider's idempotency support: a request with an Idempotency-Key the
ledger holds gets the stored completion back, with `Idempotent-Replayed: true`, and is not billed
again. The completion is billed once made, even when the caller gave up waiting (a timeout).

Its judgement is a stand-in: it approves, unless the customer's address carries a tag. With
SIMULATED_FAILURES on (as for the other services), tags in the customer's address steer it:
  +fraud        it answers reject          +suspect      it answers review
  +malformed    every answer is not JSON   +offschema    every answer is JSON of the wrong shape
  +wrongamount  every answer names a total that is not the order's
  +modelcrash   the first call for a key is billed, then the calling process dies
and configure_model() sets latency, token counts and rates of unavailability and of each bad
answer, for every model ("*") or one.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
import uuid
from dataclasses import dataclass, fields
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.db.models import F

from agents.outside.models import ModelCall
from agents.outside.world import failures_on, tags
from orchestration.redis_client import redis_client
from orchestration.work.autonomous import run_autonomously

logger = logging.getLogger(__name__)

ALL_MODELS = "*"
CHARACTERS_PER_TOKEN = 4  # the usual rule of thumb for English text
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class ModelBehaviour:
    latency_ms: float = 0
    unavailable_rate: float = 0  # answered 503, nothing made or billed
    malformed_rate: float = 0  # text that is not JSON
    off_schema_rate: float = 0  # JSON without the verdict's shape
    wrong_amount_rate: float = 0  # a verdict that names another total than the order's
    prompt_tokens: float = 0  # 0: counted from the prompt
    completion_tokens: float = 0  # 0: counted from the answer


def configure_model(model: str = ALL_MODELS, **values: float) -> None:
    """Set how a model behaves for every process (``configure_model("sim-large", unavailable_rate=1)``);
    no values resets it. A model's own values win over those set for "*". Only processes with
    SIMULATED_FAILURES on obey."""
    unknown = set(values) - {field.name for field in fields(ModelBehaviour)}
    if unknown:
        raise ValueError(f"unknown model settings {sorted(unknown)}")
    key = f"outside:model:{model}"
    redis_client().delete(key)
    if values:
        redis_client().hset(key, mapping={name: float(value) for name, value in values.items()})


def reset_models() -> None:
    """Every model back to its defaults (the fixtures between tests)."""
    for key in redis_client().scan_iter("outside:model:*"):
        redis_client().delete(key)


def behaviour(model: str) -> ModelBehaviour:
    if not failures_on():
        return ModelBehaviour()
    values: dict[str, float] = {}
    for name in (ALL_MODELS, model):
        raw = redis_client().hgetall(f"outside:model:{name}")
        values |= {str(field): float(value) for field, value in raw.items()}
    return ModelBehaviour(**values)


# --- The server, one per process ---------------------------------------------------------

_server: ThreadingHTTPServer | None = None
_server_pid: int | None = None
_lock = threading.Lock()


def base_url() -> str:
    """The endpoint of this process's simulated server, started on first use."""
    global _server, _server_pid
    with _lock:
        if _server is None or _server_pid != os.getpid():
            _server = ThreadingHTTPServer(("127.0.0.1", 0), CompletionsHandler)
            _server.daemon_threads = True
            _server_pid = os.getpid()
            threading.Thread(target=_server.serve_forever, name="simulated-model", daemon=True).start()
        port = _server.server_address[1]
    return f"http://127.0.0.1:{port}/v1"


class CompletionsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects

    def do_POST(self) -> None:
        if self.path.rstrip("/") not in {"/v1/chat/completions", "/chat/completions"}:
            self._send(404, {"error": {"message": f"no such endpoint {self.path}", "type": "invalid_request_error"}})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            model, messages = str(body["model"]), list(body["messages"])
        except (ValueError, KeyError, TypeError) as error:
            self._send(400, {"error": {"message": f"bad request: {error}", "type": "invalid_request_error"}})
            return
        status, payload, replayed = complete(model, messages, self.headers.get("Idempotency-Key") or "")
        self._send(status, payload, {REPLAYED_HEADER: "true"} if replayed else {})

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the caller gave up waiting: billed anyway
            logger.debug("the caller of the simulated model left before its answer")

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("simulated model: " + format, *args)


# --- One completion ------------------------------------------------------------------------


def complete(model: str, messages: list[dict], key: str) -> tuple[int, dict, bool]:
    """(HTTP status, body, replayed) for one chat-completions request."""
    current = behaviour(model)
    if current.latency_ms:
        time.sleep(current.latency_ms / 1000)
    if random.random() < current.unavailable_rate:
        return 503, {"error": {"message": f"{model} is overloaded (simulated)", "type": "server_error"}}, False
    facts = _order_facts(messages)
    asked = tags(str(facts.get("customer", "")))
    answer = _answer(facts, asked, current)
    prompt_text = "".join(str(message.get("content", "")) for message in messages)
    call, created = run_autonomously(
        ModelCall.objects.get_or_create,
        idempotency_key=key or f"unkeyed:{uuid.uuid4().hex}",
        defaults={
            "model": model,
            "order_ref": str(facts.get("order_id", ""))[:64],
            "answer": answer,
            "prompt_tokens": int(current.prompt_tokens) or _tokens(prompt_text),
            "completion_tokens": int(current.completion_tokens) or _tokens(answer),
        },
    )
    if not created:
        run_autonomously(_count_replay, call.pk)
    elif "modelcrash" in asked:
        os._exit(17)  # billed, and the caller dies before it hears the answer
    return 200, _completion(call), not created


def _count_replay(call_id: int) -> None:
    ModelCall.objects.filter(pk=call_id).update(replays=F("replays") + 1)


def _tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / CHARACTERS_PER_TOKEN))


def _order_facts(messages: list[dict]) -> dict:
    """The order the agent described: the last user message, which is the order as JSON."""
    for message in reversed(messages):
        if message.get("role") == "user":
            try:
                facts = json.loads(str(message.get("content", "")))
            except ValueError:
                return {}
            return facts if isinstance(facts, dict) else {}
    return {}


def _answer(facts: dict, asked: frozenset[str], current: ModelBehaviour) -> str:
    """What the simulated model says about the order, flawed as asked."""
    if "malformed" in asked or random.random() < current.malformed_rate:
        return "Looking at this order, I would say approve, because the customer seems"
    if "offschema" in asked or random.random() < current.off_schema_rate:
        return json.dumps({"decision": "fine", "confidence": 0.9})
    verdict, reasons = _judge(facts, asked)
    total = _decimal(facts.get("total"))
    if "wrongamount" in asked or random.random() < current.wrong_amount_rate:
        total = total * 10 + 1  # a figure it made up
    return json.dumps(
        {"verdict": verdict, "reasons": reasons, "order_id": facts.get("order_id"), "order_total": str(total)}
    )


def _judge(facts: dict, asked: frozenset[str]) -> tuple[str, list[str]]:
    total = f"{facts.get('total', '?')} {facts.get('currency', '')}".strip()
    history = facts.get("history") or {}
    completed = (history.get("COMPLETED") or {}).get("orders", 0)
    known = f"{completed} completed order{'s' if completed != 1 else ''} before" if completed else "no order before"
    if "fraud" in asked:
        return "reject", [f"the address looks made up for a {total} order", f"the customer has {known}"]
    if "suspect" in asked:
        return "review", [f"an unusual basket for {total}", f"the customer has {known}"]
    return "approve", [f"the total of {total} matches the lines", f"the customer has {known}"]


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _completion(call: ModelCall) -> dict:
    return {
        "id": f"chatcmpl-{call.pk}",
        "object": "chat.completion",
        "created": int(call.created_at.timestamp()),
        "model": call.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": call.answer}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "total_tokens": call.prompt_tokens + call.completion_tokens,
        },
    }
