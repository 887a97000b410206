#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings")
    from django.core.management import execute_from_command_line

    from messaging_project.env import stop_on_bad_configuration

    with stop_on_bad_configuration():
        execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
