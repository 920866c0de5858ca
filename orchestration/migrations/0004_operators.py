# The operators' audit rows, the dead-letters proxy, and a partial index on dead tasks.
# The index is built CONCURRENTLY (so outside a transaction): on a table of millions of
# rows a plain CREATE INDEX would block every claim and completion while it runs.

import django.utils.timezone
from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('orchestration', '0003_workflow_budget'),
    ]

    operations = [
        migrations.CreateModel(
            name='OperatorAction',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('operator', models.CharField(help_text='The user who acted (username).', max_length=150)),
                ('action', models.CharField(max_length=64)),
                ('target_kind', models.CharField(help_text='What was acted on, e.g. orchestration.agenttask.', max_length=100)),
                ('targets', models.JSONField(default=list, help_text='Every target asked for.')),
                ('done', models.JSONField(default=list, help_text='The targets that changed.')),
                ('refused', models.JSONField(default=dict, help_text='Target -> why it was left alone.')),
                ('detail', models.TextField(blank=True)),
                ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
            ],
            options={
                'permissions': [('operate', 'Can take operator actions: retry, cancel, force breakers, reclaim')],
            },
        ),
        migrations.CreateModel(
            name='DeadLetter',
            fields=[
            ],
            options={
                'verbose_name': 'dead letter',
                'verbose_name_plural': 'dead letters',
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('orchestration.agenttask',),
        ),
        AddIndexConcurrently(
            model_name='agenttask',
            index=models.Index(condition=models.Q(('status', 'dead')), fields=['-finished_at'], name='agenttask_dead'),
        ),
    ]
