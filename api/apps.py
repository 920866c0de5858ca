from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The HTTP API: an edge adapter over agents and orders; nothing depends on it."""

    name = "api"
    label = "api"
    verbose_name = "HTTP API"
