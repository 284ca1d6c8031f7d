"""What the relay needs of uvicorn beyond ASGI, where uvicorn lets it reach.

Behind uvicorn's ASGI ``send`` is a bound method of the connection's protocol. With
``--ws websockets-sansio`` (uvicorn's default since 0.35 when websockets is installed)
that protocol holds a sans-I/O ``websockets`` connection (``conn``) and the asyncio
transport, and the relay uses them for what ASGI cannot say under uvicorn:

- sending without waiting: uvicorn's ``websocket.send`` awaits until the transport is
  writable again, so one client that does not read would hold up whoever sends to it
  (a delivery loop, a handler). The relay writes the frame itself and reads how many
  bytes the transport has not sent (``get_write_buffer_size()``): a client past
  ``RELAY_MAX_PENDING_BYTES`` is closed with 1013, as under daphne;
- closing from a send, without waiting either (the same wait), with any RFC 6455 code;
- bounding what the kernel holds for a client that does not read (``relay.server.tcp``);
- the socket's own peer: with ``--proxy-headers`` (on by default) uvicorn puts the
  X-Forwarded-For of its ``--forwarded-allow-ips`` in ``scope["client"]``; the relay
  decides itself whom to believe (``relay.identity.peers``).

Under another uvicorn WebSocket protocol (``--ws websockets`` or ``wsproto``), or a
uvicorn whose internals are not the ones this module knows, ``server_connection``
returns None and logs one warning: the relay then sends and closes through ASGI, and
what a slow client leaves unsent is not bounded.
"""

import logging
import socket
from typing import Any

from asgiref.typing import ASGISendCallable

from relay.server.tcp import bound_kernel_buffer

logger = logging.getLogger(__name__)

#: What the relay uses of uvicorn's websockets-sansio protocol, and of its ``conn``.
PROTOCOL_ATTRIBUTES = ("conn", "transport", "loop", "close_timer", "disconnected", "read_paused", "stop_keepalive")
#: Seconds a peer has to answer the relay's close before its socket is dropped, with whatever
#: it left unread (autobahn's default under daphne). uvicorn's own 10 s ends in a transport
#: close, which waits for the buffer to drain: never, for a client that does not read.
CLOSE_HANDSHAKE_TIMEOUT = 1.0
CONN_ATTRIBUTES = ("send_text", "send_close", "data_to_send", "state")

_warned = False
#: Per (protocol class, connection class): whether they have what UvicornConnection uses.
_known: dict[tuple[type, type], bool] = {}


class UvicornConnection:
    """The socket-level side of one WebSocket connection under uvicorn's websockets-sansio protocol."""

    def __init__(self, protocol: Any) -> None:
        from websockets.protocol import State

        self._protocol = protocol
        self._conn = protocol.conn
        self._transport = protocol.transport
        self._open = State.OPEN
        bound_kernel_buffer(self._transport.get_extra_info("socket"))

    def send(self, text: str) -> int | None:
        """Send a text frame; return the bytes not yet sent to the client, or None if closing.

        What uvicorn's ``websocket.send`` does, without waiting for the transport to be
        writable: the relay bounds what piles up instead.
        """
        conn, transport = self._conn, self._transport
        if conn.state is not self._open or self._protocol.disconnected:
            return None
        if transport.is_closing():  # uvicorn closed it (keepalive timeout, the peer's EOF): nothing more
            self._drop_soon()
            return None
        conn.send_text(text.encode())
        transport.writelines(conn.data_to_send())
        unsent: int = transport.get_write_buffer_size()
        return unsent

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake with ``code``; the socket is dropped if the peer does not answer.

        Unlike uvicorn's ``websocket.close``, it neither waits for the transport to be
        writable nor discards what the client sent before it saw the close: as under
        daphne, those frames still reach the application, which hears
        ``websocket.disconnect`` when the peer answers (uvicorn then closes the transport)
        or when the socket is dropped, after CLOSE_HANDSHAKE_TIMEOUT.
        """
        conn, transport, protocol = self._conn, self._transport, self._protocol
        if conn.state is not self._open or transport.is_closing():
            self._drop_soon()
            return
        conn.send_close(code, reason)
        transport.writelines(conn.data_to_send())
        protocol.close_timer = protocol.loop.call_later(CLOSE_HANDSHAKE_TIMEOUT, transport.abort)
        if protocol.read_paused:  # as uvicorn's close: the peer's answer must be read
            protocol.read_paused = False
            transport.resume_reading()
        # uvicorn's shutdown would send its own close (1012) on a connection that is closing,
        # which websockets refuses (InvalidState) and which ends the shutdown of the others:
        # for this connection it does what it does for one it closed itself.
        protocol.shutdown = self._shutdown_closing

    def _shutdown_closing(self) -> None:
        """uvicorn's shutdown of a connection the relay is closing: stop its pings, close its socket."""
        protocol = self._protocol
        protocol.stop_keepalive()
        if protocol.close_timer is not None:
            protocol.close_timer.cancel()
            protocol.close_timer = None
        protocol.transport.close()

    def _drop_soon(self) -> None:
        """A transport uvicorn closed still holds what the peer did not read, and would wait for it
        forever: drop the socket if that is not done within CLOSE_HANDSHAKE_TIMEOUT."""
        protocol = self._protocol
        if protocol.close_timer is None and not protocol.disconnected:
            protocol.close_timer = protocol.loop.call_later(CLOSE_HANDSHAKE_TIMEOUT, self._transport.abort)


def protocol_of(send: ASGISendCallable) -> Any:
    """The uvicorn protocol object whose bound method ``send`` is; None if it is not uvicorn's."""
    owner = getattr(send, "__self__", None)
    return owner if type(owner).__module__.startswith("uvicorn.") else None


def server_connection(send: ASGISendCallable) -> UvicornConnection | None:
    """The uvicorn connection behind an ASGI ``send`` callable, or None under another server.

    Under a uvicorn WebSocket protocol that is not the one this module knows, warns once
    per process: the relay then cannot bound what a slow client leaves unsent.
    """
    protocol = protocol_of(send)
    if protocol is None:
        return None
    conn = getattr(protocol, "conn", None)
    kinds = (type(protocol), type(conn))
    known = _known.get(kinds)
    if known is None:  # checked once per protocol class: they set these attributes in __init__
        known = _known[kinds] = all(hasattr(protocol, name) for name in PROTOCOL_ATTRIBUTES) and all(
            hasattr(conn, name) for name in CONN_ATTRIBUTES
        )
    if known:
        return UvicornConnection(protocol)
    warn_unknown_protocol(protocol)
    return None


def warn_unknown_protocol(protocol: Any) -> None:
    """Log, once per process, that this uvicorn's WebSocket protocol is not the one the relay knows."""
    global _warned
    if not _warned:
        _warned = True
        logger.warning(
            "event=uvicorn_unknown protocol=%s: the relay knows uvicorn's websockets-sansio protocol only "
            "(uvicorn --ws websockets-sansio); under this one slow clients are not bounded and sends wait "
            "for the client (see relay/server/uvicorn.py)",
            type(protocol).__name__,
        )


def socket_peer(send: ASGISendCallable, default: tuple[str, int] | None) -> tuple[str, int] | None:
    """The address of the socket's own peer under uvicorn (None: a unix socket); ``default`` elsewhere.

    Not ``scope["client"]``, which uvicorn's ``--proxy-headers`` may have filled from
    X-Forwarded-For. Both WebSocket protocols and HTTP request cycles keep the transport.
    """
    transport = getattr(protocol_of(send), "transport", None)
    if transport is None:
        return default
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:  # IPv6 adds flow info and scope id
        return (str(peer[0]), int(peer[1]))
    unix = getattr(transport.get_extra_info("socket"), "family", None) == socket.AF_UNIX
    return None if unix else default
