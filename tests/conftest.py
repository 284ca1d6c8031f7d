"""Shared fixtures for the in-process tests: WebSocket clients, a fresh channel layer, a recording layer."""

import json
from typing import Any

import pytest
from channels.layers import BaseChannelLayer, channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings

from relayproject.asgi import application


def frame(targets: Any, payload: Any = None, **extra: Any) -> str:
    """A client frame ``{"targets": ..., "payload": ..., **extra}`` as JSON text, not ASCII-escaped."""
    return json.dumps({"targets": targets, "payload": payload, **extra}, ensure_ascii=False)


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
