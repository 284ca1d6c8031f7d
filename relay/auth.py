"""Who is connecting: the client id of a WebSocket handshake, or a refusal.

``ClientIdentityMiddleware`` resolves the identity before any consumer runs and puts
it in ``scope["relay_client_id"]``; a handshake without one is refused with HTTP 403.
"""

import logging
from urllib.parse import parse_qs

from .conf import conf
from .protocol import normalize_client_id

logger = logging.getLogger(__name__)


def query_params(scope: dict) -> dict[str, list[str]]:
    """The handshake's query string, decoded leniently (a stranger wrote it)."""
    return parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def client_id_from_query(scope: dict) -> tuple[str | None, str]:
    """The client id named by ``?id=`` where the open mode is on, with the reason if none."""
    values = query_params(scope).get("id")
    if not values:
        return None, "no identity"
    if not conf.RELAY_ALLOW_QUERY_ID:
        return None, "?id= is not accepted here (RELAY_ALLOW_QUERY_ID is off)"
    if len(values) > 1:
        return None, "more than one ?id="
    client_id = normalize_client_id(values[0])
    if client_id is None:
        return None, "invalid client id in ?id="
    return client_id, ""


async def refuse_handshake(receive, send) -> None:
    """Answer a WebSocket handshake with HTTP 403 (an ASGI close before accept)."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close"})


def client_address(scope: dict) -> str:
    """host:port of the peer, for logs."""
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class ClientIdentityMiddleware:
    """Resolve the client id of a WebSocket handshake; refuse it with 403 when there is none."""

    def __init__(self, inner) -> None:
        self.inner = inner

    async def __call__(self, scope, receive, send):
        client_id, reason = client_id_from_query(scope)
        if client_id is None:
            logger.info("handshake refused peer=%s reason=%r", client_address(scope), reason)
            return await refuse_handshake(receive, send)
        return await self.inner(dict(scope, relay_client_id=client_id), receive, send)
