"""`manage.py create_api_client NAME`: a new API client; prints its token, once."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from api.models import ApiClient


class Command(BaseCommand):
    help = "Create an API client and print its bearer token (shown only this once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name", help="A name for the client, unique.")

    def handle(self, *args, name: str, **options) -> None:
        if not name.strip() or len(name) > 100:
            raise CommandError("name: required, at most 100 characters")
        if ApiClient.objects.filter(name=name).exists():
            raise CommandError(f"name: a client named {name!r} exists; issue it a new token in the admin")
        client = ApiClient(name=name)
        token = client.issue_token()
        client.save()
        self.stderr.write(f"Created API client {name!r}. Its token, shown only now:")
        self.stdout.write(token)
