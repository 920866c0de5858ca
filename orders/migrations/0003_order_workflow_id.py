# Each order records its own workflow id (budgets, stops, traces). Orders placed before
# this get their correlation id, which is what their tasks carry as workflow id (see
# orchestration 0005). The index is built CONCURRENTLY, outside a transaction.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('orders', '0002_search_indexes'),
    ]

    operations = [
        migrations.AddField(
            model_name='order',
            name='workflow_id',
            field=models.CharField(default='', max_length=64),
            preserve_default=False,
        ),
        migrations.RunSQL(
            "UPDATE orders_order SET workflow_id = correlation_id WHERE workflow_id = ''",
            reverse_sql=migrations.RunSQL.noop,
        ),
        AddIndexConcurrently(
            model_name='order',
            index=models.Index(fields=['workflow_id'], name='order_workflow'),
        ),
    ]
