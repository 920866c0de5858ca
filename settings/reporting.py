"""What Django's debug page (and its error e-mails) may show: no passwords."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter

from settings.env import redacted


class SecretsHiddenFilter(SafeExceptionReporterFilter):
    """Django's filter hides settings named like API|TOKEN|KEY|SECRET|PASS|SIGNATURE. This
    one also hides names with AUTH (FLOWER_BASIC_AUTH, the Authorization header), hides the
    password of every URL (DATABASE_URL, REDIS_URL, CELERY_BROKER_URL: in the settings, in
    the environment the debug page lists under META, and in frame variables), and cleanses
    frame variables even with DEBUG on, when Django shows them as they are."""

    hidden_settings = re.compile("API|TOKEN|KEY|SECRET|PASS|SIGNATURE|AUTH|HTTP_COOKIE", flags=re.IGNORECASE)

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str) and "@" in cleansed:
            return redacted(cleansed)
        return cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        return [
            (name, self.cleanse_setting(name, value))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]
