"""``python manage.py relay_disconnect <client id>... [--code 4000] [--reason TEXT]``: close clients' connections."""

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from relay import api
from relay.exceptions import LAYER_ERRORS
from relay.management.reach import ensure_shared_layer


class Command(BaseCommand):
    help = "Close every connection of each client id, in every relay process (clients may reconnect)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_ids", nargs="+", help="the client ids whose connections to close")
        parser.add_argument("--code", type=int, default=4000, help="the close code: 1000 or 3000-4999 (4000)")
        parser.add_argument("--reason", default="", help="the close reason the clients see (at most 123 bytes)")

    def handle(self, *args: Any, **options: Any) -> None:
        code, reason = options["code"], options["reason"]
        try:
            targets = [api.validate_disconnect(client_id, code, reason) for client_id in options["client_ids"]]
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        ensure_shared_layer()
        for target in targets:
            try:
                asked = api.disconnect(target, code, reason)
            except LAYER_ERRORS as exc:
                raise CommandError(f"Cannot reach Redis: {exc}") from None
            if asked:
                self.stdout.write(f"{target}: {asked} process(es) holding its connections were told to close them.")
            else:
                self.stdout.write(f"{target}: no connection open.")
