"""Delivery within one daphne process: fan-out, duplicates, ordering, disconnects, shutdown."""

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from .conftest import NO_RATE_LIMIT, SUBPROTOCOL_V1, assert_all_silent, numeric_id

ORDERED = 1000


@pytest.fixture(scope="module")
def unlimited(start_server):
    """A Redis-backed server without the per-connection rate limit, for bulk sends."""
    return start_server(name="unlimited", env=NO_RATE_LIMIT)


def expected(client, sender_id, payloads):
    """What ``client`` receives for ``payloads`` from ``sender_id``, in its framing."""
    if client.subprotocol == SUBPROTOCOL_V1:
        return [{"type": "message", "from": sender_id, "payload": payload} for payload in payloads]
    return list(payloads)


# --- many connections per id ------------------------------------------------------------


async def test_every_connection_of_an_id_gets_each_message_once(server, connect, uid):
    target = uid("devices")
    framings = [None, SUBPROTOCOL_V1, None, SUBPROTOCOL_V1, None]
    devices = [await connect(server, target, subprotocol=framing) for framing in framings]
    sender = await connect(server, uid("sender"))
    payloads = [{"n": n} for n in range(3)]

    for payload in payloads:
        await sender.send_json({"targets": [target], "payload": payload})

    for device in devices:
        assert await device.recv_many(len(payloads)) == expected(device, sender.client_id, payloads)
    await assert_all_silent([*devices, sender])


async def test_duplicate_targets_deliver_once(server, connect):
    number = numeric_id()
    raw = await connect(server, number)
    enveloped = await connect(server, str(number), subprotocol=SUBPROTOCOL_V1)
    sender = await connect(server, numeric_id())

    await sender.send_json({"targets": [number, str(number)], "payload": "once"})
    await sender.send_json({"targets": [str(number), number, str(number), number], "payload": "once more"})

    assert await raw.recv_many(2) == ["once", "once more"]
    assert await enveloped.recv_many(2) == expected(enveloped, sender.client_id, ["once", "once more"])
    await assert_all_silent([raw, enveloped, sender])


async def test_sending_to_your_own_id_reaches_all_your_connections(server, connect, uid):
    me = uid("me")
    laptop = await connect(server, me)
    phone = await connect(server, me, subprotocol=SUBPROTOCOL_V1)

    await laptop.send_json({"targets": [me], "payload": "sync"})

    assert await laptop.recv_json() == "sync"
    assert await phone.recv_json() == {"type": "message", "from": me, "payload": "sync"}
    await assert_all_silent([laptop, phone])


async def test_a_target_with_no_connection_is_not_an_error(server, connect, uid):
    """Live delivery is at most once to the connections open now: nobody there, nothing sent."""
    sender = await connect(server, uid("sender"))
    present = await connect(server, uid("present"))

    await sender.send_json({"targets": [uid("absent"), present.client_id], "payload": 1})

    assert await present.recv_json() == 1
    await assert_all_silent([sender, present])


# --- ordering ---------------------------------------------------------------------------


async def send_sequence(client, target, count, tag=None):
    for seq in range(count):
        await client.send_json({"targets": [target], "payload": {"seq": seq, "tag": tag}})


async def test_thousand_messages_arrive_complete_and_in_order(unlimited, connect, uid):
    sender = await connect(unlimited, uid("sender"))
    receiver = await connect(unlimited, uid("receiver"))

    sending = asyncio.create_task(send_sequence(sender, receiver.client_id, ORDERED))
    received = await receiver.recv_many(ORDERED, timeout=30)
    await sending

    assert [message["seq"] for message in received] == list(range(ORDERED))
    await assert_all_silent([sender, receiver])


async def test_order_holds_per_sender_when_senders_interleave(unlimited, connect, uid):
    receiver = await connect(unlimited, uid("receiver"))
    senders = [await connect(unlimited, uid(f"sender{n}")) for n in range(2)]

    await asyncio.gather(*(send_sequence(s, receiver.client_id, ORDERED // 2, tag=n) for n, s in enumerate(senders)))
    received = await receiver.recv_many(ORDERED, timeout=30)

    for n in range(2):
        assert [m["seq"] for m in received if m["tag"] == n] == list(range(ORDERED // 2))
    await assert_all_silent([receiver, *senders])


# --- disconnects ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "abort"])
async def test_other_connection_of_an_id_keeps_receiving(server, connect, uid, how):
    """One of two connections goes (clean close or dropped TCP); the other keeps getting everything."""
    target = uid("target")
    leaving = await connect(server, target)
    staying = await connect(server, target, subprotocol=SUBPROTOCOL_V1)
    sender = await connect(server, uid("sender"))

    if how == "close":
        await leaving.close()
    else:
        leaving.ws.transport.abort()
    # Right away, while the server may still be tearing the connection down ...
    for n in range(20):
        await sender.send_json({"targets": [target], "payload": n})
    assert await staying.recv_many(20) == expected(staying, sender.client_id, range(20))
    # ... and once it has.
    assert await server.wait_for_events("disconnect", client=target)
    await sender.send_json({"targets": [target], "payload": "later"})
    assert await staying.recv_json() == {"type": "message", "from": sender.client_id, "payload": "later"}
    await assert_all_silent([staying, sender])


async def test_an_id_that_reconnects_gets_new_messages_only(server, connect, uid):
    """After its last connection closed, an id rejoins cleanly; what was sent meanwhile is gone."""
    target = uid("target")
    sender = await connect(server, uid("sender"))
    first = await connect(server, target)
    await sender.send_json({"targets": [target], "payload": "before"})
    assert await first.recv_json() == "before"

    await first.close()
    assert await server.wait_for_events("disconnect", client=target)
    await sender.send_json({"targets": [target], "payload": "while away"})
    await sender.assert_silent(0.2)
    second = await connect(server, target)
    await sender.send_json({"targets": [target], "payload": "after"})

    assert await second.recv_json() == "after"
    await assert_all_silent([second, sender])


async def test_server_shutdown_closes_connections_with_1001(start_server, connect, uid):
    """SPEC §3: on shutdown (SIGTERM, as in a deploy) clients get close code 1001."""
    doomed = start_server(name="shutdown")
    clients = [
        await connect(doomed, uid("raw")),
        await connect(doomed, uid("v1"), subprotocol=SUBPROTOCOL_V1),
    ]

    stopping = asyncio.create_task(asyncio.to_thread(doomed.stop))  # SIGTERM; the clients keep reading
    try:
        for client in clients:
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv_text(timeout=10)
            assert closed.value.rcvd is not None, f"{client}: the server went away without a close frame"
            assert closed.value.rcvd.code == 1001
    finally:
        await stopping
