"""One client's or one stranger's trouble never reaches another client (found in review)."""

import asyncio
import json
import os
import signal
import struct

import redis

from .conftest import NO_RATE_LIMIT, REDIS_KEY_PREFIX, raw_websocket


async def test_sending_to_a_connection_that_is_closing_never_hurts_the_sender(server, connect, uid):
    sender = await connect(server, uid("sender"))
    closing_id = uid("closing")
    sock, answer = raw_websocket(server.port, f"id={closing_id}")
    assert answer.startswith(b"HTTP/1.1 101 ")
    await asyncio.sleep(0.2)
    # A masked frame header announcing 2 MB, over daphne's 1 MiB limit: the server sends
    # close 1009 and waits for the reply, so the connection sits in its closing state.
    sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack(">Q", 2_000_000) + os.urandom(4))
    await asyncio.sleep(0.05)
    try:
        for n in range(20):
            await sender.send_json({"targets": [closing_id, sender.client_id], "payload": n})
        assert await sender.recv_many(20) == list(range(20))  # its own copies: still open
        await sender.assert_silent()
    finally:
        sock.close()


async def test_garbage_on_a_bus_channel_does_not_stop_delivery_between_processes(
    server, start_server, connect, uid, redis_url
):
    receiver = await connect(server, uid("receiver"))
    sender = await connect(start_server(name="b"), uid("sender"))
    with redis.Redis.from_url(redis_url) as client:
        assert client.publish(f"{REDIS_KEY_PREFIX}:bus:{receiver.client_id}", b"not a relay frame") >= 1
        assert client.publish(f"{REDIS_KEY_PREFIX}:bus:{receiver.client_id}", b"\xff\xfe\n\xff\n\xff") >= 1
    await sender.send_json({"targets": [receiver.client_id], "payload": "still flowing"})
    assert await receiver.recv_json() == "still flowing"
    assert len(await server.wait_for_events("bus_frame_ignored", count=2)) == 2


async def test_a_client_that_closes_while_messages_stream_to_it_never_hurts_the_sender(start_server, connect, uid):
    relay = start_server(name="churn", env=NO_RATE_LIMIT)
    sender = await connect(relay, uid("sender"))
    target = uid("target")

    async def stream() -> int:
        for n in range(2000):
            await sender.send_json({"targets": [target], "payload": n})
            if n % 50 == 0:
                await asyncio.sleep(0)
        await sender.send_json({"targets": [sender.client_id], "payload": "done"})
        return json.loads(await sender.recv_text(timeout=20)) == "done"

    async def churn() -> None:
        for _ in range(30):
            client = await connect(relay, target)
            await asyncio.sleep(0.005)
            await client.close()

    done, _ = await asyncio.gather(stream(), churn())
    assert done
    assert relay.log_lines("Exception inside application") == []


async def test_a_frozen_redis_is_noticed_and_senders_hear_unavailable(start_server, private_redis, connect, uid):
    store = private_redis()
    env = {"REDIS_URL": store.url}
    a, b = start_server(name="a", env=env), start_server(name="b", env=env)
    sender, target = await connect(a, uid("sender")), await connect(b, uid("target"))
    await sender.send_json({"targets": [target.client_id], "payload": 0})
    assert await target.recv_json() == 0
    store.process.send_signal(signal.SIGSTOP)  # the TCP connections stay up; nothing answers
    try:
        await sender.send_json({"targets": [target.client_id], "payload": 1, "id": "frozen"})
        # The reply deadline (5 s) drops the link: the frame is reported, not silently lost.
        error = await sender.recv_json(timeout=10)
        assert error["error"]["code"] == "unavailable"
        assert a.log_lines("no reply for 5 s; dropping the connection")
    finally:
        store.process.send_signal(signal.SIGCONT)
    deadline = asyncio.get_running_loop().time() + 15
    while True:  # back by itself: frames flow again without reconnecting the clients
        await sender.send_json({"targets": [target.client_id], "payload": "again"})
        try:
            assert await target.recv_json(timeout=1) == "again"
            break
        except AssertionError:
            assert asyncio.get_running_loop().time() < deadline, "frames did not flow again"
