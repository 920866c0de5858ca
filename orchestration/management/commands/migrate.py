"""Django's `migrate`, without the statement timeout every other session has.

An index build or a table rewrite on a big table takes longer than any one statement of
the running system may (settings.config: DATABASE_STATEMENT_TIMEOUT_SECONDS). lock_timeout
stays: a migration that cannot get its table lock fails fast and can be run again, instead
of queueing every worker's statements behind its wait.
"""

from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import connections


class Command(DjangoMigrate):
    def handle(self, *args, **options):
        connection = connections[options["database"]]
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")  # for this session, which migrate keeps
        try:
            return super().handle(*args, **options)
        finally:
            with connection.cursor() as cursor:  # back to the connection's own (a test run goes on)
                cursor.execute("RESET statement_timeout")
