"""The relay's WebSocket application: the handshake's checks, then the consumer, in one callable.

In order: the path (``/ws`` or ``/ws/``), the client's address (``relay.server.peers``),
the browser origin (``relay.identity.origins``), the identity (``RELAY_IDENTITY_BACKENDS``);
a handshake that fails one is refused with HTTP 403 before any consumer runs. It is one
callable rather than a stack of middleware and a URL router because each layer would
copy the scope and keep a coroutine frame alive for the whole life of the connection:
about 3 KB of memory per idle connection, and a share of every handshake's CPU (README,
"Performance"). Nothing wraps ``send``, so nothing sits between a delivery and the socket.
"""

from typing import TYPE_CHECKING

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, WebSocketScope

from relay.exceptions import Refused
from relay.identity.backends import identify
from relay.identity.handshake import refuse_handshake
from relay.identity.origins import origin_refusal
from relay.server.consumers import RelayConsumer
from relay.server.peers import with_client

if TYPE_CHECKING:
    from relay.identity.handshake import RelayScope

#: The paths the relay serves WebSockets on, below the server's root path.
PATHS = ("/ws", "/ws/")


def relay_path(scope: WebSocketScope) -> bool:
    """Whether the handshake is for the relay's path (below ``root_path``, as Channels routes)."""
    path, root = scope["path"], scope.get("root_path", "")
    return path.startswith(root) and path[len(root) :] in PATHS


class RelayWebSocketApplication:
    """Check a WebSocket handshake, then run a RelayConsumer for it."""

    async def __call__(self, scope: WebSocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        # First the client's address: every refusal's log line names the proven one.
        relay_scope: RelayScope = with_client(scope, send)  # a copy: backends may add to it ("session", "user")
        if not relay_path(relay_scope):
            return await refuse_handshake(relay_scope, receive, send, "unknown_path")
        detail = origin_refusal(relay_scope)
        if detail is not None:
            return await refuse_handshake(relay_scope, receive, send, "origin", detail)
        try:
            relay_scope["relay_identity"] = await identify(relay_scope)
        except Refused as refusal:
            return await refuse_handshake(relay_scope, receive, send, refusal.reason, refusal.detail)
        await RelayConsumer()(relay_scope, receive, send)
