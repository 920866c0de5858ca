"""Fixtures of the HTTP API's tests."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orders.models import Product


@pytest.fixture
def catalogue(db):
    Product.objects.create(sku="PEN", name="Pen", price=Decimal("2.50"), stocked=100)
    Product.objects.create(sku="INK", name="Ink", price=Decimal("7.00"), stocked=100)
