import os
import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError, transaction

USERNAME = "operator"


class Command(BaseCommand):
    help = (
        f"Create the superuser '{USERNAME}' if it does not exist, with the password in "
        "OPERATOR_PASSWORD or a generated one printed once. An existing user is left as it is."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(**{User.USERNAME_FIELD: USERNAME}).exists():
            self.stdout.write(f"superuser '{USERNAME}' exists; its password is unchanged")
            return
        password = os.environ.get("OPERATOR_PASSWORD", "")
        if password:
            try:
                validate_password(password)
            except ValidationError as error:
                raise CommandError(f"OPERATOR_PASSWORD is too weak: {' '.join(error.messages)}") from None
        generated = "" if password else secrets.token_urlsafe(18)
        try:
            with transaction.atomic():
                User.objects.create_superuser(**{User.USERNAME_FIELD: USERNAME}, password=password or generated)
        except IntegrityError:
            # Another process created it between our look and our insert.
            self.stdout.write(f"superuser '{USERNAME}' exists; its password is unchanged")
            return
        if password:
            self.stdout.write(f"created superuser '{USERNAME}' with the password in OPERATOR_PASSWORD")
        else:
            self.stdout.write(
                f"created superuser '{USERNAME}' with password: {generated}\n"
                "  (shown only this once; change it with `manage.py changepassword operator`)"
            )
