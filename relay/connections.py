"""One WebSocket connection as the site's code sees it: handlers, calls and signals."""

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True, slots=True)
class Connection:
    """A client's connection: who it is, how it came in, and what its identity backend attached.

    ``connection_id`` tells apart the connections of one client id (two tabs);
    ``user`` is the Django user for a session login, else None; ``data`` is what the
    identity backend attached (empty for the built-ins); ``scope`` is the ASGI scope of
    the handshake (path, headers, query string, client address).
    """

    client_id: str
    connection_id: str
    user: Any = None
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    scope: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)


class FromConnection:
    """What a client sent (a message, a call): who sent it, from its ``connection``."""

    __slots__ = ()
    connection: Connection

    @property
    def sender(self) -> str:
        """The sender's client id."""
        return self.connection.client_id

    @property
    def user(self) -> Any:
        """The sender's Django user for a session login, else None."""
        return self.connection.user
