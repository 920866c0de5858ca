# Indexes for the admin's exact searches (customer address, payment, parcel and message
# references, the operator who acted). Built CONCURRENTLY, so outside a transaction: on
# tables of millions of orders a plain CREATE INDEX would block placing orders meanwhile.

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):

    atomic = False

    dependencies = [
        ('orders', '0001_initial'),
    ]

    operations = [
        AddIndexConcurrently(
            model_name='customernotification',
            index=models.Index(fields=['provider_message_id'], name='notification_provider_id'),
        ),
        AddIndexConcurrently(
            model_name='order',
            index=models.Index(fields=['customer'], name='order_customer'),
        ),
        AddIndexConcurrently(
            model_name='ordertransition',
            index=models.Index(condition=models.Q(('actor', ''), _negated=True), fields=['actor'], name='transition_actor'),
        ),
        AddIndexConcurrently(
            model_name='payment',
            index=models.Index(fields=['charge_reference'], name='payment_charge_reference'),
        ),
        AddIndexConcurrently(
            model_name='payment',
            index=models.Index(condition=models.Q(('refund_reference', ''), _negated=True), fields=['refund_reference'], name='payment_refund_reference'),
        ),
        AddIndexConcurrently(
            model_name='shipment',
            index=models.Index(fields=['carrier_reference'], name='shipment_carrier_reference'),
        ),
    ]
