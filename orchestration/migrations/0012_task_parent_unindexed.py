"""The task table's index on parent: no query looks tasks up by their parent (the trace builds
the tree from a workflow's tasks in Python), and every task row version wrote it."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orchestration', '0011_redundant_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='agenttask',
            name='parent',
            field=models.ForeignKey(blank=True, db_constraint=False, db_index=False, null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='orchestration.agenttask'),
        ),
    ]
