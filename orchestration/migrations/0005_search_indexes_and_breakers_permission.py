# The admin searches workers by host and operator actions by operator (small tables: plain
# indexes), and seeing the circuit breakers gets its own permission.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('orchestration', '0004_operators'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='operatoraction',
            options={'permissions': [('operate', 'Can take operator actions: retry, cancel, force breakers, reclaim'), ('view_breakers', 'Can see the circuit breakers')]},
        ),
        migrations.AddIndex(
            model_name='operatoraction',
            index=models.Index(fields=['operator'], name='operatoraction_operator'),
        ),
        migrations.AddIndex(
            model_name='worker',
            index=models.Index(fields=['hostname'], name='worker_hostname'),
        ),
    ]
