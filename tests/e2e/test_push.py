"""``manage.py relay_send`` against a running server, and idle connections that still work."""

import asyncio
import json

import pytest

from .conftest import SUBPROTOCOL_V1, assert_all_silent, numeric_id, run_manage_sync, run_relay_send

IDLE_SECONDS = 7  # longer than redis-py 8's default 5 s socket timeout (channels_redis#422)


def assert_clean_failure(result, *expected: str) -> None:
    """The command failed with a message naming ``expected``, and no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    for text in expected:
        assert text.lower() in result.stderr.lower(), result.stderr


async def test_relay_send_reaches_both_framings(server, connect, uid):
    raw = await connect(server, uid("raw"))
    enveloped = await connect(server, uid("v1"), subprotocol=SUBPROTOCOL_V1)
    bystander = await connect(server, uid("bystander"))
    payload = {"notice": "deploy at 5", "n": [1, 2]}

    result = await run_relay_send(server, raw.client_id, enveloped.client_id, "--payload", json.dumps(payload))

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert await raw.recv_json() == payload
    assert await enveloped.recv_json() == {"type": "message", "from": None, "payload": payload}
    await assert_all_silent([raw, enveloped, bystander])


async def test_relay_send_reads_the_payload_from_stdin(server, connect, uid):
    client = await connect(server, uid("stdin"))

    result = await run_relay_send(server, client.client_id, stdin='["from", "stdin"]\n')

    assert result.returncode == 0, result.stderr
    assert await client.recv_json() == ["from", "stdin"]
    await client.assert_silent()


async def test_relay_send_to_a_numeric_id_and_a_null_payload(server, connect):
    number = numeric_id()
    client = await connect(server, number)

    result = await run_relay_send(server, str(number), "--payload", "null")

    assert result.returncode == 0, result.stderr
    assert await client.recv_text() == "null"


async def test_relay_send_to_every_connection_of_an_id(server, connect, uid):
    target = uid("devices")
    devices = [await connect(server, target), await connect(server, target, subprotocol=SUBPROTOCOL_V1)]

    result = await run_relay_send(server, target, target, "--payload", '"once"')

    assert result.returncode == 0, result.stderr
    assert await devices[0].recv_json() == "once"
    assert await devices[1].recv_json() == {"type": "message", "from": None, "payload": "once"}
    await assert_all_silent(devices)


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["--payload", "{not json"], None, "JSON"),
        (["--payload", "NaN"], None, "JSON"),
        ([], "", "JSON"),
        ([], "{broken", "JSON"),
    ],
    ids=["not JSON", "NaN", "empty stdin", "bad stdin"],
)
async def test_relay_send_refuses_a_bad_payload(server, connect, uid, args, stdin, expected):
    client = await connect(server, uid("target"))

    result = await run_relay_send(server, client.client_id, *args, stdin=stdin)

    assert_clean_failure(result, expected)
    await client.assert_silent()


async def test_relay_send_refuses_a_bad_target(server, connect, uid):
    client = await connect(server, uid("target"))

    result = await run_relay_send(server, client.client_id, "not an id", "--payload", "1")

    assert_clean_failure(result, "not an id")
    await client.assert_silent()


async def test_relay_send_without_redis_says_it_cannot_reach_the_server(memory_server, connect, uid):
    client = await connect(memory_server, uid("memory"))
    assert "REDIS_URL" not in memory_server.env

    result = await run_relay_send(memory_server, client.client_id, "--payload", '{"x": 1}')

    assert_clean_failure(result, "in-memory", "REDIS_URL", "cannot reach")
    await client.assert_silent()


async def test_idle_connections_still_receive_messages_and_pushes(start_server, connect, uid):
    """After ~7 s with no traffic at all, a client message and a relay_send push both arrive."""
    idle_server = start_server(name="idle")  # fresh: no other test's traffic keeps its Redis links busy
    raw = await connect(idle_server, uid("raw"))
    enveloped = await connect(idle_server, uid("v1"), subprotocol=SUBPROTOCOL_V1)
    sender = await connect(idle_server, uid("sender"))

    await asyncio.sleep(IDLE_SECONDS)

    await sender.send_json({"targets": [raw.client_id, enveloped.client_id], "payload": "after idle"})
    assert await raw.recv_json() == "after idle"
    assert await enveloped.recv_json() == {"type": "message", "from": sender.client_id, "payload": "after idle"}

    result = await run_relay_send(idle_server, raw.client_id, enveloped.client_id, "--payload", '"pushed"')
    assert result.returncode == 0, result.stderr
    assert await raw.recv_json() == "pushed"
    assert await enveloped.recv_json() == {"type": "message", "from": None, "payload": "pushed"}

    await assert_all_silent([raw, enveloped, sender])
    assert idle_server.events("disconnect", client=raw.client_id) == []
    assert idle_server.log_lines("Timeout reading") == []


#: Plain Channels code of the site's own, as the README's "Plain Channels" recipe writes it.
GROUP_SEND = """
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
send = async_to_sync(get_channel_layer().group_send)
for n in range(3):
    send("relay.{client_id}", {{"type": "relay.deliver", "payload": {{"n": n}}, "from": None}})
send("relay.{client_id}", {{"type": "relay.deliver", "payload_json": '"encoded"'}})
"""


@pytest.mark.parametrize(
    "settings",
    [{}, {"RELAY_HISTORY": "0"}, {"RELAY_GROUPS_ON_BUS": "0"}],
    ids=["groups on the bus", "without history", "groups through the layer"],
)
async def test_a_plain_channels_group_send_from_another_process_reaches_every_connection(
    start_server, connect, uid, settings
):
    """The README's "Plain Channels": any Channels code reaches every connection of an id, in order."""
    a = start_server(name="group-a", env=settings)
    b = start_server(name="group-b", env=settings)
    client_id = uid("grouped")
    clients = [
        await connect(a, client_id, subprotocol=SUBPROTOCOL_V1),
        await connect(a, client_id),
        await connect(b, client_id, subprotocol=SUBPROTOCOL_V1),
    ]
    bystander = await connect(a, uid("bystander"))
    result = await asyncio.to_thread(run_manage_sync, a, "shell", "-c", GROUP_SEND.format(client_id=client_id))
    assert result.returncode == 0, result.stderr
    pushes = [{"n": 0}, {"n": 1}, {"n": 2}, "encoded"]
    for client in clients:
        received = await client.recv_many(4)
        if client.subprotocol == SUBPROTOCOL_V1:
            assert received == [{"type": "message", "from": None, "payload": p} for p in pushes], client
        else:
            assert received == pushes, client
    await assert_all_silent([*clients, bystander])
