# Workflows get an identity of their own, minted by the system: budgets are keyed by it,
# not by the correlation id a caller chooses. Rows made before this keep working: their
# workflow id is their correlation id, so an old order's tasks, events and budget still
# meet. The indexes are built CONCURRENTLY (outside a transaction), like 0004's, so a big
# table keeps taking claims while they build.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models

import orchestration.models


def add_backfilled(model_name: str, table: str) -> list:
    """The column, filled with the correlation id on the rows already there."""
    return [
        migrations.AddField(
            model_name=model_name,
            name='workflow_id',
            field=models.CharField(default='', max_length=64),
            preserve_default=False,
        ),
        migrations.RunSQL(
            f"UPDATE {table} SET workflow_id = correlation_id WHERE workflow_id = ''",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('orchestration', '0005_search_indexes_and_breakers_permission'),
    ]

    operations = [
        *add_backfilled('agenttask', 'orchestration_agenttask'),
        migrations.AlterField(
            model_name='agenttask',
            name='workflow_id',
            field=models.CharField(default=orchestration.models.new_workflow_id, max_length=64),
        ),
        *add_backfilled('event', 'orchestration_event'),
        *add_backfilled('workflowbudget', 'orchestration_workflowbudget'),
        migrations.AlterField(
            model_name='workflowbudget',
            name='workflow_id',
            field=models.CharField(max_length=64, unique=True),
        ),
        migrations.AlterField(
            model_name='workflowbudget',
            name='correlation_id',
            field=models.CharField(blank=True, db_index=True, help_text='Of the task that opened it.', max_length=64),
        ),
        AddIndexConcurrently(
            model_name='agenttask',
            index=models.Index(fields=['workflow_id'], name='agenttask_workflow'),
        ),
        AddIndexConcurrently(
            model_name='event',
            index=models.Index(fields=['workflow_id'], name='event_workflow'),
        ),
    ]
