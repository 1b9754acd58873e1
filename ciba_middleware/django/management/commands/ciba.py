"""``manage.py ciba check`` and ``manage.py ciba ticket issue|show|delete``.

The ``ciba-middleware`` commands of the same names (:mod:`ciba_middleware.cli`), run with
this project's configuration: ``CIBA_MIDDLEWARE`` and the environment, as the middleware
reads them. Exit codes are the command line's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from .... import cli
from ....errors import ConfigurationError
from ... import build, configuration


class Command(BaseCommand):
    help = "Check the fail API's configuration and store, or issue, show and delete tickets."
    # Its own check reports the configuration; the project's others do not concern it.
    requires_system_checks = []  # noqa: RUF012 (declared so by Django)

    def add_arguments(self, parser: CommandParser) -> None:
        # Everything after the command is the ciba-middleware command line's.
        parser.add_argument(
            "args", nargs=argparse.REMAINDER, metavar="check | ticket ...", help="as for ciba-middleware"
        )

    def handle(self, *args: str, **options: Any) -> None:
        if not args or args[0] not in ("check", "ticket"):
            shown = " ".join(args)
            raise CommandError(
                f"unknown command {shown!r}: use check or ticket (see ciba-middleware --help)", returncode=2
            )
        if args[0] == "check":
            try:
                build().store.close()
            except ConfigurationError as exc:
                raise CommandError(f"configuration error: {exc}", returncode=2) from None
        values, _ = configuration()
        # The command line reads its configuration from the environment: give it this
        # project's, for this process only.
        os.environ.update({name: _text(value) for name, value in values.items()})
        code = cli.main(list(args))
        if code:
            sys.exit(code)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)
