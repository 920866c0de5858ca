"""API clients in the admin: create one and its token is shown once, on a page of its own;
deactivate or issue a new token from the list. Tokens are stored only as hashes, so a lost one
is replaced, not read.

The page is the only place a token appears: not a message (Django keeps messages in a
cookie, which the browser stores and sends back), not the session, not a log line."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers

from adminkit.pages import StrictAdmin
from api.models import ApiClient


@admin.register(ApiClient)
class ApiClientAdmin(StrictAdmin):
    list_display = ("name", "token_prefix", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active",)
    search_fields = ("=name", "=token_prefix")
    search_help_text = "Exact match: a client's name or its token's visible start (oc_...)"
    readonly_fields = ("token_prefix", "created_at", "last_used_at")
    actions = ("deactivate", "issue_new_tokens")

    def save_model(self, request, obj: ApiClient, form, change: bool) -> None:
        if not change:
            obj.new_token = obj.issue_token()  # kept on the object for response_add, never saved
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj: ApiClient, post_url_continue=None):
        return self.show_tokens(request, [(obj, obj.new_token)])

    def has_delete_permission(self, request, obj=None) -> bool:
        # Its orders point at it (who placed what); deactivate instead.
        return False

    @admin.action(description="Deactivate (their tokens get 401)", permissions=["change"])
    def deactivate(self, request, queryset) -> None:
        count = queryset.filter(is_active=True).update(is_active=False)
        self.message_user(request, f"{count} client(s) deactivated.")

    @admin.action(description="Issue a new token (the old one stops working)", permissions=["change"])
    def issue_new_tokens(self, request, queryset):
        issued = []
        for client in queryset.order_by("name"):
            token = client.issue_token()
            client.save(update_fields=["token_prefix", "token_hash"])
            issued.append((client, token))
        return self.show_tokens(request, issued)

    def show_tokens(self, request: HttpRequest, issued: list[tuple[ApiClient, str]]) -> TemplateResponse:
        """The one page that shows new tokens; no cache may keep it."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Copy the new token now" if len(issued) == 1 else "Copy the new tokens now",
            "issued": issued,
        }
        response = TemplateResponse(request, "admin/api/apiclient/new_tokens.html", context)
        add_never_cache_headers(response)
        return response
