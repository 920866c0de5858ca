"""Row ids handed out in blocks, so a transaction can name the rows it is about to write.

An inline step's audit rows name its task before the task row exists, and an event's
subscribers carry the event's id in their idempotency key: with ids known in advance, all
of a completion's rows (events, subscriber tasks, inline steps and their spans) go to the
database in one statement. One `nextval` round trip serves a block of ids per process;
ids drawn and never used leave gaps, which is all a sequence promises anyway.
"""

from __future__ import annotations

import os
import threading

from django.db import connection

from orchestration.models import AgentTask, Event

BLOCK = 64


class IdBlock:
    """The next ids of one table's sequence, drawn BLOCK at a time, per process."""

    def __init__(self, table: str):
        self.table = table
        self._ids: list[int] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def take(self, count: int = 1) -> list[int]:
        with self._lock:
            if self._pid != os.getpid():  # a forked child must not reuse its parent's ids
                self._ids, self._pid = [], os.getpid()
            if len(self._ids) < count:
                self._ids += self._draw(max(BLOCK, count - len(self._ids)))
            taken, self._ids = self._ids[:count], self._ids[count:]
            return taken

    def ensure(self, count: int) -> None:
        """Draw now if fewer than ``count`` ids are cached, so a section counted or timed
        afterwards draws none."""
        with self._lock:
            if self._pid != os.getpid():
                self._ids, self._pid = [], os.getpid()
            if len(self._ids) < count:
                self._ids += self._draw(max(BLOCK, count - len(self._ids)))

    def _draw(self, count: int) -> list[int]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", [self.table, count]
            )
            return [row[0] for row in cursor.fetchall()]


task_ids = IdBlock(AgentTask._meta.db_table)
event_ids = IdBlock(Event._meta.db_table)
