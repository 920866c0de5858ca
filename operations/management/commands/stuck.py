"""`manage.py stuck`: unfinished orders nobody is moving, and tasks that keep failing or lost their worker."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from orchestration.observability.stuck import stuck_task_attempts, stuck_tasks
from orders.stuck import stuck_order_after_seconds, stuck_orders


class Command(BaseCommand):
    help = "List stuck orders (no progress for longer than expected) and stuck tasks."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--after", type=int, help="seconds without progress that make an order stuck (STUCK_ORDER_AFTER_SECONDS)"
        )
        parser.add_argument(
            "--attempts", type=int, help="attempts after which a live task is stuck (STUCK_TASK_ATTEMPTS)"
        )
        parser.add_argument("--limit", type=int, default=200, help="list at most this many of each (default 200)")

    def handle(self, *args, after: int | None, attempts: int | None, limit: int, **options) -> None:
        now = timezone.now()
        after = stuck_order_after_seconds() if after is None else after
        attempts = attempts or stuck_task_attempts()
        orders = list(stuck_orders(now, after)[:limit])
        tasks = stuck_tasks(now, attempts, limit=limit)
        if not orders and not tasks:
            self.stdout.write(f"Nothing is stuck (orders quiet for over {after}s, tasks past {attempts} attempts).")
            return
        self.stdout.write(f"Stuck orders, no progress for over {after}s: {len(orders)}")
        for order in orders:
            quiet = (now - order.updated_at).total_seconds()
            self.stdout.write(
                f"  order {order.pk} [{order.state}] quiet for {quiet:.0f}s, "
                f"correlation {order.correlation_id} (manage.py trace {order.pk})"
            )
        self.stdout.write(f"Stuck tasks, live after {attempts} attempts or claimed past their lease: {len(tasks)}")
        for stuck in tasks:
            self.stdout.write(f"  {stuck.describe(now)}")
