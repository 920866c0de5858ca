"""Indexes every write of these rows kept up and no query reads, as orchestration's
0011_redundant_indexes (which says why) does for the kernel's tables: foreign-key indexes a
longer index starting with the same column serves, and Django's LIKE twins of text columns only
looked up by equality. An order row is rewritten at every change of its state, and an audit row
is written for each."""

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
