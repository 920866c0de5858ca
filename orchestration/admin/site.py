"""The admin site operators use: the usual model pages plus an "Operations" section with
the dashboard, the circuit breakers, live workers and the periodic schedules.

The dashboard mixes kernel and domain figures, so it lives with the domain; the kernel
finds it by dotted path in settings.OPERATIONS_DASHBOARD (and shows none when unset).
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.urls import NoReverseMatch, path, reverse
from django.utils.module_loading import import_string

# What each page of the Operations section needs to be seen (superusers have every one).
# Acting (forcing a breaker, the reclaim, retries, cancels) needs orchestration.operate on top.
DASHBOARD_PERMISSION = "orchestration.view_agenttask"
BREAKERS_PERMISSION = "orchestration.view_breakers"


def requires(permission: str, view):
    """The view answers 403 to a staff user without ``permission``."""
    return permission_required(permission, raise_exception=True)(view)


class OperatorsAdminSite(admin.AdminSite):
    site_header = "Agent coordination: operations"
    site_title = "Operations"
    index_title = "Control room"

    def get_urls(self):
        from orchestration.admin import views as admin_views

        urls = [
            path(
                "operations/breakers/",
                self.admin_view(requires(BREAKERS_PERMISSION, admin_views.breakers_view)),
                name="breakers",
            ),
            path("operations/reclaim/", self.admin_view(admin_views.reclaim_view), name="reclaim"),
        ]
        dashboard = getattr(settings, "OPERATIONS_DASHBOARD", "")
        if dashboard:
            view = requires(DASHBOARD_PERMISSION, import_string(dashboard))
            urls.append(path("operations/dashboard/", self.admin_view(view), name="dashboard"))
        return urls + super().get_urls()

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is None and request.user.is_active and request.user.is_staff:
            operations = self.operations_app(request)
            if operations["models"]:
                apps.insert(0, operations)
        return apps

    def operations_app(self, request) -> dict:
        """The "Operations" section of the index and the sidebar: pages, not models."""
        entries = [
            ("Dashboard", "admin:dashboard", "", [DASHBOARD_PERMISSION]),
            ("Circuit breakers", "admin:breakers", "", [BREAKERS_PERMISSION]),
            (
                "Dead letters",
                "admin:orchestration_deadletter_changelist",
                "",
                view_or_change("orchestration.deadletter"),
            ),
            (
                "Rejected messages",
                "admin:orchestration_rejectedmessage_changelist",
                "",
                view_or_change("orchestration.rejectedmessage"),
            ),
            (
                "Live workers",
                "admin:orchestration_worker_changelist",
                "?liveness=alive",
                view_or_change("orchestration.worker"),
            ),
            (
                "Periodic schedules",
                "admin:django_celery_beat_periodictask_changelist",
                "",
                view_or_change("django_celery_beat.periodictask"),
            ),
            (
                "Model usage",
                "admin:orchestration_usagerecord_changelist",
                "",
                view_or_change("orchestration.usagerecord"),
            ),
            (
                "Operator actions",
                "admin:orchestration_operatoraction_changelist",
                "",
                view_or_change("orchestration.operatoraction"),
            ),
        ]
        models = []
        for name, url_name, query, permissions in entries:
            if not any(request.user.has_perm(permission) for permission in permissions):
                continue
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


def view_or_change(model: str) -> list[str]:
    """The permissions that let the admin show a model's list ("app.model")."""
    app_label, name = model.split(".")
    return [f"{app_label}.view_{name}", f"{app_label}.change_{name}"]
