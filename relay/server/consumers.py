"""The WebSocket consumer: one per connection, turning socket events into hub calls."""

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any, cast

import hiredis
from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, WebSocketReceiveEvent
from channels.consumer import AsyncConsumer
from channels.layers import get_channel_layer

from relay import calls, metrics, protocol, signals
from relay.conf import conf
from relay.connections import Connection
from relay.exceptions import Refused, Reject
from relay.handlers import HandlerError, Message, load_handlers, run_handlers
from relay.identity.handshake import client_address, record_refusal
from relay.redis import streams
from relay.server import framings
from relay.server.adapters import asgi_close_code, server_connection
from relay.server.hub import MAYBE_LOST, get_hub
from relay.server.membership import GroupMembership
from relay.server.policies import refused_targets, send_policy
from relay.server.resume import ReplayGate, requested_resume
from relay.server.throttling import bucket_for

if TYPE_CHECKING:
    from channels.consumer import _ChannelScope

    from relay.identity.handshake import RelayScope

logger = logging.getLogger(__name__)

#: What a client hears when the site's code failed on its frame (the log has the traceback).
INTERNAL_ERROR_DETAIL = "The server failed to handle this frame; it was not relayed."


class RelayConsumer(AsyncConsumer):
    """Relays a client's frames to their targets and delivers what is sent to its id.

    It joins the channel-layer group ``relay.<id>`` so that any Channels code can push
    to it (``relay_deliver``), and the process-local hub for client-to-client frames.
    Frames are handled one at a time, in the order they arrive: the site's message
    handlers, calls and send policy see them in order, and they are relayed in order.

    ``__call__`` is a plain receive loop instead of Channels' ``await_many_dispatch``,
    and events are handled without ``dispatch()``'s ``aclose_old_connections()``: the
    consumer itself never touches the database (the site's code runs through
    ``relay.threads``, which does what Django needs), and on the per-message path those
    two cost several times what the server itself does (README, "Channel layer and bus").
    """

    async def __call__(self, scope: "_ChannelScope", receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        """Run one connection from handshake to disconnect."""
        self.scope = scope
        self.base_send = send
        # Run only by relay.server.application, which puts the proven identity in the scope.
        identity = cast("RelayScope", scope)["relay_identity"]
        self.client_id: str = identity.client_id
        self.info = Connection(identity.client_id, os.urandom(16).hex(), identity.user, identity.data, scope)
        # The client's choice where RELAY_FRAMINGS allows it; a framing it does not is refused below.
        allowed_framings = conf.RELAY_FRAMINGS
        self.subprotocol = framings.negotiate(scope.get("subprotocols", ()), allowed_framings)
        #: The session that authenticated the connection (session logins): logging out closes it.
        self.session_key = identity.session_key
        self.hub = get_hub()
        # Limits, policy and handlers are read once per connection: a missing setting
        # costs Django an exception on every read, a visible share of a frame's CPU.
        self.rate_limit = conf.RELAY_RATE_LIMIT
        self.bucket = bucket_for(self.rate_limit, conf.RELAY_RATE_BURST)
        self.close_after_refusals = conf.RELAY_RATE_LIMIT_CLOSE_AFTER
        self.max_targets = conf.RELAY_MAX_TARGETS
        self.max_message_bytes = conf.RELAY_MAX_MESSAGE_BYTES
        self.max_pending_bytes = conf.RELAY_MAX_PENDING_BYTES
        self.max_connections = conf.RELAY_MAX_CONNECTIONS_PER_ID
        self.policy = send_policy()
        self.handlers = load_handlers(tuple(conf.RELAY_MESSAGE_HANDLERS))
        self.connection = server_connection(send)
        self.close_code: int | None = None  # set when the relay closes the connection
        self.accepted = False
        # A close asked for during the handshake (a logout), done once the handshake is.
        self.close_once_accepted: tuple[int, str] | None = None
        self.in_hub = False
        self.posting: set[asyncio.Task[None]] = set()  # frames sent from sync code, under plain ASGI
        # During and just after a resume: what keeps the live deliveries from doubling the replay.
        self.gate: ReplayGate | None = None

        if (await receive())["type"] != "websocket.connect":
            return
        if self.hub.draining:
            # Accepted and closed with 1001 rather than refused: clients must reconnect (to
            # another process), and a refusal (403) would tell them to stop.
            logger.info("event=close client=%s code=1001 reason=draining", self.client_id)
            await self.accept()
            await self.close(protocol.CLOSE_GOING_AWAY)
            return
        try:
            framings.check_allowed(self.subprotocol, allowed_framings)
            resume = requested_resume(scope, self.subprotocol)
        except Refused as refusal:
            await self.refuse_handshake(refusal)
            return
        if resume is not None and self.hub.history is not None:
            self.gate = ReplayGate()
        layer = get_channel_layer(self.channel_layer_alias)
        membership = (
            GroupMembership(
                layer, protocol.group_for(self.client_id), self.handle_layer_event, self.hub.redis_up(self.client_id)
            )
            if layer and not self.hub.carries_layer_groups  # the bus carries them, for every connection of the id
            else None
        )
        opened = time.monotonic()
        accepted = False
        code = None
        try:
            if membership is not None:
                await membership.join(wait=self.hub.redis_starting(self.client_id))
            # Checked here, with no await until hub.join counts this one: handshakes of one id
            # arriving together cannot all pass the limit.
            if self.hub.connections_of(self.client_id) >= self.max_connections:
                await self.refuse_handshake(self.too_many_connections())
                return
            self.in_hub = True  # join counts the connection at once, so leave must follow
            await self.hub.join(self, self.accept)
            accepted = True
            if self.hub.draining:  # the shutdown began during this handshake
                await self.close(protocol.CLOSE_GOING_AWAY)
            elif self.close_once_accepted is not None:
                await self.close(*self.close_once_accepted)
            metrics.CONNECTS.inc()
            metrics.CONNECTIONS_OPEN.inc()
            # DEBUG: a line per connection costs a handshake a sixth of its CPU (README, "Logs").
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "event=connect client=%s subprotocol=%s peer=%s",
                    self.client_id,
                    self.subprotocol,
                    client_address(scope),
                )
            if resume is not None:
                await self.resume(resume.since)
            await signals.send_robustly(signals.client_connected, connection=self.info)
            code = await self.receive_frames(receive)
        finally:
            try:
                if membership is not None:
                    await membership.leave()
            finally:
                self.finish(accepted, code, opened)
        await signals.send_robustly(
            signals.client_disconnected, connection=self.info, code=code, duration=time.monotonic() - opened
        )

    def finish(self, accepted: bool, code: int | None, opened: float) -> None:
        """Count and log the end of the connection, then leave the hub (last, for the drain)."""
        if accepted:
            code = self.close_code or code
            metrics.CONNECTIONS_OPEN.dec()
            metrics.DISCONNECTS.labels(metrics.disconnect_reason(code)).inc()
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "event=disconnect client=%s code=%s reason=%s duration=%.1f",
                    self.client_id,
                    code,
                    metrics.disconnect_reason(code),
                    time.monotonic() - opened,
                )
        if self.in_hub:
            self.leave_hub()

    def too_many_connections(self) -> Refused:
        """The refusal of a handshake past RELAY_MAX_CONNECTIONS_PER_ID, naming the setting."""
        return Refused(
            "too_many_connections",
            f"{self.client_id} has {self.max_connections} connections open in this process already "
            "(RELAY_MAX_CONNECTIONS_PER_ID)",
        )

    async def refuse_handshake(self, refusal: Refused) -> None:
        """Answer the handshake with HTTP 403 (a close before accept), logged and counted."""
        record_refusal(self.scope, refusal.reason, refusal.detail)
        # asgiref.typing requires keys that ASGI makes optional (code, reason): django/asgiref#460.
        await self.base_send({"type": "websocket.close"})  # type: ignore[misc, arg-type]

    async def resume(self, since: streams.Position | None) -> None:
        """Replay what the client missed after ``since``, then say how it went, then go live.

        Deliveries that arrive meanwhile are held (``self.gate``); those the replay or the
        position already covers are dropped, now and when they arrive later, so nothing is
        missed and nothing doubled.
        """
        history = self.hub.stream_history(self.client_id)
        if history is None:
            await self.send_text(protocol.encode_recovered(False, 0, "history_off"))
            return
        try:
            stream = await history.read(self.client_id, since)
        except ConnectionError as exc:
            logger.warning("event=resume_failed client=%s error=%s", self.client_id, exc)
            await self.send_text(protocol.encode_recovered(False, 0, "unavailable"))
            await self.release_held(None)
            return
        recovery = streams.recover(since, stream, history.settings)
        for entry in recovery.entries:
            position = streams.Position(stream.position.epoch, entry.offset)
            await self.send_text(protocol.encode_delivery(self.subprotocol, entry.sender, entry.payload_json, position))
        metrics.DELIVERIES.inc(len(recovery.entries))
        current = stream.position
        await self.send_text(
            protocol.encode_recovered(
                recovery.recovered, len(recovery.entries), recovery.reason, current.epoch, current.offset
            )
        )
        await self.release_held(current)

    async def release_held(self, covered: streams.Position | None) -> None:
        """Send the deliveries held during a resume, but those at or before ``covered``; then go live.

        The gate stays until a delivery past ``covered`` arrives: deliveries the replay
        covered may still be on their way from Redis.
        """
        gate = self.gate
        if gate is None:
            return
        gate.replayed(covered)
        while (text := gate.next_held()) is not None:
            await self.send_text(text)
        if gate.open:
            self.gate = None

    async def accept(self) -> None:
        """Complete the handshake, with the subprotocol the client asked for if we speak it."""
        # asgiref.typing requires "headers", which ASGI makes optional (django/asgiref#460).
        await self.base_send({"type": "websocket.accept", "subprotocol": self.subprotocol})  # type: ignore[arg-type]
        self.accepted = True

    def leave_hub(self) -> None:
        """Stop receiving deliveries (once)."""
        self.in_hub = False
        self.hub.leave(self)

    async def close(self, code: int, reason: str = "") -> None:
        """Close the connection from the server side; nothing more is sent to it."""
        if self.close_code is not None:
            return
        if not self.accepted:  # the handshake is under way: closed as soon as it is done
            self.close_once_accepted = (code, reason)
            return
        self.close_code = code
        if self.connection is not None:
            self.connection.close(code, reason)  # at once; daphne's websocket.close refuses 1001, 1008, 1013
        else:
            event: dict[str, Any] = {"type": "websocket.close", "code": asgi_close_code(self.base_send, code)}
            if reason:
                event["reason"] = reason
            await self.base_send(event)  # type: ignore[arg-type]

    async def receive_frames(self, receive: ASGIReceiveCallable) -> int | None:
        """Handle client frames until the client goes away; return the close code."""
        while True:
            message = await receive()
            if message["type"] == "websocket.receive":
                await self.receive_frame(message)
            elif message["type"] == "websocket.disconnect":
                return message.get("code")

    async def receive_frame(self, message: WebSocketReceiveEvent) -> None:
        """Validate one client frame and relay it or answer the call, or tell the client what was wrong.

        Frames keep being relayed while the relay closes a connection for a shutdown or
        for not reading: a client sends until it sees the close frame, and what it sent
        before that is accepted. A client closed for abuse (1008) gets nothing more.
        """
        if self.close_code == protocol.CLOSE_POLICY_VIOLATION:
            return
        received = time.perf_counter()
        metrics.FRAMES_RECEIVED.inc()
        text = message.get("text")
        if self.bucket is not None and not self.bucket.allow():
            await self.refuse_over_limit(protocol.peek_ref(text, self.max_message_bytes))
            return
        if text is None:
            await self.refuse(protocol.ProtocolError(protocol.BINARY_NOT_SUPPORTED, "Send JSON in text frames."))
            return
        try:
            frame = protocol.parse_frame(text, max_targets=self.max_targets, max_bytes=self.max_message_bytes)
        except protocol.ProtocolError as error:
            await self.refuse(error)
            return
        if isinstance(frame, protocol.CallFrame):
            await self.answer_call(frame)
            return
        if isinstance(frame, protocol.PingFrame):
            await self.send_text(protocol.encode_pong(self.subprotocol, frame.ref))
            return
        # Without a policy or handlers (the fast path) the frame goes on as it is.
        relayed = await self.apply_site_code(frame) if self.policy is not None or self.handlers else frame
        if relayed is not None:
            await self.hub.relay(self, relayed)
            if self.hub.history is None:  # handed to this process's sockets already (with history: from Redis)
                metrics.DELIVERY_LATENCY.observe(time.perf_counter() - received)

    async def apply_site_code(self, frame: protocol.Frame) -> protocol.Frame | None:
        """The frame after the send policy and the message handlers; None if nothing is left to relay.

        The policy sees the targets the client asked for; handlers see the allowed ones,
        and what they return is relayed as it is (the site's code chose it).
        """
        try:
            if self.policy is not None:
                frame = await self.apply_policy(frame)
            if not frame.targets or not self.handlers:
                return frame if frame.targets else None
            message = Message(self.info, frame.targets, frame.payload, frame.ref)
            handled = await run_handlers(self.handlers, message)
            if handled is None or not handled.targets:
                return None
            return frame if handled is message else handled_frame(handled, frame.ref)
        except Reject as rejected:
            await self.refuse(protocol.ProtocolError(rejected.code, rejected.detail, frame.ref))
        except HandlerError as error:
            await self.site_code_failed("handler", error.path, error.problem, error, frame.ref)
        except Exception as error:  # the send policy's bug: the frame fails, the connection stays
            await self.site_code_failed("policy", conf.RELAY_SEND_POLICY, describe(error), error, frame.ref)
        return None

    async def apply_policy(self, frame: protocol.Frame) -> protocol.Frame:
        """Drop the targets the send policy refuses, with a ``forbidden`` error for each."""
        assert self.policy is not None  # called only with a policy
        refused = await refused_targets(self.policy, self.client_id, frame.targets)
        if not refused:
            return frame
        for target in refused:
            await self.refuse(protocol.ProtocolError(protocol.FORBIDDEN, f"You may not send to {target}.", frame.ref))
        allowed = tuple(target for target in frame.targets if target not in refused)
        return protocol.Frame(allowed, frame.payload_json, frame.ref, frame.payload)

    async def answer_call(self, frame: protocol.CallFrame) -> None:
        """Run the call's registered function and answer the caller only."""
        registered = calls.lookup(frame.name)
        if registered is None:
            await self.refuse(
                protocol.ProtocolError(protocol.UNKNOWN_CALL, f"No call named {frame.name!r}.", frame.ref)
            )
            return
        path, function = registered
        try:
            result = await function(calls.Call(self.info, frame.name, frame.payload, frame.ref))
        except Reject as rejected:
            await self.refuse(protocol.ProtocolError(rejected.code, rejected.detail, frame.ref))
            return
        except Exception as error:
            await self.site_code_failed("call", path, describe(error), error, frame.ref)
            return
        try:
            payload_json = protocol.dumps(result)
        except (TypeError, ValueError) as error:
            problem = f"returned {type(result).__name__}, which is not a JSON value: {error}"
            await self.site_code_failed("call", path, problem, error, frame.ref)
            return
        await self.send_text(protocol.encode_reply(self.subprotocol, frame.ref, payload_json))

    async def site_code_failed(
        self, kind: str, where: str, problem: str, error: BaseException, ref: str | int | None
    ) -> None:
        """The site's handler, call or policy failed on a frame: ``internal_error`` for that frame only.

        Logged at ERROR with the traceback (a bug to fix in the site's code) and counted.
        """
        metrics.SITE_CODE_ERRORS.labels(kind).inc()
        logger.error(
            "event=site_code_failed kind=%s where=%s client=%s error=%s",
            kind,
            where,
            self.client_id,
            problem,
            exc_info=error,
        )
        await self.send_error(protocol.INTERNAL_ERROR, INTERNAL_ERROR_DETAIL, ref)

    async def refuse_over_limit(self, ref: str | int | None) -> None:
        """Refuse a frame over the rate limit; close with 1008 a client that keeps going."""
        assert self.bucket is not None  # called only when the bucket refused a frame
        if self.bucket.refused_in_a_row > self.close_after_refusals:
            logger.warning(
                "event=close client=%s code=1008 reason=%s", self.client_id, "kept sending over the rate limit"
            )
            await self.close(protocol.CLOSE_POLICY_VIOLATION)
            return
        error = protocol.ProtocolError(
            protocol.RATE_LIMITED,
            f"Over the rate limit of {self.rate_limit}: retry in {self.bucket.wait():.2f} s.",
            ref,
        )
        if self.bucket.refused_in_a_row == 1:
            await self.refuse(error)  # logs once per run of refusals, not once per frame
        else:
            await self.send_error(error.code, error.detail, ref)

    async def refuse(self, error: protocol.ProtocolError) -> None:
        """Answer a bad frame with its error; the connection stays open."""
        logger.info("event=frame_refused client=%s code=%s", self.client_id, error.code)
        await self.send_error(error.code, error.detail, error.ref)

    async def deliver(self, text: str, position: streams.Position | None) -> None:
        """Send one delivery to the client, but one a resume holds back or replayed already."""
        if self.gate is not None and not self.through_gate(text, position):
            return
        if self.connection is not None:
            self.send_to_socket(text)  # as send_text does, one call less on the per-message path
        else:
            await self.send_text(text)

    def through_gate(self, text: str, position: streams.Position | None) -> bool:
        """Whether a delivery during or just after a resume is sent; the gate goes once it drops nothing more."""
        assert self.gate is not None  # called only while there is one
        passes = self.gate.passes(text, position)
        if self.gate.open:
            self.gate = None  # the per-message path is back to one test
        return passes

    async def send_text(self, text: str) -> None:
        """Send one text frame to the client; close a client that stopped reading."""
        if self.connection is None:
            if self.close_code is None:
                # asgiref.typing requires "bytes", which ASGI makes optional (django/asgiref#460).
                await self.base_send({"type": "websocket.send", "text": text})  # type: ignore[arg-type]
            return
        self.send_to_socket(text)

    def send_to_socket(self, text: str) -> None:
        """Send one text frame straight to the socket (daphne, uvicorn); close a client that stopped reading."""
        assert self.connection is not None  # only under a server with an adapter
        if self.close_code is not None:
            return
        unsent = self.connection.send(text)  # None: the socket is closing, nothing was sent
        if unsent is not None and unsent > self.max_pending_bytes:
            logger.warning(
                "event=close client=%s code=1013 reason=%s", self.client_id, "not reading: send buffer over the limit"
            )
            self.close_code = protocol.CLOSE_TRY_AGAIN_LATER
            self.connection.close(protocol.CLOSE_TRY_AGAIN_LATER)

    def post_text(self, text: str) -> None:
        """Send one frame from sync code (a Redis reply callback): at once through an adapter, else in a task."""
        if self.connection is not None:
            self.send_to_socket(text)
            return
        task = asyncio.get_running_loop().create_task(self.send_text(text))
        self.posting.add(task)  # referenced until done
        task.add_done_callback(self.posting.discard)

    async def send_error(self, code: str, detail: str, ref: Any = None) -> None:
        """Send an error frame to the client."""
        metrics.ERRORS.labels(code).inc()
        await self.send_text(protocol.encode_error(self.subprotocol, code, detail, ref))

    def on_relay_reply(self, reply: Any) -> None:
        """Redis's reply to one of this connection's frames that needs no ack: only a failure is news."""
        if isinstance(reply, hiredis.ReplyError):
            self.post_error(protocol.UNAVAILABLE, MAYBE_LOST)

    def post_error(self, code: str, detail: str, ref: Any = None, target: str | None = None) -> None:
        """Send an error frame from sync code; ``target``: the one target of the frame it is about."""
        metrics.ERRORS.labels(code).inc()
        self.post_text(protocol.encode_error(self.subprotocol, code, detail, ref, target))

    async def handle_layer_event(self, event: dict[str, Any]) -> None:
        """Handle a channel-layer event (a server push) addressed to this connection.

        Only ``relay.*`` event types are handled (``relay.deliver`` -> ``relay_deliver``):
        an event's type must not be a way to call any other method of the consumer.
        """
        kind: Any = event.get("type")  # an event is anyone's dict: checked below
        handler = getattr(self, kind.replace(".", "_"), None) if isinstance(kind, str) else None
        if handler is None or not kind.startswith("relay."):
            logger.warning("event=layer_event_ignored client=%s type=%r", self.client_id, kind)
            return
        try:
            await handler(event)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("event=layer_event_ignored client=%s type=%r error=%s", self.client_id, kind, exc)

    async def relay_deliver(self, event: dict[str, Any]) -> None:
        """Deliver a server push: ``{"type": "relay.deliver", "payload": ..., "from": None}``.

        ``payload_json`` (the payload already encoded, as ``relay.send`` sends it) may
        stand in for ``payload``.
        """
        payload_json = event.get("payload_json")
        if not isinstance(payload_json, str):
            payload_json = protocol.dumps(event["payload"])
        await self.send_text(protocol.encode_delivery(self.subprotocol, event.get("from"), payload_json))
        metrics.DELIVERIES.inc()


def describe(error: BaseException) -> str:
    """An exception as one line: its type and message."""
    return f"{type(error).__name__}: {error}"


def handled_frame(message: Message, ref: str | int | None) -> protocol.Frame:
    """The frame to relay for a message the handlers changed; HandlerError if it cannot be relayed."""
    try:
        if not isinstance(message.targets, (list, tuple)):
            raise TypeError(f"targets is a {type(message.targets).__name__}, not a tuple of client ids")
        targets = protocol.parse_targets(list(message.targets), max_targets=len(message.targets), ref=ref)
        return protocol.Frame(targets, protocol.dumps(message.payload), ref, message.payload)
    except (protocol.ProtocolError, TypeError, ValueError) as error:
        raise HandlerError("RELAY_MESSAGE_HANDLERS", f"returned a message that cannot be relayed: {error}") from error
