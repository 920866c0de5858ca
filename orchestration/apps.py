from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class OrchestrationConfig(AppConfig):
    name = "orchestration"
    verbose_name = "Orchestration"

    def ready(self) -> None:
        from orchestration import checks  # noqa: F401 - registers the boundary check

        # The kernel knows agents only as module paths from settings: it imports
        # nothing from the domain by name.
        for module in getattr(settings, "AGENT_MODULES", []):
            import_module(module)
