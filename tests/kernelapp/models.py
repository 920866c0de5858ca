from django.db import models


class Gate(models.Model):
    """A row a test can hold locked: an Effect that names it waits for it at commit, when
    PostgreSQL checks the (deferred) foreign key."""


class Effect(models.Model):
    """A database effect of a test handler: committed only with its task's completion."""

    key = models.CharField(max_length=200)
    gate = models.ForeignKey(Gate, null=True, on_delete=models.SET_NULL)
    pid = models.IntegerField()
    attempt = models.IntegerField()
    created_at = models.DateTimeField(auto_now_add=True)


class StepLog(models.Model):
    """Written outside the handler's transaction, like an outside effect: survives a crash."""

    key = models.CharField(max_length=200)
    step = models.IntegerField()
    attempt = models.IntegerField()
