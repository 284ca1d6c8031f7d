"""Shared fixtures for the in-process tests: WebSocket clients, a fresh channel layer, a recording layer."""

import json
from typing import Any

import pytest
from channels.layers import BaseChannelLayer, channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator

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
