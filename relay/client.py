"""An asyncio client of the relay for services, scripts and tests (``pip install "django-relay[client]"``).

::

    from relay.client import RelayClient

    async with RelayClient("wss://relay.example.com/ws", token=mint_token) as relay:
        ack = await relay.send(["bob"], {"text": "hi"})       # ack.offsets: {"bob": 17}
        rows = await relay.call("chat.history", {"room": "lobby"})
        async for message in relay:                           # Delivery(sender, payload, offset, epoch)
            print(message.sender, message.payload)

It speaks ``relay.v1`` and keeps the rules of relay.js: it reconnects with full-jitter
exponential backoff (reset after a stable connection), resumes its stream with
``?since=<epoch>:<offset>`` (the position is kept in memory, per client), drops deliveries
it has seen by their offset and reconnects to resume on a gap, settles ``send`` on the ack
(or the frame's errors: ``forbidden`` per refused target and ``unavailable`` per target
whose Redis is down, then the ack for the others) and ``call`` on the reply, and queues
frames sent while disconnected (bounded). Unlike a browser it sees WebSocket pings, so
the ``websockets`` keepalive finds dead connections, and it sees the handshake's HTTP
status, so a refusal (403) is known at once.

It needs no Django settings: run it from any asyncio program. It uses the ``websockets``
package, which ``django-relay[client]`` installs; nothing in the relay imports this module.
"""

import asyncio
import json
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from relay.protocol import JSON, SUBPROTOCOL_V1, normalize_client_id

logger = logging.getLogger(__name__)

#: A token, or a function giving one before each connection (sync or async); None stops.
TokenSource = str | Callable[[], str | None | Awaitable[str | None]]
#: ``on_event(name, detail)``: "connecting", "open", "reconnecting", "closed", "recovered", "error".
EventListener = Callable[[str, dict[str, Any]], None]

CLOSE_GOING_AWAY = 1001


class RelayError(Exception):
    """An error the relay answered a frame with (``code`` as the relay sends it), or the client's own.

    The client's own codes: ``timeout``, ``disconnected`` (the connection was lost before
    the answer: the frame may or may not have been relayed), ``queue_full``, ``closed``,
    ``refused`` (the handshake was refused), ``invalid_message``.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        ref: str | int | None = None,
        errors: tuple[Any, ...] = (),
        target: str | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.ref = ref
        #: For a send that no target got (``forbidden``, ``unavailable``): one error per target.
        self.errors = errors
        #: The one target of the frame the error is about (``unavailable`` per target), else None.
        self.target = target


@dataclass(frozen=True, slots=True)
class Position:
    """Where a stream is: the ``offset`` of a delivery within its ``epoch``."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, value: str) -> "Position":
        """``"<epoch>:<offset>"`` as a Position; ValueError otherwise."""
        epoch, _, offset = value.rpartition(":")
        if not epoch or not offset.isdigit():
            raise ValueError(f"{value!r} is not <epoch>:<offset>")
        return cls(epoch, int(offset))


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message delivered to this client: ``sender`` is None for a server push."""

    sender: str | None
    payload: JSON
    offset: int | None = None
    epoch: str | None = None

    def as_dict(self) -> dict[str, JSON]:
        """The delivery as JSON: ``{"from": ..., "payload": ..., "offset": ..., "epoch": ...}``."""
        return {"from": self.sender, "payload": self.payload, "offset": self.offset, "epoch": self.epoch}


@dataclass(frozen=True, slots=True)
class Ack:
    """The relay took a message: where it went in each target's stream, and which targets did not get it.

    ``forbidden``: the send policy refused them; ``unavailable``: their Redis could not take
    it (each error's ``target`` names one: send it again to those, not to the others).
    """

    offsets: dict[str, int]
    forbidden: tuple[RelayError, ...] = ()
    unavailable: tuple[RelayError, ...] = ()


@dataclass(slots=True)
class _Request:
    id: int
    text: str
    future: "asyncio.Future[Any]"
    kind: str  # "send" or "call"
    targets: frozenset[Any] = frozenset()
    forbidden: list[RelayError] = field(default_factory=list)
    unavailable: list[RelayError] = field(default_factory=list)
    sent: bool = False


def backoff_delay(attempt: int, minimum: float = 0.5, maximum: float = 20.0) -> float:
    """Seconds before reconnect number ``attempt`` (0, 1, ...): uniform in [0, min(maximum, minimum * 2**attempt)]."""
    return random.uniform(0, min(maximum, minimum * 2**attempt))


class _TokenFailed(Exception):
    """The token callback raised: reported, and tried again after the backoff."""


class _Stop(Exception):
    """Stop reconnecting: the client is closed for good, with this reason."""

    def __init__(self, code: int | None, reason: str, refused: bool) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.refused = refused


class RelayClient:
    """A relay.v1 connection that stays connected until ``close()``: see the module's docstring.

    Identity: ``token`` (a string, or a callable called before every connection, sent as
    ``Authorization: Bearer``), else ``client_id`` (the development ``?id=``). Times are in
    seconds. ``position`` (``"<epoch>:<offset>"`` or a Position) resumes from a position a
    program kept; the first connection otherwise asks for its position with ``?since=``.
    """

    def __init__(
        self,
        url: str = "ws://127.0.0.1:8000/ws",
        *,
        token: TokenSource | None = None,
        client_id: str | int | None = None,
        position: str | Position | None = None,
        backoff_min: float = 0.5,
        backoff_max: float = 20.0,
        stable_after: float = 10.0,
        timeout: float = 10.0,
        queue_size: int = 100,
        refused_after: int = 2,
        stop_codes: Iterable[int] = (1008,),
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        open_timeout: float = 10.0,
        close_timeout: float = 2.0,
        on_event: EventListener | None = None,
    ) -> None:
        if token is None and client_id is not None and normalize_client_id(client_id) is None:
            raise ValueError(f"{client_id!r} is not a client id (1-64 characters of A-Z a-z 0-9 _ . -).")
        self.url = url
        self.token = token
        self.client_id = normalize_client_id(client_id) if client_id is not None else None
        self.position: Position | None = Position.parse(position) if isinstance(position, str) else position
        self.backoff_min, self.backoff_max, self.stable_after = backoff_min, backoff_max, stable_after
        self.timeout = timeout
        self.queue_size = queue_size
        self.refused_after = refused_after
        self.stop_codes = frozenset(stop_codes)
        self.ping_interval, self.ping_timeout = ping_interval, ping_timeout
        # A dead connection never answers the closing handshake: do not wait long for it.
        self.open_timeout, self.close_timeout = open_timeout, close_timeout
        self.on_event = on_event
        #: "idle", "connecting", "open", "reconnecting" or "closed".
        self.state = "idle"
        #: Why the client closed for good: {"code", "reason", "refused"}; None while it runs.
        self.closed_because: dict[str, Any] | None = None
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._opened: asyncio.Event = asyncio.Event()
        self._deliveries: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._pending: dict[int, _Request] = {}
        self._queue: deque[_Request] = deque()
        self._next_id = 1
        self._attempt = 0
        self._refusals = 0
        self._going_away = False
        self._lost_because: str | None = None

    # --- running -----------------------------------------------------------------

    async def open(self) -> None:
        """Connect (and stay connected until ``close()``); returns once a connection is open.

        Raises RelayError ``refused`` or ``closed`` if the client stops before one opens.
        """
        if self._task is None or self._task.done():
            if self.state == "closed":  # opened again: what was not read yet stays, the end marker goes
                left = [d for d in iter_queue(self._deliveries) if d is not None]
                self._deliveries = asyncio.Queue()
                for delivery in left:
                    self._deliveries.put_nowait(delivery)
            self.closed_because = None
            self._attempt = self._refusals = 0
            self._going_away = False
            self._task = asyncio.get_running_loop().create_task(self._run())
        opened = asyncio.ensure_future(self._opened.wait())
        await asyncio.wait([opened, self._task], return_when=asyncio.FIRST_COMPLETED)
        if not opened.done():
            opened.cancel()
            raise self._closed_error()

    async def close(self) -> None:
        """Close for good: queued frames and those awaiting an answer fail with ``closed``."""
        ws, task = self._ws, self._task
        self._finish(_Stop(1000, "closed by the client", False))
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> "RelayClient":
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    def drop(self) -> None:
        """Lose the connection as a network failure would (for tests): the client reconnects."""
        self._lose("dropped by drop()")

    # --- sending -----------------------------------------------------------------

    async def send(
        self, targets: str | int | Iterable[str | int], payload: JSON = None, *, timeout: float | None = None
    ) -> Ack:
        """Send ``payload`` to every connection of each target; returns the Ack.

        The Ack lists the targets that did not get it (``forbidden``, ``unavailable``) when
        others did. Raises RelayError with the frame's error code, ``forbidden`` when every
        target was refused, ``unavailable`` when no target got it (``errors``: one per
        target), ``timeout``, ``disconnected``, ``queue_full`` or ``closed``.
        """
        listed = [targets] if isinstance(targets, (str, int)) else list(targets)
        distinct = frozenset(normalize_client_id(target) or target for target in listed)
        ack: Ack = await self._request({"targets": listed, "payload": payload}, "send", distinct, timeout)
        return ack

    async def call(self, name: str, payload: JSON = None, *, timeout: float | None = None) -> JSON:
        """Call the function the site registered as ``name`` (``@relay.rpc``); returns its answer."""
        return await self._request({"call": name, "payload": payload}, "call", frozenset(), timeout)

    async def recv(self, timeout: float | None = None) -> Delivery:
        """The next delivery (waiting up to ``timeout`` seconds); RelayError ``closed`` once closed."""
        if self._deliveries.empty() and self.state == "closed":
            raise self._closed_error()
        delivery = await asyncio.wait_for(self._deliveries.get(), timeout)
        if delivery is None:
            self._deliveries.put_nowait(None)  # for the next reader too
            raise self._closed_error()
        return delivery

    def __aiter__(self) -> AsyncIterator[Delivery]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Delivery]:
        while True:
            try:
                yield await self.recv()
            except RelayError:
                return

    async def _request(self, frame: dict[str, JSON], kind: str, targets: frozenset[Any], timeout: float | None) -> Any:
        if self.state == "closed":
            raise self._closed_error()
        request_id = self._next_id
        self._next_id += 1
        try:
            text = json.dumps({**frame, "id": request_id}, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RelayError("invalid_message", f"the payload is not JSON: {exc}") from None
        request = _Request(request_id, text, asyncio.get_running_loop().create_future(), kind, targets)
        if self.state == "open" and self._ws is not None:
            await self._write(request)
        elif len(self._queue) >= self.queue_size:
            raise RelayError("queue_full", f"{len(self._queue)} frames wait already")
        else:
            self._queue.append(request)
        seconds = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(request.future, seconds)
        except TimeoutError:
            where = "it may still have been relayed" if request.sent else "it was never sent"
            raise RelayError("timeout", f"no answer within {seconds} s: {where}", request_id) from None
        finally:
            self._pending.pop(request_id, None)
            if request in self._queue:
                self._queue.remove(request)

    async def _write(self, request: _Request) -> None:
        assert self._ws is not None  # written only while open
        request.sent = True
        self._pending[request.id] = request
        try:
            await self._ws.send(request.text)
        except ConnectionClosed:
            pass  # the reader sees the close and fails what is pending

    # --- the connection loop -----------------------------------------------------

    def _emit(self, name: str, **detail: Any) -> None:
        if name in {"connecting", "open", "reconnecting", "closed"}:
            self.state = name
        if self.on_event is not None:
            try:
                self.on_event(name, detail)
            except Exception:
                logger.exception("relay.client: the on_event listener failed on %s", name)

    async def _run(self) -> None:
        try:
            while True:
                self._emit("connecting", attempt=self._attempt)
                try:
                    ws = await self._connect()
                except _Stop:
                    raise
                except _TokenFailed as failed:
                    self._emit("error", code="token_failed", detail=str(failed), ref=None)
                    await self._backoff(None, "the token callback failed", opened_at=None)
                    continue
                except (OSError, TimeoutError, InvalidHandshake) as exc:
                    self._handshake_failed(exc)
                    await self._backoff(None, describe(exc), opened_at=None)
                    continue
                opened_at = time.monotonic()
                code, reason = await self._serve(ws)
                if code in self.stop_codes:
                    raise _Stop(code, reason, False)
                if code == CLOSE_GOING_AWAY:
                    self._going_away = True  # a proxy may refuse handshakes until the server is back
                await self._backoff(code, reason, opened_at)
        except _Stop as stop:
            self._finish(stop)
        except InvalidURI as exc:  # not a ws:// or wss:// URL: no use trying again
            self._finish(_Stop(None, describe(exc), False))
        except Exception as exc:  # a bug: stop, and say why
            logger.exception("relay.client: stopped by %s", describe(exc))
            self._finish(_Stop(None, describe(exc), False))

    async def _connect(self) -> ClientConnection:
        headers = {}
        query = dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))
        if self.token is not None:
            try:
                token = self.token() if callable(self.token) else self.token
                if isinstance(token, Awaitable):
                    token = await token
            except Exception as exc:  # the site's token service is down, say: try again later
                raise _TokenFailed(describe(exc)) from exc
            if not token:
                raise _Stop(None, "the token callback gave no token", True)
            headers["Authorization"] = f"Bearer {token}"
        elif self.client_id is not None:
            query["id"] = self.client_id
        query["since"] = str(self.position) if self.position is not None else ""
        parts = urlsplit(self.url)
        url = urlunsplit(parts._replace(query=urlencode(query)))
        return await connect(
            url,
            subprotocols=[Subprotocol(SUBPROTOCOL_V1)],
            additional_headers=headers,
            proxy=None,
            compression=None,
            open_timeout=self.open_timeout,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=self.close_timeout,
            max_size=None,
        )

    def _handshake_failed(self, exc: Exception) -> None:
        """A refusal (HTTP 4xx) stops the client after ``refused_after`` in a row, unless the server is going away."""
        if not (isinstance(exc, InvalidStatus) and 400 <= exc.response.status_code < 500):
            self._refusals = 0  # a failure of another kind in between: not "in a row"
            return
        self._refusals += 1
        if not self._going_away and self._refusals >= self.refused_after:
            raise _Stop(exc.response.status_code, f"the server refused the handshake ({describe(exc)})", True)

    async def _serve(self, ws: ClientConnection) -> tuple[int | None, str]:
        """Use an open connection until it closes; the close code and reason."""
        if ws.subprotocol != SUBPROTOCOL_V1:
            await ws.close()
            self._emit("error", code="protocol", detail=f"the server did not accept {SUBPROTOCOL_V1}", ref=None)
            raise _Stop(None, f"the server does not speak {SUBPROTOCOL_V1}", True)
        self._ws = ws
        self._lost_because = None
        self._refusals = 0
        self._going_away = False
        self._emit("open")
        self._opened.set()
        try:
            while self._queue:
                await self._write(self._queue.popleft())
            async for text in ws:
                if isinstance(text, str):
                    self._receive(text)
        except ConnectionClosed:
            pass
        finally:
            self._release()
        if self._lost_because is not None:
            return 1006, self._lost_because
        sent = ws.protocol.close_sent  # ours, when the server said nothing: "keepalive ping timeout"
        reason = ws.close_reason or (sent.reason if ws.protocol.close_rcvd is None and sent is not None else "")
        return (ws.close_code if ws.close_code is not None else 1006), reason

    def _release(self) -> None:
        self._ws = None
        self._opened.clear()
        lost = RelayError(
            "disconnected", "the connection was lost before the answer: the frame may or may not have been relayed"
        )
        for request in list(self._pending.values()):
            self._settle(request, error=lost)

    def _lose(self, reason: str) -> None:
        """Give the open connection up (a gap, drop()): the loop reconnects and resumes."""
        ws = self._ws
        if ws is not None:
            self._lost_because = reason
            self._release()  # frames sent from now on wait for the next connection
            ws.transport.abort()

    async def _backoff(self, code: int | None, reason: str, opened_at: float | None) -> None:
        if opened_at is not None and time.monotonic() - opened_at >= self.stable_after:
            self._attempt = 0
        delay = backoff_delay(self._attempt, self.backoff_min, self.backoff_max)
        self._attempt += 1
        self._emit("reconnecting", delay=delay, attempt=self._attempt, code=code, reason=reason)
        await asyncio.sleep(delay)

    def _finish(self, stop: _Stop) -> None:
        if self.state == "closed":
            return
        self.closed_because = {"code": stop.code, "reason": stop.reason, "refused": stop.refused}
        closed = self._closed_error()
        while self._queue:
            self._settle(self._queue.popleft(), error=closed)
        for request in list(self._pending.values()):
            self._settle(request, error=closed)
        self._deliveries.put_nowait(None)
        self._emit("closed", **self.closed_because)

    def _closed_error(self) -> RelayError:
        because = self.closed_because
        if because is not None and because["refused"]:
            return RelayError("refused", because["reason"])
        return RelayError("closed", because["reason"] if because else "the client is closed")

    # --- frames ------------------------------------------------------------------

    def _receive(self, text: str) -> None:
        try:
            frame = json.loads(text)
        except ValueError:
            self._emit("error", code="invalid_frame", detail="the server sent a frame that is not JSON", ref=None)
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind == "message":
            self._delivery(frame)
        elif kind == "recovered":
            self._recovered(frame)
        elif kind == "ack":
            self._answer(frame, "send", frame.get("offsets") or {})
        elif kind == "reply":
            self._answer(frame, "call", frame.get("payload"))
        elif kind == "error":
            self._error(frame)

    def _delivery(self, frame: dict[str, Any]) -> None:
        offset, epoch = frame.get("offset"), frame.get("epoch")
        if isinstance(offset, int) and isinstance(epoch, str):
            position = self.position
            if position is not None and position.epoch == epoch:
                if offset <= position.offset:
                    return  # seen already: a replay overlapping what came live
                if offset > position.offset + 1:
                    self._lose(f"gap: offset {offset} after {position.offset}")
                    return
            elif position is not None:
                self._emit(
                    "recovered",
                    recovered=False,
                    replayed=0,
                    reason="epoch_changed",
                    epoch=epoch,
                    offset=offset,
                    live=True,
                )
            self.position = Position(epoch, offset)
        self._deliveries.put_nowait(Delivery(frame.get("from"), frame.get("payload"), offset, epoch))

    def _recovered(self, frame: dict[str, Any]) -> None:
        epoch, offset = frame.get("epoch"), frame.get("offset")
        if isinstance(epoch, str) and isinstance(offset, int):
            self.position = Position(epoch, offset)
        self._emit(
            "recovered",
            recovered=frame.get("recovered") is True,
            replayed=frame.get("replayed", 0),
            reason=frame.get("reason"),
            epoch=epoch,
            offset=offset,
            live=False,
        )

    def _answer(self, frame: dict[str, Any], kind: str, value: Any) -> None:
        ref = frame.get("ref")
        request = self._pending.get(ref) if isinstance(ref, int) else None
        if request is None or request.kind != kind:
            return
        if kind == "send":
            value = Ack(dict(value), tuple(request.forbidden), tuple(request.unavailable))
        self._settle(request, value)

    def _error(self, frame: dict[str, Any]) -> None:
        code, detail, ref = str(frame.get("code")), str(frame.get("detail", "")), frame.get("ref")
        request = self._pending.get(ref) if isinstance(ref, int) else None
        if request is None:
            self._emit("error", code=code, detail=detail, ref=ref)
            return
        target = frame.get("target") if isinstance(frame.get("target"), str) else None
        error = RelayError(code, detail, ref, target=target)
        if request.kind == "send" and (code == "forbidden" or target is not None):
            # One per target the send policy refused or whose Redis is down, then the ack for
            # the others; with no target left, no ack.
            (request.forbidden if code == "forbidden" else request.unavailable).append(error)
            failed = (*request.forbidden, *request.unavailable)
            if len(failed) < len(request.targets):
                return
            error = not_sent(error, failed)
        self._settle(request, error=error)

    def _settle(self, request: _Request, value: Any = None, error: RelayError | None = None) -> None:
        self._pending.pop(request.id, None)
        if request.future.done():
            return
        if error is not None:
            request.future.set_exception(error)
        else:
            request.future.set_result(value)


def not_sent(last: RelayError, failed: tuple[RelayError, ...]) -> RelayError:
    """The error of a send that no target got: ``failed`` has one error per target."""
    if all(error.code == "forbidden" for error in failed):
        return RelayError("forbidden", "every target was forbidden", last.ref, failed)
    if len(failed) == 1:
        return RelayError(last.code, last.detail, last.ref, failed, last.target)
    return RelayError("unavailable", "no target got the message", last.ref, failed)


def iter_queue(queue: "asyncio.Queue[Any]") -> list[Any]:
    """Take everything out of ``queue`` without waiting."""
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def describe(error: BaseException) -> str:
    """An exception in one line."""
    return f"{type(error).__name__}: {error}"
