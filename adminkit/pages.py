"""Admin building blocks for big, system-owned tables (domain-free; the domain uses them too).

- LargeTablePaginator never runs COUNT(*) over a whole table: an unfiltered list takes the
  planner's row count from pg_class, a filtered one counts at most EXACT_UP_TO rows and,
  past that, takes the planner's estimate for the query.
- StrictAdmin, under all of them: a search is an exact match on indexed columns (never a
  LIKE scan, never ILIKE, which no plain index serves), and the list takes only the filters
  it declares in its URL (no ?token_hash__startswith= probing what a page does not show).
- ReadOnlyAdmin: the system owns these rows, so nobody adds, edits or deletes them by
  hand; operators act only through named actions, each permission-checked and audited.
- InputFilter: a free-text filter in the sidebar (a correlation id, say).
"""

from __future__ import annotations

import json
from functools import cached_property

from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path, lookup_spawns_duplicates
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import DatabaseError, connections
from django.db.models import Q, QuerySet
from django.utils.html import format_html

EXACT_UP_TO = 10_000
OPERATE_PERMISSION = "orchestration.operate"


def table_estimate(queryset: QuerySet) -> int:
    """The planner's idea of the table's row count; -1 when the table was never analysed."""
    table = queryset.model._meta.db_table
    try:
        with connections[queryset.db].cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
            row = cursor.fetchone()
    except DatabaseError:
        return -1
    return int(row[0]) if row else -1


def query_estimate(queryset: QuerySet) -> int:
    """The planner's estimate of the rows this query returns (EXPLAIN, nothing run)."""
    sql, params = queryset.order_by().query.get_compiler(using=queryset.db).as_sql()
    try:
        with connections[queryset.db].cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
    except DatabaseError:
        return 0
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


class LargeTablePaginator(Paginator):
    """Counts exactly up to EXACT_UP_TO rows, estimates beyond; ``estimated`` says which."""

    exact_up_to = EXACT_UP_TO
    estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        if not queryset.query.where:
            estimate = table_estimate(queryset)
            if estimate > self.exact_up_to:
                self.estimated = True
                return estimate
        # COUNT(*) over a subquery with LIMIT: reads at most exact_up_to + 1 rows.
        bounded = queryset.order_by()[: self.exact_up_to + 1].count()
        if bounded <= self.exact_up_to:
            return bounded
        self.estimated = True
        return max(self.exact_up_to + 1, query_estimate(queryset))


# The URL parameters Django's field filters use: ?status__exact=, ?created_at__gte= and __lt=,
# ?field__isnull=, ?field__isempty=, and ?order__id__exact= for a related field.
FIELD_FILTER_LOOKUPS = ("exact", "isnull", "gte", "lt", "isempty")
DATE_HIERARCHY_LOOKUPS = ("year", "month", "day")


class StrictAdmin(admin.ModelAdmin):
    """Exact searches on "=field" search fields, and URL lookups limited to the declared filters."""

    def get_search_results(self, request, queryset, search_term):
        """The whole term, exactly (case and all), in any "=" search field: each can use its
        index. A term a field cannot hold (letters for an id) is not looked for there."""
        fields = self.get_search_fields(request)
        if not all(name.startswith("=") for name in fields):
            return super().get_search_results(request, queryset, search_term)
        term = search_term.strip()
        if not term or not fields:
            return queryset, False
        match, duplicates = Q(pk__in=[]), False
        for name in (field[1:] for field in fields):
            try:
                value = get_fields_from_path(self.model, name)[-1].to_python(term)
            except ValidationError:
                continue
            match |= Q(**{name: value})
            duplicates = duplicates or lookup_spawns_duplicates(self.opts, name)
        return queryset.filter(match), duplicates

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        return lookup in self.declared_lookups(request)

    def declared_lookups(self, request) -> set[str]:
        """Every URL parameter the list's own filters (and date hierarchy) use."""
        allowed: set[str] = set()
        for item in self.get_list_filter(request) if request is not None else self.list_filter:
            if isinstance(item, type) and issubclass(item, admin.SimpleListFilter):
                allowed.add(item.parameter_name)  # type: ignore[attr-defined]  # set by each filter class
                continue
            path = item[0] if isinstance(item, list | tuple) else item
            allowed.update(f"{path}__{lookup}" for lookup in FIELD_FILTER_LOOKUPS)
            field = get_fields_from_path(self.model, path)[-1]
            if field.is_relation:
                allowed.add(f"{path}__{field.target_field.name}__exact")
        if self.date_hierarchy:
            allowed.update(f"{self.date_hierarchy}__{part}" for part in DATE_HIERARCHY_LOOKUPS)
        return allowed


class LargeTableAdmin(StrictAdmin):
    """A list that answers fast however many rows the table has."""

    paginator = LargeTablePaginator
    show_full_result_count = False  # no second COUNT(*) of the unfiltered table
    show_facets = admin.ShowFacets.NEVER  # facets count every filter choice
    list_per_page = 50


class ReadOnlyAdmin(LargeTableAdmin):
    """Rows the system owns: viewable, never added, edited or deleted by hand."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_operate_permission(self, request) -> bool:
        """For actions with allowed_permissions = ("operate",)."""
        return request.user.has_perm(OPERATE_PERMISSION)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class InputFilter(admin.SimpleListFilter):
    """A sidebar filter with a text box; subclasses set title, parameter_name and queryset()."""

    template = "admin/input_filter.html"
    placeholder = ""

    def lookups(self, request, model_admin):
        return ((None, None),)  # one dummy choice, so the filter shows

    def choices(self, changelist):
        yield {
            "value": self.value() or "",
            "placeholder": self.placeholder,
            "clear_query_string": changelist.get_query_string(remove=[self.parameter_name]),
            # The other filters, the search and the ordering carry over; the page does not.
            "hidden": [
                (name, value)
                for name, values in self.request.GET.lists()
                if name not in {self.parameter_name, "p"}
                for value in values
            ],
        }


def preformatted(text: str) -> str:
    """Text as it is (escaped), line breaks kept and long lines wrapped."""
    return format_html("<pre style='white-space: pre-wrap; margin: 0'>{}</pre>", text)


def pretty_json(value) -> str:
    return preformatted(json.dumps(value, indent=2))


def outcome_message(request, model_admin, outcome, noun: str = "task") -> None:
    """Tell the operator what an action did: success, a warning when some rows were refused."""
    if outcome.done and not outcome.refused:
        level = messages.SUCCESS
    elif outcome.done:
        level = messages.WARNING
    else:
        level = messages.ERROR
    model_admin.message_user(request, outcome.summary(noun), level)
