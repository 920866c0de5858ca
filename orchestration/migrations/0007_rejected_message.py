# Refused broker messages get a table of their own. The ones the kernel used to keep as dead
# agent tasks (agent "unknown", operation "unreadable_message") move into it, so poison has
# one home.

import hashlib
import json

import django.utils.timezone
from django.db import migrations, models

OLD_AGENT, OLD_OPERATION, OLD_PREFIX = "unknown", "unreadable_message", "poison-message:"


def move_old_poison(apps, schema_editor):
    AgentTask = apps.get_model("orchestration", "AgentTask")
    RejectedMessage = apps.get_model("orchestration", "RejectedMessage")
    old = AgentTask.objects.filter(agent=OLD_AGENT, operation=OLD_OPERATION)
    rows = []
    for task in old.iterator():
        message_id = task.idempotency_key.removeprefix(OLD_PREFIX)
        body = json.dumps(task.payload)
        rows.append(
            RejectedMessage(
                queue="unknown",  # the old rows did not say
                reason="bad_arguments",
                detail=task.last_error,
                message_id=message_id,
                task_name="orchestration.run_agent_task",
                body=body,
                size=len(body),
                fingerprint=hashlib.sha256(f"migrated\n{message_id}".encode()).hexdigest(),
                worker="unknown",
                received_at=task.finished_at or task.created_at,
            )
        )
    RejectedMessage.objects.bulk_create(rows, ignore_conflicts=True)
    old.delete()


class Migration(migrations.Migration):

    dependencies = [
        ('orchestration', '0006_workflow_ids'),
    ]

    operations = [
        migrations.CreateModel(
            name='RejectedMessage',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('queue', models.CharField(max_length=200)),
                ('reason', models.CharField(choices=[('not_json', 'not JSON'), ('not_an_envelope', 'not an envelope'), ('undecodable_body', 'undecodable body'), ('refused_content', 'refused content type'), ('not_a_task', 'not a task'), ('unknown_task', 'unknown task'), ('malformed_task', 'malformed task'), ('bad_arguments', 'bad arguments')], max_length=32)),
                ('detail', models.TextField(help_text='Why, precisely.')),
                ('message_id', models.CharField(blank=True, help_text='Its id, shortened when very long.', max_length=255)),
                ('task_name', models.CharField(blank=True, max_length=255)),
                ('headers', models.TextField(blank=True, help_text='Its headers as JSON, when they could be read.')),
                ('body', models.TextField(blank=True, help_text='What arrived, its first few KB.')),
                ('size', models.PositiveIntegerField(help_text='Bytes that arrived.')),
                ('fingerprint', models.CharField(max_length=64, unique=True)),
                ('worker', models.CharField(help_text='host:pid of the process that refused it.', max_length=255)),
                ('received_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'indexes': [models.Index(fields=['-received_at'], name='rejectedmessage_received')],
            },
        ),
        migrations.RunPython(move_old_poison, migrations.RunPython.noop),
    ]
