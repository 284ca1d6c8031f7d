"""Two daphne processes sharing the real Redis: one relay, whichever process a client is on."""

import asyncio
import json

import pytest

from .conftest import NO_RATE_LIMIT, SUBPROTOCOL_V1, assert_all_silent, run_relay_send

ORDERED = 1000


@pytest.fixture(scope="module")
def a(start_server):
    return start_server(name="a", env=NO_RATE_LIMIT)


@pytest.fixture(scope="module")
def b(start_server):
    return start_server(name="b", env=NO_RATE_LIMIT)


def delivered(client, sender_id, payload):
    """What ``client`` receives for ``payload`` from ``sender_id``, in its framing."""
    if client.subprotocol == SUBPROTOCOL_V1:
        return {"type": "message", "from": sender_id, "payload": payload}
    return payload


async def test_client_on_a_reaches_client_on_b_and_back(a, b, connect, uid):
    on_a = await connect(a, uid("on-a"))
    on_b = await connect(b, uid("on-b"), subprotocol=SUBPROTOCOL_V1)

    await on_a.send_json({"targets": [on_b.client_id], "payload": {"hop": "a->b"}})
    assert await on_b.recv_json() == delivered(on_b, on_a.client_id, {"hop": "a->b"})

    await on_b.send_json({"targets": [on_a.client_id], "payload": {"hop": "b->a"}})
    assert await on_a.recv_json() == {"hop": "b->a"}
    await assert_all_silent([on_a, on_b])


async def test_an_id_on_both_processes_gets_each_message_on_both_once(a, b, connect, uid):
    target = uid("both")
    devices = [
        await connect(a, target),
        await connect(a, target, subprotocol=SUBPROTOCOL_V1),
        await connect(b, target),
        await connect(b, target, subprotocol=SUBPROTOCOL_V1),
    ]
    sender_a = await connect(a, uid("sender-a"))
    sender_b = await connect(b, uid("sender-b"))

    await sender_a.send_json({"targets": [target], "payload": "from a"})
    await sender_b.send_json({"targets": [target], "payload": "from b"})

    for device in devices:
        received = await device.recv_many(2)
        expected = [delivered(device, sender_a.client_id, "from a"), delivered(device, sender_b.client_id, "from b")]
        # Two senders: each one's frames are ordered, the two are not ordered between them.
        assert sorted(received, key=json.dumps) == sorted(expected, key=json.dumps)
    await assert_all_silent([*devices, sender_a, sender_b])


async def test_one_frame_reaches_targets_spread_over_both_processes(a, b, connect, uid):
    targets = {
        "a1": await connect(a, uid("a1")),
        "a2": await connect(a, uid("a2"), subprotocol=SUBPROTOCOL_V1),
        "b1": await connect(b, uid("b1")),
        "b2": await connect(b, uid("b2"), subprotocol=SUBPROTOCOL_V1),
    }
    split = uid("split")
    split_a = await connect(a, split)
    split_b = await connect(b, split)
    receivers = [*targets.values(), split_a, split_b]

    for server in (a, b):
        sender = await connect(server, uid(f"sender-{server.name}"))
        ids = [client.client_id for client in targets.values()] + [split, uid("nobody")]
        await sender.send_json({"targets": ids, "payload": {"via": server.name}})
        for client in receivers:
            assert await client.recv_json() == delivered(client, sender.client_id, {"via": server.name})
        await sender.assert_silent(0.1)
    await assert_all_silent(receivers)


@pytest.mark.parametrize("direction", ["a->b", "b->a"])
async def test_thousand_messages_across_processes_arrive_in_order(a, b, connect, uid, direction):
    """1,000 frames from one sender: in order on the other process and on the sender's own."""
    home, away = (a, b) if direction == "a->b" else (b, a)
    target = uid("target")
    remote = await connect(away, target)
    local = await connect(home, target)
    sender = await connect(home, uid("sender"))

    async def send_all():
        for seq in range(ORDERED):
            await sender.send_json({"targets": [target], "payload": seq})

    sending = asyncio.create_task(send_all())
    remote_got, local_got = await asyncio.gather(remote.recv_many(ORDERED, 30), local.recv_many(ORDERED, 30))
    await sending

    assert remote_got == list(range(ORDERED))
    assert local_got == list(range(ORDERED))
    await assert_all_silent([remote, local, sender])


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_disconnect_on_one_process_leaves_the_other_and_both_keep_working(a, b, connect, uid, how):
    target = uid("target")
    on_a = await connect(a, target)
    on_b = await connect(b, target)
    sender_a = await connect(a, uid("sender-a"))
    sender_b = await connect(b, uid("sender-b"))

    if how == "close":
        await on_a.close()
    else:
        on_a.ws.transport.abort()
    assert await a.wait_for_events("disconnect", client=target)

    await sender_a.send_json({"targets": [target], "payload": "from a"})
    assert await on_b.recv_json() == "from a"
    await sender_b.send_json({"targets": [target], "payload": "from b"})
    assert await on_b.recv_json() == "from b"

    # Process A keeps working: for the id that left it, and for others.
    back_on_a = await connect(a, target)
    other_on_a = await connect(a, uid("other"))
    await sender_b.send_json({"targets": [target, other_on_a.client_id], "payload": "again"})
    for client in (on_b, back_on_a, other_on_a):
        assert await client.recv_json() == "again"
    await assert_all_silent([on_b, back_on_a, other_on_a, sender_a, sender_b])


async def test_relay_send_reaches_connections_on_both_processes(a, b, connect, uid):
    target = uid("pushed")
    devices = [await connect(a, target), await connect(b, target, subprotocol=SUBPROTOCOL_V1)]
    other = await connect(b, uid("other"))

    result = await run_relay_send(a, target, "--payload", '{"notice": 1}')

    assert result.returncode == 0, result.stderr
    assert await devices[0].recv_json() == {"notice": 1}
    assert await devices[1].recv_json() == {"type": "message", "from": None, "payload": {"notice": 1}}
    await assert_all_silent([*devices, other])
