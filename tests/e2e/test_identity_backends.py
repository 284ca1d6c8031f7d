"""RELAY_IDENTITY_BACKENDS at a real daphne: a site's own backend first, the built-ins after it.

The server runs ``tests.e2e.identity_settings``: a signed ``?ticket=`` naming a user in
the server's database (``tests/e2e/identity_backends.py``, a sync backend using the ORM)
decides before tokens, sessions and ``?id=``.
"""

import asyncio
import time
import uuid

import jwt
import pytest
from django.core import signing
from websockets.exceptions import InvalidStatus

from .conftest import SUBPROTOCOL_V1, TEST_SECRET, Client, Server, assert_all_silent, open_ws, run_manage_sync
from .test_security import STAFF_USERS_SCRIPT, closed_with, log_in_over_http, log_out_over_http, manage_output

CREATE_USER = """
from django.contrib.auth import get_user_model
get_user_model().objects.create_user(username={username!r})
"""


@pytest.fixture(scope="module")
def identity_server(start_server) -> Server:
    return start_server(name="identity", env={"DJANGO_SETTINGS_MODULE": "tests.e2e.identity_settings"})


@pytest.fixture
async def open_client():
    """Factory: ``await open_client(server, expected_id, query)``, a relay.v1 client closed after the test."""
    clients: list[Client] = []

    async def _open(server: Server, expected_id: str, query: str) -> Client:
        client = Client(await open_ws(server, query, subprotocols=[SUBPROTOCOL_V1]), expected_id)
        clients.append(client)
        return client

    yield _open
    for client in clients:
        await client.close()


async def assert_is(client: Client, observer: Client) -> None:
    """``client`` receives what is sent to its id and is shown as it when it sends."""
    marker = uuid.uuid4().hex
    await observer.send_json({"targets": [client.client_id], "payload": marker})
    assert await client.recv_json() == {"type": "message", "from": observer.client_id, "payload": marker}
    await client.send_json({"targets": [observer.client_id], "payload": marker})
    assert await observer.recv_json() == {"type": "message", "from": client.client_id, "payload": marker}
    await assert_all_silent([client, observer], 0.1)


def ticket(username: str) -> str:
    """A ticket the way the site's views mint one, signed with the servers' SECRET_KEY."""
    return signing.dumps(username, key=TEST_SECRET, salt="relay.ticket")


async def assert_refused(server: Server, query: str, reason: str) -> None:
    """HTTP 403, and one more ``event=refused`` line with ``reason`` in the server's log."""
    before = len(server.events("refused", reason=reason))
    with pytest.raises(InvalidStatus) as refused:
        async with open_ws(server, query):
            pass
    assert refused.value.response.status_code == 403
    assert len(await server.wait_for_events("refused", before + 1, reason=reason)) == before + 1


async def test_a_site_backend_decides_first_and_the_built_ins_still_work(identity_server, open_client, uid):
    username = uid("ticket-user")
    created = run_manage_sync(identity_server, "shell", "-v", "0", "-c", CREATE_USER.format(username=username))
    assert created.returncode == 0, created.stderr
    observer = await open_client(identity_server, uid("observer"), f"id={uid('observer')}")

    # A ticket of an existing user: that username, even with an ?id= claiming another id.
    by_ticket = await open_client(identity_server, username, f"ticket={ticket(username)}&id={uid('claimed')}")
    await assert_is(by_ticket, observer)
    assert len(identity_server.events("connect", client=username)) == 1
    assert identity_server.events("connect", client=uid("claimed")) == []

    # A ticket of nobody, or a forged one: refused with the backend's reasons, never a fall-through to ?id=.
    await assert_refused(identity_server, f"ticket={ticket(uid('nobody'))}&id={uid('fallback')}", "unknown_user")
    assert uid("nobody") in identity_server.log_lines("reason=unknown_user")[-1]
    forged = signing.dumps(username, key="not-the-servers-secret-key-0123456789", salt="relay.ticket")
    await assert_refused(identity_server, f"ticket={forged}&id={uid('fallback')}", "bad_ticket")
    assert identity_server.events("connect", client=uid("fallback")) == []

    # No ticket: the built-in token backend decides, as by default.
    token = jwt.encode({"sub": uid("token-user"), "exp": int(time.time()) + 60}, TEST_SECRET, algorithm="HS256")
    by_token = await open_client(identity_server, uid("token-user"), f"token={token}")
    await assert_is(by_token, observer)
    assert len(identity_server.events("connect", client=uid("token-user"))) == 1


@pytest.fixture(scope="module")
def second_identity_server(start_server, identity_server) -> Server:
    """Another process with the same settings, Redis and database."""
    return start_server(name="identity-b", env={"DJANGO_SETTINGS_MODULE": "tests.e2e.identity_settings"})


async def test_logging_out_closes_the_sockets_a_site_backend_opened_with_the_session(
    identity_server, second_identity_server
):
    """The finding: a logout closed only the client ids of SessionBackend and its subclasses, though a site's
    own backend may name the session too (here ``account-<username>``)."""
    username = f"e2e-account-{uuid.uuid4().hex[:8]}"
    password = "e2e-a-Passphrase-4711"
    manage_output(
        identity_server, "shell", "-v", "0", "-c", STAFF_USERS_SCRIPT.format(password=password, usernames=[username])
    )
    session = await asyncio.to_thread(log_in_over_http, identity_server, username, password)
    cookie = {"Cookie": f"sessionid={session}"}
    sockets = [
        Client(await open_ws(server, "as=account", headers=cookie), f"account-{username}")
        for server in (identity_server, second_identity_server)
    ]
    for server in (identity_server, second_identity_server):
        assert await server.wait_for_events("connect", client=f"account-{username}")

    assert await asyncio.to_thread(log_out_over_http, second_identity_server, session) == 200

    assert [await closed_with(socket) for socket in sockets] == [4401, 4401]
