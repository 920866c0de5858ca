from django.db import models


class Effect(models.Model):
    """A database effect of a test handler: committed only with its task's completion."""

    key = models.CharField(max_length=200)
    pid = models.IntegerField()
    attempt = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)


class StepLog(models.Model):
    """Written outside the handler's transaction, like an outside effect: survives a crash."""

    key = models.CharField(max_length=200)
    step = models.IntegerField()
    attempt = models.IntegerField()
