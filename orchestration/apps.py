from importlib import import_module

from django.apps import AppConfig
from django.conf import settings
from django.contrib.admin.apps import AdminConfig


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    verbose_name = "Orchestration"

    def ready(self) -> None:
        from orchestration import checks  # noqa: F401 - registers the boundary check
        from orchestration.admin import audit, messages, tasks, usage, workers  # noqa: F401 - register their pages

        # The kernel knows agents only as module paths from settings: it imports
        # nothing from the domain by name.
        for module in settings.AGENT_MODULES:
            import_module(module)


class OperatorsAdminConfig(AdminConfig):
    """django.contrib.admin, with the operators' site (orchestration.admin.site) as the default.

    Named by its full path in INSTALLED_APPS, as OrchestrationConfig is: with two configs in
    one module, Django must not be left to guess."""

    default_site = "orchestration.admin.site.OperatorsAdminSite"
