"""The admin site operators use: the usual model pages plus an "Operations" section with
the dashboard, the circuit breakers, live workers and the periodic schedules.

The dashboard mixes kernel and domain figures, so it lives with the domain; the kernel
finds it by dotted path in settings.OPERATIONS_DASHBOARD (and shows none when unset).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import NoReverseMatch, path, reverse
from django.utils.module_loading import import_string


class OperatorsAdminSite(admin.AdminSite):
    site_header = "Agent coordination: operations"
    site_title = "Operations"
    index_title = "Control room"

    def get_urls(self):
        from orchestration import admin_views

        urls = [
            path("operations/breakers/", self.admin_view(admin_views.breakers_view), name="breakers"),
            path("operations/reclaim/", self.admin_view(admin_views.reclaim_view), name="reclaim"),
        ]
        dashboard = getattr(settings, "OPERATIONS_DASHBOARD", "")
        if dashboard:
            urls.append(path("operations/dashboard/", self.admin_view(import_string(dashboard)), name="dashboard"))
        return urls + super().get_urls()

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is None and request.user.is_active and request.user.is_staff:
            apps.insert(0, self.operations_app(request))
        return apps

    def operations_app(self, request) -> dict:
        """The "Operations" section of the index and the sidebar: pages, not models."""
        entries = [
            ("Dashboard", "admin:dashboard", ""),
            ("Circuit breakers", "admin:breakers", ""),
            ("Dead letters", "admin:orchestration_deadletter_changelist", ""),
            ("Rejected messages", "admin:orchestration_rejectedmessage_changelist", ""),
            ("Live workers", "admin:orchestration_worker_changelist", "?liveness=alive"),
            ("Periodic schedules", "admin:django_celery_beat_periodictask_changelist", ""),
            ("Operator actions", "admin:orchestration_operatoraction_changelist", ""),
        ]
        models = []
        for name, url_name, query in entries:
            try:
                url = reverse(url_name, current_app=self.name) + query
            except NoReverseMatch:
                continue
            models.append(
                {
                    "name": name,
                    "object_name": name.replace(" ", ""),
                    "admin_url": url,
                    "add_url": None,
                    "view_only": True,
                    "perms": {"view": True},
                }
            )
        return {
            "name": "Operations",
            "app_label": "operations",
            "app_url": models[0]["admin_url"] if models else reverse("admin:index", current_app=self.name),
            "has_module_perms": True,
            "models": models,
        }
