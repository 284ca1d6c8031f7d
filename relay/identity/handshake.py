"""Reading a WebSocket handshake's scope, and refusing a handshake (HTTP 403)."""

import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, WebSocketScope

from relay.logs import field
from relay.metrics import HANDSHAKES_REFUSED

if TYPE_CHECKING:
    from channels.consumer import _ChannelScope

    from relay.identity.backends import Identity

    class RelayScope(_ChannelScope, total=False):
        """A handshake's scope as Channels fills it in, with the relay's own keys."""

        relay_identity: Identity  # set by relay.server.application once the handshake proved it


logger = logging.getLogger(__name__)


def header(scope: WebSocketScope, name: bytes) -> bytes | None:
    """The first value of a request header (``name`` in lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def bearer_credentials(authorization: str) -> str | None:
    """The credentials of an ``Authorization: Bearer <credentials>`` value; None for another scheme.

    A Bearer header with nothing after it gives ``""``: the caller refuses it.
    """
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def query_params(scope: WebSocketScope) -> dict[str, list[str]]:
    """The handshake's query string, decoded leniently (a stranger wrote it)."""
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def client_address(scope: WebSocketScope) -> str:
    """host:port of the client (host alone when a proxy named it), for logs; escaped as a log field.

    ``scope["client"]`` is the address the relay's ``PeerMiddleware`` resolved: the
    socket's peer, or X-Forwarded-For from a trusted proxy (``RELAY_TRUSTED_PROXIES``).
    """
    client = scope.get("client")
    if not client:
        return "-"
    return field(f"{client[0]}:{client[1]}" if client[1] else str(client[0]))


def record_refusal(scope: WebSocketScope, reason: str, detail: str = "") -> None:
    """Log one line and count a refused handshake.

    ``reason`` is a short fixed word (a metrics label); ``detail`` says more, for the log.
    The path and the detail hold what the client sent: they are escaped (``relay.logs.field``).
    """
    HANDSHAKES_REFUSED.labels(reason).inc()
    logger.info(
        "event=refused peer=%s path=%s reason=%s detail=%s",
        client_address(scope),
        field(scope.get("path", "")),
        reason,
        field(detail[:200]),
    )


async def refuse_handshake(
    scope: WebSocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable, reason: str, detail: str = ""
) -> None:
    """Record the refusal and answer the handshake with HTTP 403 (a close before accept)."""
    record_refusal(scope, reason, detail)
    message = await receive()
    if message["type"] == "websocket.connect":
        # asgiref.typing requires keys that ASGI makes optional (code, reason): django/asgiref#460.
        await send({"type": "websocket.close"})  # type: ignore[misc, arg-type]
