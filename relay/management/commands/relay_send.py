"""``python manage.py relay_send <target>... --payload JSON``: push to clients."""

import getpass
import sys
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser

from relay import api, protocol, signals
from relay.exceptions import LAYER_ERRORS
from relay.management.reach import ensure_shared_layer


class Command(BaseCommand):
    help = "Push a JSON payload to every connection of each target client id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("targets", nargs="+", help="client ids to deliver to")
        parser.add_argument("--payload", help="the JSON payload (read from standard input when absent)")

    def handle(self, *args: Any, **options: Any) -> None:
        raw = options["payload"]
        if raw is None:
            raw = sys.stdin.read()
        try:
            payload = protocol.loads(raw)
        except ValueError as exc:
            raise CommandError(f"The payload is not valid JSON: {exc}") from None
        try:
            targets, payload_json = api.validate_push(options["targets"], payload)
        except protocol.ProtocolError as exc:
            raise CommandError(exc.detail) from None
        ensure_shared_layer()
        try:
            sent = async_to_sync(api.push)(targets, payload_json)
        except LAYER_ERRORS as exc:
            raise CommandError(f"Cannot reach Redis: {exc}") from None
        signals.operator_push.send(
            sender=Command,
            source="command",
            actor=getpass.getuser(),
            targets=list(targets),
            online=len(sent.online),
            size=len(payload_json),
        )
        self.stdout.write(sent.summary(listed=100))
