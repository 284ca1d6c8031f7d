"""``python manage.py relay_token <client_id> [--ttl SECONDS]``: print a client token."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from relay.identity import tokens


class Command(BaseCommand):
    help = "Print a signed token that lets its bearer connect as CLIENT_ID (and nothing else)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_id", help="the client id the token proves")
        parser.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default 3600)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            token = tokens.issue(options["client_id"], ttl=options["ttl"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(token)
