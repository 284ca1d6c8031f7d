"""``python manage.py relay_apikey create|revoke|list``: API keys for the HTTP API, with their scope."""

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import IntegrityError

from relay.contrib.http_api.models import ApiKey

SCOPES = ("send", "presence")


class Command(BaseCommand):
    help = "Create (prints the key once), revoke or list the API keys of the HTTP API."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="create a key and print it (only now)")
        create.add_argument("name", help="who uses the key, e.g. billing-service")
        create.add_argument(
            "--scope",
            action="append",
            choices=SCOPES,
            help="what the key may do: send (POST /relay/api/send), presence (GET /relay/api/presence); "
            "repeat for both (default: send)",
        )
        create.add_argument(
            "--ids",
            action="append",
            default=[],
            metavar="PATTERN",
            help="client ids the key may reach, * for any characters (user-*); repeat or separate by commas "
            "(default: any id)",
        )
        revoke = actions.add_parser("revoke", help="revoke a key by name")
        revoke.add_argument("name")
        actions.add_parser("list", help="list keys (never the keys themselves)")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "create":
            name = options["name"].strip()
            if not name or len(name) > 100:
                raise CommandError("A key name is 1-100 characters.")
            scopes = set(options["scope"] or ["send"])
            try:
                _, plain = ApiKey.generate(
                    name,
                    can_send="send" in scopes,
                    can_read_presence="presence" in scopes,
                    client_ids=" ".join(options["ids"]),
                )
            except IntegrityError:
                raise CommandError(f"A key named {name!r} exists already.") from None
            except ValidationError as exc:
                raise CommandError(" ".join(exc.messages)) from None
            self.stdout.write(plain)
        elif action == "revoke":
            key = ApiKey.objects.filter(name=options["name"]).first()
            if key is None:
                raise CommandError(f"No key named {options['name']!r}.")
            if not key.active:
                raise CommandError(f"The key {key.name!r} was revoked already, at {key.revoked_at:%Y-%m-%d %H:%M}.")
            key.revoke()
            self.stdout.write(f"Revoked {key.name}.")
        else:
            for key in ApiKey.objects.all():
                state = "active" if key.active else f"revoked {key.revoked_at:%Y-%m-%d %H:%M}"
                self.stdout.write(f"{key.name}\t{key.prefix}\t{state}\t{key.scope}")
