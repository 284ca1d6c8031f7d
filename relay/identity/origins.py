"""Which browser origins may open a WebSocket (``RELAY_ALLOWED_ORIGINS``).

A browser always sends ``Origin``; refusing foreign ones is what stops another site
from opening a socket with a logged-in user's session cookie (cross-site WebSocket
hijacking). A client without ``Origin`` is not a browser and cannot ride a cookie
that is not its own, so it is allowed.
"""

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable
from django.utils.http import is_same_domain

from relay.conf import conf
from relay.identity.handshake import header, refuse_handshake

if TYPE_CHECKING:
    from relay.identity.handshake import RelayApplication, RelayScope


def origin_allowed(origin: str, allowed: list[str]) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``) matches an entry of ``allowed``.

    Entries are ``"*"``, host patterns as in ALLOWED_HOSTS (``"example.com"``,
    ``".example.com"`` for subdomains too; any scheme and port) or full origins
    (``"https://app.example.com:8443"``, matched exactly).
    """
    try:
        parts = urlsplit(origin.strip().lower())
        host = parts.hostname
    except ValueError:
        return False
    if not parts.scheme or not host:
        return False  # includes "null", sent by sandboxed frames and file:// pages
    if ":" in host:
        host = f"[{host}]"  # IPv6, written in brackets in ALLOWED_HOSTS
    for entry in allowed:
        entry = entry.lower()
        if entry == "*":
            return True
        if "://" in entry:
            if f"{parts.scheme}://{parts.netloc}" == entry.rstrip("/"):
                return True
        elif is_same_domain(host, entry):
            return True
    return False


class OriginMiddleware:
    """Refuse (403) a WebSocket handshake from a browser origin that is not allowed."""

    def __init__(self, inner: "RelayApplication") -> None:
        self.inner = inner

    async def __call__(self, scope: "RelayScope", receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        origin = header(scope, b"origin")
        if origin is not None:
            origin_text = origin.decode("latin-1")
            if not origin_allowed(origin_text, conf.RELAY_ALLOWED_ORIGINS):
                return await refuse_handshake(scope, receive, send, "origin", f"{origin_text} is not allowed")
        return await self.inner(scope, receive, send)
