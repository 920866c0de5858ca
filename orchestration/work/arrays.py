"""Lists passed to PostgreSQL as array literals, written here instead of by psycopg.

psycopg adapts a Python list in pure Python: it scans the list for its element type, builds a
dumper for it and escapes every element with a regular expression. With a dozen lists in a
statement that took longer than the statement's run on the server (BENCHMARKS.md, lever 20).
The statements on the hot path take rows as one JSON document instead (`json_to_recordset`);
the lists left (agents, operation names) go as the text of an array, one string each,
which the statement casts (``%(agents)s::text[]``)."""

from __future__ import annotations

from collections.abc import Iterable


def text_array(values: Iterable[str]) -> str:
    """'{"a","b"}': every element quoted, so commas, braces, quotes and the word NULL in a
    value stay text."""
    return "{" + ",".join('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values) + "}"
