"""The WebSocket handshake with ``?id=``: who is accepted as whom, and what is refused."""

import json

import pytest
from channels.testing import WebsocketCommunicator

from relayproject.asgi import application
from tests.conftest import frame, send_text


async def handshake(path: str) -> tuple[bool, WebsocketCommunicator]:
    communicator = WebsocketCommunicator(application, path, subprotocols=["relay.v1"])
    connected, _ = await communicator.connect()
    return connected, communicator


@pytest.mark.parametrize(
    ("path", "client_id"),
    [
        ("/ws?id=alice", "alice"),
        ("/ws/?id=alice", "alice"),
        ("/ws?id=2", "2"),
        ("/ws?id=A-z_0.9", "A-z_0.9"),
        ("/ws?id=%41b", "Ab"),
        ("/ws?id=" + "x" * 64, "x" * 64),
        ("/ws?other=1&id=alice", "alice"),
    ],
)
async def test_query_id_is_the_identity(path, client_id):
    connected, communicator = await handshake(path)
    assert connected
    await send_text(communicator, frame([client_id], "me"))
    assert json.loads(await communicator.receive_from()) == {"type": "message", "from": client_id, "payload": "me"}
    await communicator.disconnect()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/ws", id="missing-id"),
        pytest.param("/ws?other=alice", id="other-parameter"),
        pytest.param("/ws?id=", id="empty-id"),
        pytest.param("/ws?id=a%20b", id="space"),
        pytest.param("/ws?id=a+b", id="plus-space"),
        pytest.param("/ws?id=a/b", id="slash"),
        pytest.param("/ws?id=%C3%A9", id="non-ascii"),
        pytest.param("/ws?id=" + "x" * 65, id="too-long"),
        pytest.param("/ws?id=alice&id=bob", id="two-ids"),
        pytest.param("/ws?id=alice&id=alice", id="same-id-twice"),
        pytest.param("/?id=alice", id="root-path"),
        pytest.param("/other?id=alice", id="unknown-path"),
        pytest.param("/ws/extra?id=alice", id="sub-path"),
        pytest.param("/wss?id=alice", id="prefix-path"),
        pytest.param("/ws//?id=alice", id="double-slash"),
    ],
)
async def test_handshake_refused(path):
    connected, communicator = await handshake(path)
    assert connected is False
    await communicator.disconnect()


async def test_query_id_refused_when_open_mode_is_off(settings):
    settings.RELAY_ALLOW_QUERY_ID = False
    connected, communicator = await handshake("/ws?id=alice")
    assert connected is False
    await communicator.disconnect()


@pytest.mark.parametrize("debug", [True, False])
async def test_open_mode_defaults_to_debug(settings, debug):
    del settings.RELAY_ALLOW_QUERY_ID
    settings.DEBUG = debug
    connected, communicator = await handshake("/ws?id=alice")
    assert connected is debug
    await communicator.disconnect()
