"""What metered calls (language models) spent, added up: by model, by agent, by workflow. The
admin, the order page and the load reports read these; /metrics reads the same rows."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from orchestration.models import UsageRecord


@dataclass
class Total:
    """Calls, tokens and cost of one group of usage records (billed tokens and cost only)."""

    name: str
    calls: int
    unbilled: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def totals(records: QuerySet[UsageRecord], by: str) -> list[Total]:
    """One GROUP BY: the records' calls, billed tokens and cost per value of ``by``."""
    billed = Q(billed=True)
    rows = (
        records.order_by()
        .values(by)
        .annotate(
            calls=Count("id"),
            unbilled=Count("id", filter=~billed),
            prompt=Sum("prompt_tokens", filter=billed, default=0),
            completion=Sum("completion_tokens", filter=billed, default=0),
            spent=Sum("cost", filter=billed, default=Decimal(0)),
        )
        .order_by(by)
    )
    return [
        Total(row[by], row["calls"], row["unbilled"], row["prompt"], row["completion"], row["spent"]) for row in rows
    ]
