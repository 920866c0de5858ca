"""Fixtures of the operators' tests (admin, dashboard, traces, metrics)."""

from __future__ import annotations

import pytest

from tests.support import OPERATOR_PASSWORD


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser("operator", "op@example.com", OPERATOR_PASSWORD)
