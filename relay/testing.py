"""Helpers for a site's own tests: what the code under test pushed, and connections as a client id.

``capture_pushes()`` records the pushes made inside it, as ``django.core.mail.outbox``
records mail: ``relay.send`` and ``relay.asend`` (and so ``relay_send``, the admin and the
HTTP API, which push through them), and ``relay.deliver`` events that plain Channels code
sends to a ``relay.<id>`` group of the default channel layer::

    from relay.testing import capture_pushes

    def test_paying_tells_the_customer(client):
        with capture_pushes() as pushes:
            client.post("/invoices/1234/pay")
        assert pushes.to("alice") == [{"type": "invoice.paid", "id": 1234}]

Captured pushes are **not delivered** unless ``deliver=True``: like the test mail outbox,
a test of code that pushes needs no channel layer or Redis, and a test run never reaches
real clients of a Redis it shares. Pass ``deliver=True`` to also deliver them (a test with
a connection open through ``connect_as``). With pytest, the ``relay_pushes`` fixture is
``capture_pushes()`` for one test: ``pytest_plugins = ["relay.testing"]`` in the root
``conftest.py`` makes it available.

``connect_as("alice")`` opens a ``channels.testing.WebsocketCommunicator`` to the relay as
that client id (with a token minted for it), for consumer-level tests::

    async with connect_as("alice") as alice:
        await relay.asend("alice", {"text": "hi"})
        assert await alice.receive_json_from() == {"type": "message", "from": None, "payload": {"text": "hi"}}
"""

import contextvars
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from unittest import mock
from urllib.parse import urlencode

from relay.protocol import JSON, SUBPROTOCOL_V1, normalize_client_id

if TYPE_CHECKING:
    from channels.testing import WebsocketCommunicator

    from relay.api import Sent

#: Set while a captured push is delivered through relay.api.push: its group_send is not a second push.
_delivering: contextvars.ContextVar[bool] = contextvars.ContextVar("relay_testing_delivering", default=False)

GROUP_PREFIX = "relay."


@dataclass(frozen=True, slots=True)
class Push:
    """One push: the client ids it was addressed to, the payload, and how it was made.

    ``via`` is ``"relay.send"`` (``relay.send``/``relay.asend`` and what pushes through
    them) or ``"channel_layer"`` (a ``relay.deliver`` event sent to ``relay.<id>``).
    """

    targets: tuple[str, ...]
    payload: JSON
    via: str = "relay.send"


class Pushes(list[Push]):
    """The pushes captured, in order; ``to(client_id)`` gives the payloads one id was sent."""

    def to(self, client_id: str | int) -> list[JSON]:
        """The payloads pushed to ``client_id`` (``2`` and ``"2"`` are one id), in order."""
        wanted = normalize_client_id(client_id)
        return [push.payload for push in self if wanted in push.targets]


@contextmanager
def capture_pushes(*, deliver: bool = False) -> Iterator[Pushes]:
    """Record every push made inside the block; deliver them only with ``deliver=True``.

    Without delivery, ``relay.send`` returns a ``Sent`` with no one online and no offsets.
    """
    from channels.layers import get_channel_layer

    from relay import api

    pushes = Pushes()
    push = api.push

    async def recording_push(ids: tuple[str, ...], payload_json: str) -> "Sent":
        pushes.append(Push(ids, json.loads(payload_json)))
        if not deliver:
            return api.Sent(ids, frozenset())
        token = _delivering.set(True)
        try:
            return await push(ids, payload_json)
        finally:
            _delivering.reset(token)

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(api, "push", recording_push))
        layer = get_channel_layer()
        if layer is not None:
            group_send = layer.group_send

            async def recording_group_send(group: str, message: dict[str, Any]) -> None:
                if not _delivering.get() and is_relay_delivery(group, message):
                    payload = message["payload"] if "payload" in message else json.loads(message["payload_json"])
                    pushes.append(Push((group[len(GROUP_PREFIX) :],), payload, "channel_layer"))
                    if not deliver:
                        return
                await group_send(group, message)

            stack.enter_context(mock.patch.object(layer, "group_send", recording_group_send))
        yield pushes


def is_relay_delivery(group: str, message: dict[str, Any]) -> bool:
    """Whether a channel-layer message is a push to a client id's group (``relay.<id>``)."""
    return (
        group.startswith(GROUP_PREFIX)
        and normalize_client_id(group[len(GROUP_PREFIX) :]) is not None
        and message.get("type") == "relay.deliver"
    )


@asynccontextmanager
async def connect_as(
    client_id: str | int,
    *,
    application: Any = None,
    subprotocol: str | None = SUBPROTOCOL_V1,
    since: str | None = None,
    path: str = "/ws",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator["WebsocketCommunicator"]:
    """A connected ``WebsocketCommunicator`` for ``client_id``, with a token minted for it.

    ``application`` defaults to the relay's WebSocket application (origin check, identity,
    consumer), so the site's own ASGI routing need not be imported. ``since`` is the
    resume parameter (``""`` to learn the stream's position). Disconnected at the end;
    AssertionError if the handshake is refused.
    """
    from channels.testing import WebsocketCommunicator

    from relay.identity import tokens
    from relay.routing import relay_websocket_application

    query = {"token": tokens.issue(client_id, ttl=300)}
    if since is not None:
        query["since"] = since
    communicator = WebsocketCommunicator(
        application if application is not None else relay_websocket_application(),
        f"{path}?{urlencode(query)}",
        headers=headers,
        subprotocols=[subprotocol] if subprotocol else None,
    )
    connected, _ = await communicator.connect()
    if not connected:
        raise AssertionError(f"the relay refused the handshake of {client_id!r} (see the relay's log line)")
    try:
        yield communicator
    finally:
        if not communicator.future.done():  # a receive that timed out has ended the application already
            await communicator.disconnect()


try:
    import pytest
except ImportError:  # pragma: no cover - the fixture is for pytest users; the rest needs no pytest
    pass
else:

    @pytest.fixture
    def relay_pushes() -> Iterator[Pushes]:
        """The pushes made during the test, not delivered: ``relay_pushes.to("alice")``."""
        with capture_pushes() as pushes:
            yield pushes
