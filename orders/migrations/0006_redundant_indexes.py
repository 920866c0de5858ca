"""Indexes every write of these rows kept up and no query reads.

- A foreign key's own index where a longer index starts with the same column.
- Django's second index on each indexed text column (varchar_pattern_ops, for LIKE 'prefix%'):
  every lookup of these columns is by equality (the admin's searches are exact), which the
  plain index serves. Django's model state still has them (a field's db_index makes both):
  a later migration that changes one of these columns' type makes its LIKE index again, and
  should drop it again (tests/project/test_indexes.py says so).

An order row is rewritten at every change of its state, and an audit row is written for each.
"""

import django.db.models.deletion
from django.db import migrations, models


LIKE_INDEXES = [  # table, column, index
    ("orders_order", "idempotency_key", "orders_order_idempotency_key_992d7a80_like"),
    ("orders_order", "correlation_id", "orders_order_correlation_id_faeb304d_like"),
    ("orders_ordertransition", "correlation_id", "orders_ordertransition_correlation_id_dbf4f56a_like"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0005_risk_review"),
    ]

    operations = [
        migrations.AlterField(
            model_name="customernotification",
            name="order",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="notifications",
                to="orders.order",
            ),
        ),
        migrations.AlterField(
            model_name="ordertransition",
            name="order",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="transitions",
                to="orders.order",
            ),
        ),
        migrations.AlterField(
            model_name="reservation",
            name="order",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="reservations",
                to="orders.order",
            ),
        ),
    ] + [
        migrations.RunSQL(
            f"DROP INDEX IF EXISTS {index}",
            reverse_sql=f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column} varchar_pattern_ops)",
        )
        for table, column, index in LIKE_INDEXES
    ]
