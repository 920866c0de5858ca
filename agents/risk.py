"""RiskAgent: judges the fraud risk of each order the screening rule picks, before payment.

Its `call` asks a language model (agents.chat) with no transaction open, heartbeating while it
waits, and goes down a fallback chain: the primary model (MODEL_NAME), then the fallback model
(MODEL_FALLBACK_NAME), then a deterministic rule. A model is left for the next on a timeout, on
an open circuit breaker (one per model), or when its asks run out (MODEL_MAX_ASKS): an answer
that is malformed, off the schema or contradicts the order (agents.verdicts) is never acted on,
and is asked again. The rule sends the order to an operator. Each ask carries an idempotency key
of its own, the same on every attempt of the task, so a retry after a crash is answered from the
endpoint's record instead of being billed again; every call's tokens and price are recorded on
the attempt (TaskContext.add_usage), and the workflow's token and money caps are checked before
each call.

Its handler records the verdict (RiskAssessment) against the order as it is then, and emits it
for the coordinator: `risk.approved` (on to payment), `risk.rejected` (cancelled, compensated)
or `risk.review` (an operator decides). The event's reason, which becomes the audit row's
detail and so the trace's, says which model or the rule decided, and what came before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.conf import settings

from agents import chat
from agents.effects import Effect, outside_key
from agents.verdicts import AskOutcome, InvalidAnswer, Verdict, messages_for, order_facts, parse_verdict
from orchestration.errors import RetryableError
from orchestration.registry import AgentDefinition, Operation, register
from orchestration.work.context import TaskContext
from orders import actions
from orders.models import Order
from orders.states import OrderState, RiskSource, RiskVerdict

NAME = "risk"
VERDICT_EVENTS = {
    RiskVerdict.APPROVE: "risk.approved",
    RiskVerdict.REVIEW: "risk.review",
    RiskVerdict.REJECT: "risk.rejected",
}


@dataclass(frozen=True)
class Ask:
    """One step of the chain: which model, which ask, how it ended."""

    model: str
    number: int
    outcome: AskOutcome
    detail: str = ""

    def as_json(self) -> dict:
        return {"model": self.model, "ask": self.number, "outcome": str(self.outcome), "detail": self.detail}


@dataclass
class Review:
    """What the chain came to (or why nothing was asked)."""

    verdict: str = ""
    reasons: list[str] = field(default_factory=list)
    decided_by: str = ""  # RiskSource
    model: str = ""
    chain: list[Ask] = field(default_factory=list)
    skipped: str = ""

    def summary(self) -> str:
        """For the audit row and the trace: who decided what, why, and after which failures."""
        who = f"{self.decided_by} model {self.model}" if self.model else "the rule"
        text = f"{self.verdict} by {who}: {'; '.join(self.reasons)}"
        failed = [f"{ask.model} ask {ask.number} {ask.outcome}" for ask in self.chain if ask.outcome != "decided"]
        return f"{text} (after {', '.join(failed)})" if failed else text


def models() -> list[tuple[str, str]]:
    """The fallback chain's models: (RiskSource, name)."""
    chain = [(RiskSource.PRIMARY, settings.MODEL_NAME)]
    if settings.MODEL_FALLBACK_NAME != "none":
        chain.append((RiskSource.FALLBACK, settings.MODEL_FALLBACK_NAME))
    return chain


def ask_models(context: TaskContext) -> Review:
    """Go down the chain until a model gives a verdict that holds, or the rule decides."""
    order, items, history = actions.order_to_screen(context.payload["order_id"])
    if order.state != OrderState.SCREENING:
        return Review(skipped=order.state)  # decided, cancelled or expired before we got here
    messages = messages_for(order_facts(order, items, history))
    review = Review()
    for source, model in models():
        verdict = ask_model(context, order, model, messages, review.chain)
        if verdict is not None:
            review.verdict, review.reasons = verdict.verdict, list(verdict.reasons)
            review.decided_by, review.model = source, model
            return review
    review.verdict, review.decided_by = RiskVerdict.REVIEW, RiskSource.RULE
    review.reasons = ["no model gave a verdict that holds, so an operator decides"]
    return review


def ask_model(context: TaskContext, order: Order, model: str, messages: list[dict], chain: list[Ask]) -> Verdict | None:
    """Ask one model up to MODEL_MAX_ASKS times; its verdict, or None to go on down the chain."""
    breaker = chat.breaker(model)
    for number in range(1, settings.MODEL_MAX_ASKS + 1):
        spent = context.over_spend_caps()
        if spent:
            # The kernel stops the workflow at its next claim, and the order is compensated.
            raise RetryableError(f"{spent}: no more model calls for order {order.pk}")
        allowed, state, _ = breaker.allow()
        if not allowed:
            chain.append(Ask(model, number, AskOutcome.BREAKER_OPEN, f"circuit breaker {state}"))
            return None
        key = f"{outside_key(order.pk, Effect.RISK)}:{model}:{number}"
        try:
            with context.outside():
                reply = chat.ask(model, messages, key=key)
        except chat.ModelUnavailable as error:
            breaker.record(ok=False)
            outcome = AskOutcome.TIMEOUT if isinstance(error, chat.ModelTimedOut) else AskOutcome.UNAVAILABLE
            chain.append(Ask(model, number, outcome, str(error)))
            if outcome == AskOutcome.TIMEOUT:
                return None  # a model that hangs is not asked to hang again
            continue
        context.add_usage(
            model,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            cost=chat.price(model, reply.prompt_tokens, reply.completion_tokens),
            billed=not reply.replayed,
            key=key,
        )
        try:
            verdict = parse_verdict(reply.text, order)
        except InvalidAnswer as invalid:
            # A model whose answers cannot be used is as good as down: its breaker counts them.
            breaker.record(ok=False)
            chain.append(Ask(model, number, invalid.outcome, invalid.detail))
            continue
        breaker.record(ok=True)
        chain.append(Ask(model, number, AskOutcome.DECIDED, verdict.verdict))
        return verdict
    return None


def screen(context: TaskContext) -> dict:
    """Record the verdict against the order as it is now, and tell the coordinator."""
    review: Review = context.answer
    if review.skipped:
        return {"skipped": review.skipped}
    order = actions.lock_order(context.payload["order_id"], context.held)
    if order.state != OrderState.SCREENING:
        return {"ignored": order.state}  # cancelled (or expired) while the models thought
    chain = [ask.as_json() for ask in review.chain]
    actions.record_risk_assessment(
        order,
        verdict=review.verdict,
        reasons=review.reasons,
        decided_by=review.decided_by,
        model=review.model,
        chain=chain,
    )
    context.emit(VERDICT_EVENTS[RiskVerdict(review.verdict)], {"order_id": order.pk, "reason": review.summary()})
    return {"verdict": review.verdict, "decided_by": review.decided_by, "model": review.model, "chain": chain}


definition = register(
    AgentDefinition(
        name=NAME,
        responsibility="Judges the fraud risk of each screened order before payment.",
        operations=(Operation("screen", screen, call=ask_models, dead_event="risk.failed", max_attempts=5),),
        emits=frozenset({*VERDICT_EVENTS.values(), "risk.failed"}),
        writes=frozenset({"orders.RiskAssessment"}),
        must_not=("change an order's state", "act on an answer that fails validation"),
    )
)
