from django.apps import AppConfig


class OutsideConfig(AppConfig):
    name = "agents.outside"
    label = "outside"
    verbose_name = "Simulated outside world"
