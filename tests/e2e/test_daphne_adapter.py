"""Under a daphne the relay's adapter does not know: one warning, and every close still works.

The server runs ``tests.e2e.unknown_daphne_settings``, which makes the adapter's check
fail as it would on a daphne that renamed its internals. Daphne's ASGI close refuses
1001, 1008 and 1013, so the relay sends 4001, 4008 and 4013 there (README, "Close codes").
"""

import asyncio
import signal

import pytest
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.server_internals, pytest.mark.servers("daphne")]


@pytest.fixture(scope="module")
def unknown_daphne(start_server):
    return start_server(
        redis=False, name="unknown-daphne", env={"DJANGO_SETTINGS_MODULE": "tests.e2e.unknown_daphne_settings"}
    )


async def closed_with(client) -> int | None:
    """Read until the server closes the connection; its close code."""
    try:
        while True:
            await asyncio.wait_for(client.ws.recv(), 10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_relaying_works_and_the_warning_is_logged_once(unknown_daphne, connect, uid):
    alice, bob = await connect(unknown_daphne, uid("alice")), await connect(unknown_daphne, uid("bob"))
    await alice.send_json({"targets": [bob.client_id], "payload": "still relayed"})
    assert await bob.recv_json() == "still relayed"
    warnings = unknown_daphne.log_lines("event=daphne_unknown")
    assert len(warnings) == 1, warnings
    assert "close codes 1001/1008/1009/1011/1013 are sent as 4001/4008/4009/4011/4013" in warnings[0]


async def test_abuse_is_closed_with_4008(unknown_daphne, connect, uid):
    sender = await connect(unknown_daphne, uid("flood"))
    for _ in range(30):
        await sender.send_json({"targets": [uid("nobody")], "payload": 1})
    assert await closed_with(sender) == 4008
    await asyncio.sleep(0.2)
    assert [e["code"] for e in unknown_daphne.events("disconnect", client=sender.client_id)] == ["1008"]


async def test_sigterm_closes_every_client_with_4001(start_server, connect, uid):
    server = start_server(
        redis=False, name="unknown-daphne-drain", env={"DJANGO_SETTINGS_MODULE": "tests.e2e.unknown_daphne_settings"}
    )
    clients = [await connect(server, uid(f"c{i}")) for i in range(5)]
    waiting = [asyncio.create_task(closed_with(client)) for client in clients]
    await asyncio.sleep(0.1)
    server.process.send_signal(signal.SIGTERM)
    assert await asyncio.gather(*waiting) == [4001] * 5
    assert await asyncio.to_thread(server.process.wait, 15) == 0
    assert "Traceback" not in server.log
