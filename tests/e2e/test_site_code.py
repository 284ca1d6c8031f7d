"""The site's own code in real daphne processes: the example chat, order through a handler,
``relay.disconnect`` across processes, and a send policy that reads the database.
"""

import asyncio
import sqlite3
import uuid
from urllib.parse import urlsplit

import pytest
from websockets.exceptions import ConnectionClosed

from .conftest import NO_RATE_LIMIT, SUBPROTOCOL_V1, Client, Server, run_manage_sync

EXAMPLES = {"RELAY_EXAMPLES": "1", **NO_RATE_LIMIT}


@pytest.fixture(scope="module")
def chat_a(start_server) -> Server:
    return start_server(name="chat-a", env=EXAMPLES)


@pytest.fixture(scope="module")
def chat_b(start_server) -> Server:
    return start_server(name="chat-b", env=EXAMPLES)


def chat_rows(server: Server, room: str) -> list[tuple[str, str]]:
    """(sender, text) of a room's saved messages, oldest first, from the servers' database."""
    with sqlite3.connect(urlsplit(server.env["DATABASE_URL"]).path[1:]) as db:
        return db.execute("SELECT sender, text FROM chat_chatmessage WHERE room = ? ORDER BY id", (room,)).fetchall()


async def closed_with(client: Client) -> tuple[int | None, str]:
    try:
        while True:
            await asyncio.wait_for(client.ws.recv(), 10)
    except ConnectionClosed as closed:
        return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")


async def test_the_chat_example_saves_relays_and_answers_history(chat_a, chat_b, connect, uid):
    room = uid("room")
    alice = await connect(chat_a, uid("alice"), subprotocol=SUBPROTOCOL_V1)
    bob = await connect(chat_b, uid("bob"), subprotocol=SUBPROTOCOL_V1)
    await alice.send_json(
        {"targets": [bob.client_id, alice.client_id], "payload": {"type": "chat", "room": room, "text": "hi bob"}}
    )
    to_bob, to_alice = await bob.recv_json(), await alice.recv_json()
    assert to_bob == to_alice
    assert to_bob["from"] == alice.client_id
    saved = to_bob["payload"]
    assert (saved["type"], saved["room"], saved["from"], saved["text"]) == ("chat", room, alice.client_id, "hi bob")
    assert isinstance(saved["id"], int) and saved["at"]
    assert chat_rows(chat_a, room) == [(alice.client_id, "hi bob")]

    await bob.send_json({"call": "chat.history", "payload": {"room": room}, "id": "h1"})
    assert await bob.recv_json() == {"type": "reply", "ref": "h1", "payload": [saved]}

    await alice.send_json(
        {"targets": [bob.client_id], "payload": {"type": "chat", "room": room, "text": "  "}, "id": 2}
    )
    refused = await alice.recv_json()
    assert (refused["code"], refused["ref"]) == ("empty_message", 2)
    await bob.assert_silent()
    assert len(chat_rows(chat_a, room)) == 1
    assert chat_a.log_lines(f"chat: {alice.client_id} came in") and chat_b.log_lines(f"chat: {bob.client_id} came in")


async def test_a_thousand_frames_through_a_handler_arrive_in_order(chat_a, connect, uid):
    room = uid("order")
    alice, bob = await connect(chat_a, uid("alice")), await connect(chat_a, uid("bob"))
    for i in range(1000):
        await alice.send_json({"targets": [bob.client_id], "payload": {"type": "chat", "room": room, "text": f"m{i}"}})
    received = await bob.recv_many(1000, timeout=60)
    assert [payload["text"] for payload in received] == [f"m{i}" for i in range(1000)]
    assert [payload["id"] for payload in received] == sorted(payload["id"] for payload in received)
    assert [text for _, text in chat_rows(chat_a, room)] == [f"m{i}" for i in range(1000)]


async def test_disconnect_closes_every_connection_of_the_id_in_every_process(chat_a, chat_b, connect, uid):
    target = uid("banned")
    on_a = [await connect(chat_a, target), await connect(chat_a, target)]
    on_b = await connect(chat_b, target)
    bystander = await connect(chat_b, uid("bystander"))
    closes = [asyncio.create_task(closed_with(client)) for client in (*on_a, on_b)]
    result = await asyncio.to_thread(
        run_manage_sync, chat_a, "relay_disconnect", target, "--code", "4003", "--reason", "banned"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{target}: 2 process(es) holding its connections were told to close them."
    assert await asyncio.gather(*closes) == [(4003, "banned")] * 3
    await bystander.send_json({"targets": [bystander.client_id], "payload": "still here"})
    assert await bystander.recv_json() == "still here"
    nobody = await asyncio.to_thread(run_manage_sync, chat_a, "relay_disconnect", uid("nobody"))
    assert nobody.stdout.strip().endswith(": no connection open.")


async def test_a_send_policy_reading_the_database_closes_no_one(start_server, connect, uid):
    server = start_server(name="db-policy", env={"DJANGO_SETTINGS_MODULE": "tests.e2e.site_code_settings"})
    bob_name = f"user-{uuid.uuid4().hex[:10]}"
    created = await asyncio.to_thread(
        run_manage_sync,
        server,
        "shell",
        "-v",
        "0",
        "-c",
        f"from django.contrib.auth import get_user_model; get_user_model().objects.create_user({bob_name!r})",
    )
    assert created.returncode == 0, created.stderr
    alice = await connect(server, uid("alice"), subprotocol=SUBPROTOCOL_V1)
    bob = await connect(server, bob_name)
    ghost = uid("ghost")
    for i in range(3):
        await alice.send_json({"targets": [bob_name, ghost], "payload": i, "id": i})
        assert await alice.recv_json() == {
            "type": "error",
            "code": "forbidden",
            "detail": f"You may not send to {ghost}.",
            "ref": i,
        }
        assert await alice.recv_json() == {"type": "ack", "ref": i, "offsets": {bob_name: i + 1}}
        assert await bob.recv_json() == i
    assert not server.events("disconnect", client=alice.client_id)
