"""``python manage.py relay_listen <client id> [--url URL] [--count N]``: print what a client id receives."""

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from relay.identity import tokens
from relay.protocol import normalize_client_id

if TYPE_CHECKING:
    from relay.client import RelayClient

DEFAULT_URL = "ws://127.0.0.1:8000/ws"
#: Each connection gets a fresh token; a short one is enough, it is checked at the handshake only.
TOKEN_TTL = 300
#: Seconds a listener with --count waits, after its last delivery, to hear how its resume went.
RESUME_REPORT_WAIT = 2.0


class Command(BaseCommand):
    help = (
        "Connect to the relay as CLIENT_ID, with a token minted for it (RELAY_TOKEN_SECRET), and print "
        "every delivery as one JSON line: {from, payload, offset, epoch}. Reconnects and resumes until "
        "interrupted. Needs the websockets package (pip install 'django-relay[client]')."
    )

    #: Set once the connection said how its resume went (while listen() runs).
    resumed: asyncio.Event | None = None

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_id", help="the client id to listen as")
        parser.add_argument("--url", default=DEFAULT_URL, help=f"the relay's WebSocket URL (default {DEFAULT_URL})")
        parser.add_argument("--count", type=int, default=None, help="exit after this many deliveries")
        parser.add_argument("--since", default=None, help="resume after <epoch>:<offset> instead of from now")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from relay.client import Position, RelayClient, RelayError
        except ImportError as exc:  # websockets is the [client] extra
            raise CommandError(f"relay_listen needs websockets: pip install 'django-relay[client]' ({exc}).") from None
        client_id = normalize_client_id(options["client_id"])
        if client_id is None:
            raise CommandError(f"{options['client_id']!r} is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).")
        count = options["count"]
        if count is not None and count < 1:
            raise CommandError("--count must be at least 1.")
        try:
            since = Position.parse(options["since"]) if options["since"] else None
        except ValueError as exc:
            raise CommandError(f"--since: {exc}.") from None
        client = RelayClient(
            options["url"],
            token=lambda: tokens.issue(client_id, ttl=TOKEN_TTL),  # minted again for every connection
            position=since,
            on_event=self.report,
        )
        try:
            asyncio.run(self.listen(client, count))
        except KeyboardInterrupt:
            pass
        except RelayError as exc:
            raise CommandError(
                f"{options['url']}: {exc.detail}. Is it a relay that shares this site's RELAY_TOKEN_SECRET?"
                if exc.code == "refused"
                else f"{options['url']}: {exc}"
            ) from None

    async def listen(self, client: "RelayClient", count: int | None) -> None:
        """Print deliveries until ``count`` of them (or forever)."""
        received = 0
        self.resumed = asyncio.Event()
        async with client:
            async for delivery in client:
                self.stdout.write(json.dumps(delivery.as_dict(), separators=(",", ":"), ensure_ascii=False))
                self.stdout.flush()
                received += 1
                if count is not None and received >= count:
                    # The replay comes before the frame saying how the resume went: say it too.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.resumed.wait(), RESUME_REPORT_WAIT)
                    return

    def report(self, event: str, detail: dict[str, Any]) -> None:
        """What the connection does, on standard error (standard output has only deliveries)."""
        if event == "open":
            self.stderr.write("relay_listen: connected", style_func=None)
        elif event == "reconnecting":
            self.stderr.write(
                f"relay_listen: reconnecting in {detail['delay']:.1f} s (code {detail['code']}, {detail['reason']})",
                style_func=None,
            )
        elif event == "recovered":
            if self.resumed is not None:
                self.resumed.set()
            how = f"replayed {detail['replayed']}" if detail["recovered"] else f"not recovered ({detail['reason']})"
            where = f" at {detail['epoch']}:{detail['offset']}" if detail["epoch"] else ""
            self.stderr.write(f"relay_listen: resumed{where}, {how}", style_func=None)
        elif event == "error":
            self.stderr.write(f"relay_listen: error {detail['code']}: {detail['detail']}", style_func=None)
        else:
            return
        self.stderr.flush()
