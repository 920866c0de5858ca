# The admin searches API clients by their token's visible start.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('api', '0001_initial'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='apiclient',
            index=models.Index(fields=['token_prefix'], name='apiclient_token_prefix'),
        ),
    ]
