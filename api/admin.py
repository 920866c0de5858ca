"""API clients in the admin: create one and its token is shown once; deactivate or issue a
new token from the list. Tokens are stored only as hashes, so a lost one is replaced, not read."""

from __future__ import annotations

from django.contrib import admin, messages

from api.models import ApiClient


@admin.register(ApiClient)
class ApiClientAdmin(admin.ModelAdmin):
    list_display = ("name", "token_prefix", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active",)
    search_fields = ("name", "token_prefix")
    readonly_fields = ("token_prefix", "created_at", "last_used_at")
    actions = ("deactivate", "issue_new_tokens")

    def save_model(self, request, obj: ApiClient, form, change: bool) -> None:
        token = None if change else obj.issue_token()
        super().save_model(request, obj, form, change)
        if token:
            self._show_token(request, obj, token)

    def has_delete_permission(self, request, obj=None) -> bool:
        # Its orders point at it (who placed what); deactivate instead.
        return False

    @admin.action(description="Deactivate (their tokens get 401)", permissions=["change"])
    def deactivate(self, request, queryset) -> None:
        count = queryset.filter(is_active=True).update(is_active=False)
        self.message_user(request, f"{count} client(s) deactivated.")

    @admin.action(description="Issue a new token (the old one stops working)", permissions=["change"])
    def issue_new_tokens(self, request, queryset) -> None:
        for client in queryset:
            token = client.issue_token()
            client.save(update_fields=["token_prefix", "token_hash"])
            self._show_token(request, client, token)

    def _show_token(self, request, client: ApiClient, token: str) -> None:
        self.message_user(
            request,
            f"Token for {client.name}: {token}  (copy it now: it is stored only as a hash and not shown again)",
            level=messages.WARNING,
        )
