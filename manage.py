#!/usr/bin/env python
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.config")
    from django.core.management import execute_from_command_line

    from settings.env import ConfigurationError

    try:
        execute_from_command_line(sys.argv)
    except ConfigurationError as error:
        sys.exit(f"configuration error: {error}")


if __name__ == "__main__":
    main()
