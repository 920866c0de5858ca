"""The kernel's operator pages. Django's admin autodiscovery imports this package; the
registrations live in one module per kind of row."""

from orchestration.admin import audit, messages, tasks, workers  # noqa: F401 - they register their pages
