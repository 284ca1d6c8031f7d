"""The WebSocket consumer: one per connection, turning socket events into hub calls."""

import asyncio
import dataclasses
import logging
import time
from typing import Any

from channels.consumer import AsyncConsumer
from channels.layers import get_channel_layer

from . import protocol
from .conf import conf
from .hub import get_hub
from .policies import send_policy
from .throttling import bucket_for

#: WebSocket close code for a client that keeps breaking the rules (SPEC §3).
CLOSE_POLICY_VIOLATION = 1008

logger = logging.getLogger(__name__)


class RelayConsumer(AsyncConsumer):
    """Relays a client's frames to their targets and delivers what is sent to its id.

    It joins the channel-layer group ``relay.<id>`` so that any Channels code can push
    to it (``relay_deliver``), and the process-local hub for client-to-client frames.

    ``__call__`` is a plain receive loop instead of Channels' ``await_many_dispatch``,
    and handlers are called without ``dispatch()``'s ``aclose_old_connections()``: the
    consumer never touches the database, and on the per-message path those two cost
    about 6x the server itself (see the README's "Performance").
    """

    async def __call__(self, scope, receive, send) -> None:
        """Run one connection from handshake to disconnect."""
        self.scope = scope
        self.base_send = send
        self.client_id: str = scope["relay_client_id"]
        self.subprotocol = protocol.SUBPROTOCOL_V1 if protocol.SUBPROTOCOL_V1 in scope.get("subprotocols", ()) else None
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.hub = get_hub()
        self.bucket = bucket_for(conf.RELAY_RATE_LIMIT, conf.RELAY_RATE_BURST)
        self.closing = False

        if (await receive())["type"] != "websocket.connect":
            return
        opened = time.monotonic()
        listener = None
        joined = False
        try:
            if self.channel_layer is not None:
                self.channel_name = await self.channel_layer.new_channel()
                await self.channel_layer.group_add(protocol.group_for(self.client_id), self.channel_name)
                listener = asyncio.get_running_loop().create_task(self.listen_to_layer())
            joined = True  # join counts the connection at once, so leave must follow
            await self.hub.join(self, self.accept)
            logger.info("connected client=%s subprotocol=%s", self.client_id, self.subprotocol)
            code = await self.receive_frames(receive)
            logger.info(
                "disconnected client=%s code=%s duration=%.1fs", self.client_id, code, time.monotonic() - opened
            )
        finally:
            if joined:
                self.hub.leave(self)
            if listener is not None:
                listener.cancel()
                await self.channel_layer.group_discard(protocol.group_for(self.client_id), self.channel_name)

    async def accept(self) -> None:
        """Complete the handshake, with the subprotocol the client asked for if we speak it."""
        await self.base_send({"type": "websocket.accept", "subprotocol": self.subprotocol})

    async def receive_frames(self, receive) -> int | None:
        """Handle client frames until the client goes away; return the close code."""
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.receive":
                await self.receive_frame(message)
            elif kind == "websocket.disconnect":
                return message.get("code")

    async def receive_frame(self, message: dict) -> None:
        """Validate one client frame and relay it, or tell the client what was wrong."""
        if self.closing:
            return
        if self.bucket is not None and not self.bucket.allow():
            await self.refuse_over_limit()
            return
        text = message.get("text")
        if text is None:
            await self.refuse(protocol.ProtocolError(protocol.BINARY_NOT_SUPPORTED, "Send JSON in text frames."))
            return
        try:
            parsed = protocol.parse_frame(
                text, max_targets=conf.RELAY_MAX_TARGETS, max_bytes=conf.RELAY_MAX_MESSAGE_BYTES
            )
        except protocol.ProtocolError as error:
            await self.refuse(error)
            return
        policy = send_policy()
        if policy is not None:
            parsed = await self.apply_policy(policy, parsed)
        if parsed.targets:
            await self.hub.relay(self, parsed)

    async def apply_policy(self, policy, message: protocol.Message) -> protocol.Message:
        """Drop the targets the send policy refuses, with a ``forbidden`` error for each."""
        allowed = []
        for target in message.targets:
            if policy(self.client_id, target):
                allowed.append(target)
            else:
                await self.refuse(
                    protocol.ProtocolError(protocol.FORBIDDEN, f"You may not send to {target}.", message.ref)
                )
        return dataclasses.replace(message, targets=tuple(allowed))

    async def refuse_over_limit(self) -> None:
        """Refuse a frame over the rate limit; close with 1008 a client that keeps going."""
        if self.bucket.refused_in_a_row > conf.RELAY_RATE_LIMIT_CLOSE_AFTER:
            logger.warning("closing client=%s code=1008 reason=%r", self.client_id, "kept sending over the rate limit")
            self.closing = True
            await self.base_send({"type": "websocket.close", "code": CLOSE_POLICY_VIOLATION})
            return
        error = protocol.ProtocolError(
            protocol.RATE_LIMITED,
            f"Over the rate limit of {conf.RELAY_RATE_LIMIT}: retry in {self.bucket.wait():.2f} s.",
        )
        if self.bucket.refused_in_a_row == 1:
            await self.refuse(error)  # logs once per run of refusals, not once per frame
        else:
            await self.send_error(error.code, error.detail)

    async def refuse(self, error: protocol.ProtocolError) -> None:
        """Answer a bad frame with its error; the connection stays open."""
        logger.info("frame refused client=%s code=%s", self.client_id, error.code)
        await self.send_error(error.code, error.detail, error.ref)

    async def send_text(self, text: str) -> None:
        """Send one text frame to the client."""
        await self.base_send({"type": "websocket.send", "text": text})

    async def send_error(self, code: str, detail: str, ref: Any = None) -> None:
        """Send an error frame to the client."""
        await self.send_text(protocol.encode_error(self.subprotocol, code, detail, ref))

    async def listen_to_layer(self) -> None:
        """Handle channel-layer events (server pushes) addressed to this connection.

        Only ``relay.*`` event types are handled (``relay.deliver`` -> ``relay_deliver``):
        an event's type must not be a way to call any other method of the consumer.
        """
        while True:
            event = await self.channel_layer.receive(self.channel_name)
            kind = event.get("type")
            handler = getattr(self, kind.replace(".", "_"), None) if isinstance(kind, str) else None
            if handler is None or not kind.startswith("relay."):
                logger.warning("channel-layer event ignored client=%s type=%r", self.client_id, kind)
                continue
            try:
                await handler(event)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("channel-layer event ignored client=%s type=%r: %s", self.client_id, kind, exc)

    async def relay_deliver(self, event: dict) -> None:
        """Deliver a server push: ``{"type": "relay.deliver", "payload": ..., "from": None}``."""
        payload_json = protocol.dumps(event["payload"])
        await self.send_text(protocol.encode_delivery(self.subprotocol, event.get("from"), payload_json))
