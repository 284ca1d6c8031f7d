"""Shared fixtures for the in-process tests: WebSocket clients, a fresh channel layer, a recording layer."""

import json
import os
from typing import Any

import pytest
import redis
from channels.layers import BaseChannelLayer, channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from relay import protocol
from relayproject.asgi import application


def frame(targets: Any, payload: Any = None, **extra: Any) -> str:
    """A client frame ``{"targets": ..., "payload": ..., **extra}`` as JSON text, not ASCII-escaped."""
    return json.dumps({"targets": targets, "payload": payload, **extra}, ensure_ascii=False)


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"  # as in the Makefile

LONG = "x" * (64 * 1024)
TOO_MANY = [f"c{i}" for i in range(100)] + ["c"]

#: Every kind of bad client frame with its error code, shared by the WebSocket and HTTP
#: API tests (the same validation answers both). ``None`` stands for a binary frame.
BAD_FRAMES = [
    pytest.param("not json", protocol.INVALID_JSON, id="not-json"),
    pytest.param("", protocol.INVALID_JSON, id="empty"),
    pytest.param('{"targets": ["c"], "payload": 1', protocol.INVALID_JSON, id="truncated"),
    pytest.param("[" * 60000, protocol.INVALID_JSON, id="deep-nesting"),
    pytest.param('{"targets": ["c"], "payload": NaN}', protocol.INVALID_JSON, id="nan"),
    pytest.param('{"targets": ["c"], "payload": Infinity}', protocol.INVALID_JSON, id="infinity"),
    pytest.param('{"targets": ["c"], "payload": -Infinity}', protocol.INVALID_JSON, id="minus-infinity"),
    pytest.param('{"targets": ["c"], "payload": 1e400}', protocol.INVALID_JSON, id="1e400"),
    pytest.param('{"targets": ["c"], "payload": ' + "9" * 5000 + "}", protocol.INVALID_JSON, id="huge-int"),
    pytest.param('["c"]', protocol.INVALID_MESSAGE, id="list"),
    pytest.param('"c"', protocol.INVALID_MESSAGE, id="string"),
    pytest.param("3", protocol.INVALID_MESSAGE, id="number"),
    pytest.param("null", protocol.INVALID_MESSAGE, id="null"),
    pytest.param('{"payload": 1}', protocol.INVALID_MESSAGE, id="targets-missing"),
    pytest.param('{"targets": "c", "payload": 1}', protocol.INVALID_MESSAGE, id="targets-not-list"),
    pytest.param('{"targets": [], "payload": 1}', protocol.INVALID_MESSAGE, id="targets-empty"),
    pytest.param('{"targets": ["c"]}', protocol.INVALID_MESSAGE, id="payload-missing"),
    pytest.param('{"targets": ["c", "a b"], "payload": 1}', protocol.INVALID_TARGET, id="target-bad-chars"),
    pytest.param(frame(["c", "x" * 65], 1), protocol.INVALID_TARGET, id="target-too-long"),
    pytest.param('{"targets": ["c", true], "payload": 1}', protocol.INVALID_TARGET, id="target-bool"),
    pytest.param('{"targets": ["c", 1.5], "payload": 1}', protocol.INVALID_TARGET, id="target-float"),
    pytest.param('{"targets": ["c", null], "payload": 1}', protocol.INVALID_TARGET, id="target-null"),
    pytest.param('{"targets": ["c", {}], "payload": 1}', protocol.INVALID_TARGET, id="target-object"),
    pytest.param('{"targets": ["c", 1e400], "payload": 1}', protocol.INVALID_TARGET, id="target-1e400"),
    pytest.param(frame(TOO_MANY, 1), protocol.TOO_MANY_TARGETS, id="too-many-targets"),
    pytest.param(frame(["c"], LONG), protocol.MESSAGE_TOO_LARGE, id="too-large"),
    pytest.param(frame(["c"], "é" * 32768), protocol.MESSAGE_TOO_LARGE, id="too-large-in-bytes"),
    pytest.param(None, protocol.BINARY_NOT_SUPPORTED, id="binary"),
]


async def send_text(communicator: WebsocketCommunicator, text: str) -> None:
    """Send a text frame, including the empty one that ``send_to`` refuses."""
    await communicator.send_input({"type": "websocket.receive", "text": text})


async def send_bytes(communicator: WebsocketCommunicator, data: bytes) -> None:
    """Send a binary frame."""
    await communicator.send_input({"type": "websocket.receive", "bytes": data})


class RecordingChannelLayer(BaseChannelLayer):
    """A channel layer that is not in-memory and only records ``group_send`` calls."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[tuple[str, dict]] = []

    async def group_send(self, group: str, message: dict) -> None:
        self.sent.append((group, message))


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test starts with new channel-layer instances, so no group outlives its test."""
    channel_layers.backends = {}
    yield
    channel_layers.backends = {}


@pytest.fixture
def recording_layer(settings) -> RecordingChannelLayer:
    """Make the default channel layer a RecordingChannelLayer and return it."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.conftest.RecordingChannelLayer"}}
    layer = get_channel_layer()
    assert isinstance(layer, RecordingChannelLayer)
    return layer


@pytest.fixture
async def connect():
    """Open relay connections with ``await connect(client_id, subprotocols=...)``.

    Every connection is disconnected when the test ends; a consumer that crashed
    re-raises its exception there.
    """
    opened: list[WebsocketCommunicator] = []

    async def open_connection(client_id: Any, subprotocols: list[str] | None = None) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(application, f"/ws?id={client_id}", subprotocols=subprotocols)
        opened.append(communicator)
        connected, _ = await communicator.connect()
        assert connected, f"the handshake of {client_id!r} was refused"
        return communicator

    yield open_connection
    for communicator in opened:
        if not communicator.future.cancelled():  # a receive that timed out cancels the application
            await communicator.disconnect()


@pytest.fixture
async def open_socket():
    """Attempt handshakes with ``await open_socket(path, headers=..., subprotocols=...)``.

    Returns ``(accepted, communicator)``, for handshakes that may be refused (tokens,
    sessions, origins). Every communicator is disconnected when the test ends.
    """
    opened: list[WebsocketCommunicator] = []

    async def attempt(
        path: str, headers: list[tuple[bytes, bytes]] | None = None, subprotocols: list[str] | None = None
    ) -> tuple[bool, WebsocketCommunicator]:
        communicator = WebsocketCommunicator(application, path, headers=headers, subprotocols=subprotocols)
        opened.append(communicator)
        accepted, _ = await communicator.connect()
        return accepted, communicator

    yield attempt
    for communicator in opened:
        if not communicator.future.cancelled():
            await communicator.disconnect()


@pytest.fixture
def logged_in(django_user_model, client) -> tuple[Any, tuple[bytes, bytes]]:
    """A user logged in to the site: ``(user, cookie_header)``, the header for a WebSocket handshake.

    Needs ``pytest.mark.django_db(transaction=True)``: the handshake reads the session
    and the user from another thread.
    """
    user = django_user_model.objects.create_user("site-user")
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    return user, (b"cookie", f"{name}={client.cookies[name].value}".encode())


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis at REDIS_URL; a test that needs it FAILS (does not skip) when none answers."""
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        pytest.fail(
            f"No Redis answers at REDIS_URL={url} ({exc}). The end-to-end tests that use Redis "
            "need one: start redis-server or set REDIS_URL. They fail rather than skip.",
            pytrace=False,
        )
    return url
