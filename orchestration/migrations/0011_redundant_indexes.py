"""Indexes every write of these rows kept up and no query reads.

- A foreign key's own index where a longer index starts with the same column.
- Django's second index on each indexed text column (varchar_pattern_ops, for LIKE 'prefix%'):
  every lookup of these columns is by equality (the admin's searches are exact), which the
  plain index serves. Django's model state still has them (a field's db_index makes both):
  a later migration that changes one of these columns' type makes its LIKE index again, and
  should drop it again (tests/project/test_indexes.py says so).

Each task row is written three times (created, claimed, finished) and never updated in place
(its status is indexed), so each index of the task table costs three index writes per task.
"""

import django.db.models.deletion
from django.db import migrations, models


LIKE_INDEXES = [  # table, column, index
    ("orchestration_agenttask", "idempotency_key", "orchestration_agenttask_idempotency_key_9ea44ea0_like"),
    ("orchestration_agenttask", "correlation_id", "orchestration_agenttask_correlation_id_c8acc1fc_like"),
    ("orchestration_event", "correlation_id", "orchestration_event_correlation_id_9f2a23b5_like"),
    ("orchestration_taskattempt", "correlation_id", "orchestration_taskattempt_correlation_id_1ccc4e19_like"),
    ("orchestration_workflowbudget", "workflow_id", "orchestration_workflowbudget_workflow_id_2add4bb0_like"),
    ("orchestration_workflowbudget", "correlation_id", "orchestration_workflowbudget_correlation_id_8ae24f40_like"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("orchestration", "0010_usage_idempotency_key"),
    ]

    operations = [
        migrations.AlterField(
            model_name="taskattempt",
            name="task",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="spans",
                to="orchestration.agenttask",
            ),
        ),
    ] + [
        migrations.RunSQL(
            f"DROP INDEX IF EXISTS {index}",
            reverse_sql=f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column} varchar_pattern_ops)",
        )
        for table, column, index in LIKE_INDEXES
    ]
