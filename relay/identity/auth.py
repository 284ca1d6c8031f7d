"""The middleware that decides who a WebSocket handshake connects as, or refuses it.

The decision itself is ``RELAY_IDENTITY_BACKENDS``' (``relay.identity.backends``).
"""

from typing import TYPE_CHECKING

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable

from relay.exceptions import Refused
from relay.identity.backends import identify
from relay.identity.handshake import refuse_handshake

if TYPE_CHECKING:
    from relay.identity.handshake import RelayApplication, RelayScope


class ClientIdentityMiddleware:
    """Put the handshake's Identity in ``scope["relay_identity"]``; refuse the handshake (403) without one."""

    def __init__(self, inner: "RelayApplication") -> None:
        self.inner = inner

    async def __call__(self, scope: "RelayScope", receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        scope = scope.copy()  # backends may add to it (the session backend: "session", "user")
        try:
            identity = await identify(scope)
        except Refused as refusal:
            return await refuse_handshake(scope, receive, send, refusal.reason, refusal.detail)
        scope["relay_identity"] = identity
        return await self.inner(scope, receive, send)
