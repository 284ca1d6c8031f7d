"""Identity and abuse limits at a real daphne: tokens, sessions, origins, ``?id=``, rate, policy, size.

Every refusal is checked where a client meets it: HTTP 403 at the handshake, exactly one
``event=refused`` log line with the reason, and no consumer for the id it claimed. Every
identity that is accepted is checked by what it does: the connection receives what is
sent to that id, and ``relay.v1`` receivers see that id as ``from``.
"""

import asyncio
import base64
import json
import os
import struct
import time
import urllib.error
import urllib.request
import uuid

import jwt
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import (
    LIVE_SERVERS,
    START_TIMEOUT,
    SUBPROTOCOL_V1,
    Client,
    Server,
    assert_all_silent,
    free_port,
    open_ws,
    raw_websocket,
    run_manage_sync,
    site_env,
    traceback_report,
)

# 64+ bytes, so that PyJWT signs HS512 with it without warning (the test must only fail on the server side).
TOKEN_SECRET = "e2e-security-relay-token-secret-shared-with-backends-0123456789abcdef"
WRONG_SECRET = "e2e-security-some-other-secret-nobody-shares-with-relay-0123456789ab"
PRODUCTION_SECRET_KEY = "e2e-production-secret-key-" + "k" * 40


# --- tokens ----------------------------------------------------------------------------


def mint(claims: dict, secret: str = TOKEN_SECRET, algorithm: str = "HS256") -> str:
    """A JWT minted the way a non-Django backend would: plain PyJWT."""
    return jwt.encode(claims, secret, algorithm=algorithm)


def expires_in(seconds: int) -> int:
    return int(time.time()) + seconds


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def tampered(sub: str) -> str:
    """A token signed for someone else, its payload rewritten to claim ``sub``."""
    header, _, signature = mint({"sub": "someone-else", "exp": expires_in(600)}).split(".")
    return f"{header}.{b64url({'sub': sub, 'exp': expires_in(600)})}.{signature}"


def unsigned(sub: str) -> str:
    """The classic forgery: ``alg: none`` and no signature."""
    return f"{b64url({'alg': 'none', 'typ': 'JWT'})}.{b64url({'sub': sub, 'exp': expires_in(600)})}."


# name -> (token claiming ``sub``, what the refusal's log line says)
BAD_TOKENS = {
    "tampered payload": (tampered, "Signature verification failed"),
    "expired": (lambda sub: mint({"sub": sub, "exp": expires_in(-60)}), "Signature has expired"),
    "alg none": (unsigned, "The specified alg value is not allowed"),
    "wrong secret": (lambda sub: mint({"sub": sub, "exp": expires_in(600)}, WRONG_SECRET), "Signature verification"),
    "HS512": (lambda sub: mint({"sub": sub, "exp": expires_in(600)}, algorithm="HS512"), "alg value is not allowed"),
    "missing exp": (lambda sub: mint({"sub": sub}), 'Token is missing the "exp" claim'),
    "missing sub": (lambda sub: mint({"exp": expires_in(600), "client": sub}), 'Token is missing the "sub" claim'),
    "sub with a space": (lambda sub: mint({"sub": f"{sub} x", "exp": expires_in(600)}), "sub is not a valid client id"),
    "sub of 65 characters": (
        lambda sub: mint({"sub": (sub + "x" * 65)[:65], "exp": expires_in(600)}),
        "sub is not a valid client id",
    ),
    "sub true": (lambda sub: mint({"sub": True, "exp": expires_in(600)}), "sub is not a valid client id"),
    "not a JWT": (lambda sub: f"{sub}.not.a-jwt", "Invalid header"),
}


# --- connecting with headers, origins, tokens ----------------------------------------------


def open_socket(server: Server, query: str = "", *, headers=None, origin: str | None = None, subprotocol=None):
    """A ``websockets`` connect call with the handshake under the test's control."""
    return open_ws(server, query, headers=headers, origin=origin, subprotocols=[subprotocol] if subprotocol else None)


@pytest.fixture
async def open_client():
    """Factory: ``await open_client(server, expected_id, query=..., headers=..., origin=...)``; closed after."""
    clients: list[Client] = []

    async def _open(server: Server, expected_id: str, query: str = "", **handshake) -> Client:
        client = Client(await open_socket(server, query, **handshake), expected_id)
        clients.append(client)
        return client

    yield _open
    for client in clients:
        try:
            await client.close()
        except ConnectionClosed:
            pass


async def assert_refused(server: Server, reason: str, query: str = "", *, detail: str = "", **handshake) -> None:
    """The handshake gets HTTP 403, and the server logs exactly one refusal with ``reason``."""
    before = len(server.events("refused"))

    with pytest.raises(InvalidStatus) as refused:
        async with open_socket(server, query, **handshake):
            pass

    assert refused.value.response.status_code == 403
    await server.wait_for_events("refused", before + 1)
    await asyncio.sleep(0.05)  # a second line would be written with the first
    refusals = server.events("refused")[before:]
    assert [event["reason"] for event in refusals] == [reason]
    # The detail is one quoted field of the line (relay.logs.field): read back as it was written.
    assert detail in refusals[0]["detail"], refusals[0]


async def assert_identity(server: Server, client: Client, observer: Client, connects: int = 1) -> None:
    """``client`` is ``client.client_id``: it gets what is sent to that id and is shown as it.

    ``connects``: how many connections of that id the server has logged by now.
    """
    marker = uuid.uuid4().hex
    await observer.send_json({"targets": [client.client_id], "payload": {"to": marker}})
    received = await client.recv_json()
    if client.subprotocol == SUBPROTOCOL_V1:
        received = received["payload"]
    assert received == {"to": marker}

    await client.send_json({"targets": [observer.client_id], "payload": {"from": marker}})
    assert await observer.recv_json() == {"type": "message", "from": client.client_id, "payload": {"from": marker}}
    await assert_all_silent([client, observer], 0.1)
    assert len(server.events("connect", client=client.client_id)) == connects


def manage_output(server: Server, *args: str) -> str:
    """Run ``manage.py ARGS`` with the server's environment; its standard output (it must succeed)."""
    result = run_manage_sync(server, *args)
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


# --- servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens_server(start_server) -> Server:
    """DEBUG on (``?id=`` allowed, for observers), tokens signed with RELAY_TOKEN_SECRET."""
    return start_server(name="tokens", env={"RELAY_TOKEN_SECRET": TOKEN_SECRET})


class ProductionServer(Server):
    """A server with DEBUG off: ``?id=`` is refused, so readiness is read from /relay/healthz."""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self} exited with {self.process.returncode}:\n{self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/relay/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        raise RuntimeError(f"{self} did not answer /relay/healthz in {START_TIMEOUT}s:\n{self.log}")


@pytest.fixture(scope="module")
def production_server(tmp_path_factory, database_url, redis_url):
    """``DEBUG=0`` with a real SECRET_KEY and ALLOWED_HOSTS, as the README's deploy section."""
    env = site_env(
        DEBUG="0",
        SECRET_KEY=PRODUCTION_SECRET_KEY,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        RELAY_TOKEN_SECRET=TOKEN_SECRET,
    )
    server = ProductionServer("production", free_port(), env, tmp_path_factory.mktemp("daphne") / "production.log")
    LIVE_SERVERS.append(server)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        LIVE_SERVERS.remove(server)
    assert "Traceback" not in server.log, traceback_report(server, server.log)


@pytest.fixture(scope="module")
def limits_server(start_server) -> Server:
    """Bursts of 10 frames (10/m), 1008 after 5 refused in a row; the server's 128 KiB frame limit."""
    return start_server(
        name="limits", env={"DJANGO_SETTINGS_MODULE": "tests.e2e.rate_limit_settings"}, max_frame_bytes=128 * 1024
    )


@pytest.fixture(scope="module")
def same_id_server(start_server) -> Server:
    """RELAY_SEND_POLICY = relay.server.policies.SameIdOnly."""
    return start_server(name="same-id", env={"DJANGO_SETTINGS_MODULE": "tests.e2e.send_policy_settings"})


# --- tokens: refused ----------------------------------------------------------------------


@pytest.mark.parametrize("case", BAD_TOKENS)
async def test_bad_token_is_refused_at_the_handshake(tokens_server, uid, case):
    build, detail = BAD_TOKENS[case]
    sub = uid("victim")

    await assert_refused(tokens_server, "invalid_token", f"token={build(sub)}", detail=detail)

    assert tokens_server.events("connect", client=sub) == []


async def test_bad_token_in_the_authorization_header_is_refused(tokens_server, uid):
    sub = uid("victim")
    headers = {"Authorization": f"Bearer {tampered(sub)}"}

    await assert_refused(tokens_server, "invalid_token", headers=headers, detail="Signature verification failed")

    assert tokens_server.events("connect", client=sub) == []


async def test_bad_token_does_not_fall_through_to_the_query_id(tokens_server, uid):
    """``?id=`` is on here, and still a present but invalid token refuses the handshake."""
    sub = uid("victim")
    token = mint({"sub": sub, "exp": expires_in(-60)})

    await assert_refused(tokens_server, "invalid_token", f"token={token}&id={sub}", detail="expired")

    assert tokens_server.events("connect", client=sub) == []


async def test_two_tokens_in_the_query_are_refused(tokens_server, uid):
    sub = uid("twice")
    token = mint({"sub": sub, "exp": expires_in(600)})

    await assert_refused(tokens_server, "ambiguous", f"token={token}&token={token}")

    assert tokens_server.events("connect", client=sub) == []


# --- tokens: accepted ---------------------------------------------------------------------


async def test_pyjwt_token_in_the_query(tokens_server, connect, open_client, uid):
    sub = uid("query-token")
    token = mint({"sub": sub, "exp": expires_in(600)})
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)

    client = await open_client(tokens_server, sub, f"token={token}")

    await assert_identity(tokens_server, client, observer)


async def test_pyjwt_token_in_the_authorization_header(tokens_server, connect, open_client, uid):
    sub = uid("header-token")
    token = mint({"sub": sub, "exp": expires_in(600)})
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)

    client = await open_client(
        tokens_server, sub, headers={"Authorization": f"Bearer {token}"}, subprotocol=SUBPROTOCOL_V1
    )

    assert client.subprotocol == SUBPROTOCOL_V1
    await assert_identity(tokens_server, client, observer)


async def test_token_beats_the_query_id(tokens_server, connect, open_client, uid):
    """First match wins: the token's sub, not the ``?id=`` next to it."""
    sub, claimed = uid("token-sub"), uid("query-id")
    token = mint({"sub": sub, "exp": expires_in(600)})
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)

    client = await open_client(tokens_server, sub, f"id={claimed}&token={token}")

    await assert_identity(tokens_server, client, observer)
    assert tokens_server.events("connect", client=claimed) == []


async def test_integer_sub_means_its_decimal_id(tokens_server, connect, open_client, uid):
    number = uuid.uuid4().int % 10**15 + 10**14
    token = mint({"sub": number, "exp": expires_in(600)})
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)

    client = await open_client(tokens_server, str(number), f"token={token}")

    await assert_identity(tokens_server, client, observer)


async def test_expiry_within_the_leeway_is_accepted(tokens_server, connect, open_client, uid):
    """RELAY_TOKEN_LEEWAY (10 s) of clock skew: a token that expired 3 s ago still connects."""
    sub = uid("skewed")
    token = mint({"sub": sub, "exp": expires_in(-3)})
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)

    client = await open_client(tokens_server, sub, f"token={token}")

    await assert_identity(tokens_server, client, observer)


async def test_relay_token_command_output_connects(tokens_server, connect, open_client, uid):
    sub = uid("command-token")

    token = (await asyncio.to_thread(manage_output, tokens_server, "relay_token", sub, "--ttl", "120")).strip()

    claims = jwt.decode(token, TOKEN_SECRET, algorithms=["HS256"])
    assert claims["sub"] == sub
    assert claims["exp"] - claims["iat"] == 120
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)
    client = await open_client(tokens_server, sub, headers={"Authorization": f"Bearer {token}"})
    await assert_identity(tokens_server, client, observer)


# --- the Django session ---------------------------------------------------------------------

SESSION_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
user = get_user_model().objects.create_user(id={pk}, username={username!r})
client = Client()
client.force_login(user)
print(json.dumps({{"pk": user.pk, "sessionid": client.cookies["sessionid"].value}}))
"""


@pytest.fixture(scope="module")
def session_user(tokens_server) -> dict:
    """A user logged in to the site (in the servers' database): ``{"pk": ..., "sessionid": ...}``."""
    # A random pk: client ids are shared with whatever else uses this Redis at the same time.
    pk = uuid.uuid4().int % 10**9 + 10**9
    script = SESSION_SCRIPT.format(pk=pk, username=f"e2e-session-{uuid.uuid4().hex[:8]}")
    user = json.loads(manage_output(tokens_server, "shell", "-v", "0", "-c", script).strip().splitlines()[-1])
    assert user["pk"] == pk
    return user


def cookie(session_user: dict) -> dict[str, str]:
    return {"Cookie": f"sessionid={session_user['sessionid']}"}


async def test_session_cookie_connects_as_the_user(tokens_server, session_user, connect, open_client, uid):
    """No Origin header: not a browser, so no origin check; the cookie alone is the identity."""
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)
    before = len(tokens_server.events("connect", client=str(session_user["pk"])))

    client = await open_client(tokens_server, str(session_user["pk"]), headers=cookie(session_user))

    await assert_identity(tokens_server, client, observer, connects=before + 1)


async def test_session_from_the_pages_own_origin_connects(tokens_server, session_user, connect, open_client, uid):
    """A page of the relay's own origin (scheme, host and port of the handshake) connects with its cookie."""
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)
    before = len(tokens_server.events("connect", client=str(session_user["pk"])))

    client = await open_client(
        tokens_server,
        str(session_user["pk"]),
        headers=cookie(session_user),
        origin=f"http://127.0.0.1:{tokens_server.port}",
    )

    marker = uuid.uuid4().hex
    await client.send_json({"targets": [observer.client_id], "payload": marker})
    assert await observer.recv_json() == {"type": "message", "from": str(session_user["pk"]), "payload": marker}
    assert len(tokens_server.events("connect", client=str(session_user["pk"]))) == before + 1


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example.com",
        "http://localhost.evil.example",
        "null",
        # Another port or scheme of an allowed host is another site (issue 12): it used to pass.
        "http://localhost:8000",
        "http://127.0.0.1:9999",
        "https://127.0.0.1",
    ],
)
async def test_session_from_a_foreign_origin_is_refused(tokens_server, session_user, origin):
    """Cross-site WebSocket hijacking: another site's page cannot ride the user's cookie."""
    before = len(tokens_server.events("connect", client=str(session_user["pk"])))

    await assert_refused(tokens_server, "origin", headers=cookie(session_user), origin=origin, detail=origin)

    assert len(tokens_server.events("connect", client=str(session_user["pk"]))) == before


async def test_session_beats_the_query_id(tokens_server, session_user, connect, open_client, uid):
    claimed = uid("claimed")
    observer = await connect(tokens_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)

    client = await open_client(tokens_server, str(session_user["pk"]), f"id={claimed}", headers=cookie(session_user))

    marker = uuid.uuid4().hex
    await client.send_json({"targets": [observer.client_id], "payload": marker})
    assert await observer.recv_json() == {"type": "message", "from": str(session_user["pk"]), "payload": marker}
    assert tokens_server.events("connect", client=claimed) == []


async def test_unknown_session_is_no_identity(tokens_server):
    await assert_refused(tokens_server, "no_identity", headers={"Cookie": "sessionid=nosuchsessionkey0123456789abcd"})


# --- production: DEBUG off ------------------------------------------------------------------


async def test_query_id_is_refused_with_debug_off(production_server, uid):
    client_id = uid("open-mode")

    await assert_refused(production_server, "query_id_disabled", f"id={client_id}", detail="RELAY_ALLOW_QUERY_ID")

    assert production_server.events("connect", client=client_id) == []


async def test_tokens_work_with_debug_off(production_server, open_client, uid):
    alice, bob = uid("alice"), uid("bob")
    observer = await open_client(
        production_server,
        bob,
        f"token={mint({'sub': bob, 'exp': expires_in(600)})}",
        subprotocol=SUBPROTOCOL_V1,
    )

    # relay.v1: with DEBUG off the original framing is refused (test_a_client_cannot_forge_a_server_push).
    client = await open_client(
        production_server,
        alice,
        headers={"Authorization": f"Bearer {mint({'sub': alice, 'exp': expires_in(600)})}"},
        subprotocol=SUBPROTOCOL_V1,
    )

    await assert_identity(production_server, client, observer)


async def test_bad_token_is_refused_with_debug_off(production_server, uid):
    sub = uid("victim")

    await assert_refused(
        production_server, "invalid_token", f"token={unsigned(sub)}", detail="alg value is not allowed"
    )

    assert production_server.events("connect", client=sub) == []


# --- rate limit -----------------------------------------------------------------------------


@pytest.mark.server_internals
async def test_rate_limit_counts_exactly(limits_server, connect, uid):
    """30 frames at once: the first 10 (the burst) arrive, 5 ``rate_limited``, then 1008."""
    sender = await connect(limits_server, uid("flooder"))
    receiver = await connect(limits_server, uid("receiver"))
    other = await connect(limits_server, uid("other"))

    for n in range(30):
        await sender.send_json({"targets": [receiver.client_id], "payload": n})

    errors = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            errors.append(json.loads(await sender.ws.recv()))
    assert closed.value.rcvd is not None, "dropped without a close frame"
    assert closed.value.rcvd.code == 1008
    assert [error["error"]["code"] for error in errors] == ["rate_limited"] * 5
    assert await receiver.recv_many(10) == list(range(10))
    await receiver.assert_silent()

    # The others are untouched: their own buckets, their own connections.
    await other.send_json({"targets": [receiver.client_id], "payload": "still fine"})
    assert await receiver.recv_json() == "still fine"
    await assert_all_silent([receiver, other])
    # One log line per run of refusals, one for the close, and the disconnect's code.
    refused = limits_server.events("frame_refused", client=sender.client_id)
    assert [event["code"] for event in refused] == ["rate_limited"]
    assert len(limits_server.events("close", client=sender.client_id, code="1008")) == 1
    disconnects = await limits_server.wait_for_events("disconnect", client=sender.client_id)
    assert [event["code"] for event in disconnects] == ["1008"]


# --- send policy ----------------------------------------------------------------------------


async def test_same_id_only_policy_counts_exactly(same_id_server, connect, uid):
    """A frame to [self, other]: self's connections get it; other nothing; one ``forbidden``."""
    me, other_id = uid("me"), uid("other")
    sender = await connect(same_id_server, me, subprotocol=SUBPROTOCOL_V1)
    my_phone = await connect(same_id_server, me)
    other = await connect(same_id_server, other_id)

    await sender.send_json({"targets": [me, other_id], "payload": {"n": 1}, "id": "req-7"})

    first, *rest = await sender.recv_many(3)
    assert first == {"type": "error", "code": "forbidden", "detail": f"You may not send to {other_id}.", "ref": "req-7"}
    # The ack (from the script's reply) and the delivery to self (from the bus) come in either order.
    assert sorted(rest, key=lambda frame: frame["type"]) == [
        {"type": "ack", "ref": "req-7", "offsets": {me: 1}},
        {"type": "message", "from": me, "payload": {"n": 1}},
    ]
    assert await my_phone.recv_json() == {"n": 1}
    await assert_all_silent([sender, my_phone, other])
    assert [event["code"] for event in same_id_server.events("frame_refused", client=me)] == ["forbidden"]


async def test_same_id_only_policy_refuses_a_frame_to_others_only(same_id_server, connect, uid):
    sender = await connect(same_id_server, uid("me"))
    first, second = await connect(same_id_server, uid("first")), await connect(same_id_server, uid("second"))

    await sender.send_json({"targets": [first.client_id, second.client_id], "payload": "hi"})

    errors = await sender.recv_many(2)
    assert [error["error"]["code"] for error in errors] == ["forbidden", "forbidden"]
    assert [error["error"]["detail"] for error in errors] == [
        f"You may not send to {first.client_id}.",
        f"You may not send to {second.client_id}.",
    ]
    await assert_all_silent([sender, first, second])
    assert first.ws.state.name == "OPEN" and sender.ws.state.name == "OPEN"


# --- a frame that declares 100 MB -------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """The resident set size of a process, in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def declare_huge_frame(port: int, client_id: str, declared: int, sent: int) -> tuple[bytes, float]:
    """After a handshake on a raw socket, send a frame header declaring ``declared`` bytes and ``sent`` of them.

    Returns what the server sent after its 101 response, up to its close frame or the end
    of the connection, and how long that took.
    """
    sock, answer = raw_websocket(port, f"id={client_id}")
    with sock:
        assert answer.startswith(b"HTTP/1.1 101 "), answer
        mask = os.urandom(4)
        data = bytes(byte ^ mask[i % 4] for i, byte in enumerate(b"x" * sent))
        received = b""
        started = time.monotonic()
        try:
            sock.sendall(bytes([0x81, 0x80 | 127]) + struct.pack("!Q", declared) + mask + data)
            while not (len(received) >= 2 and len(received) >= 2 + (received[1] & 0x7F)):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        return received, time.monotonic() - started


@pytest.mark.server_internals
async def test_frame_declaring_100_mb_is_refused_without_buffering(limits_server, connect, uid):
    client_id = uid("huge")
    first, second = await connect(limits_server, uid("first")), await connect(limits_server, uid("second"))
    rss_before = rss_kib(limits_server.process.pid)

    received, elapsed = await asyncio.to_thread(
        declare_huge_frame, limits_server.port, client_id, 100 * 1024 * 1024, 8 * 1024
    )

    # A close frame (opcode 8, FIN) with 1009 "message too big", at once.
    assert received[:1] == b"\x88", received[:50]
    assert struct.unpack("!H", received[2:4])[0] == 1009
    assert elapsed < 2.0
    assert rss_kib(limits_server.process.pid) - rss_before < 4 * 1024
    disconnects = await limits_server.wait_for_events("disconnect", client=client_id)
    assert len(disconnects) == 1
    # The others are untouched.
    await first.send_json({"targets": [second.client_id], "payload": "after"})
    assert await second.recv_json() == "after"
    await assert_all_silent([first, second])
    assert limits_server.process.poll() is None


# --- issue 12: same origin by default, nothing forgeable, bounded connections, logout ----------


async def test_cross_site_socket_hijack_from_another_port_of_an_allowed_host_is_refused(tokens_server, session_user):
    """The finding: a page of http://127.0.0.1:9999 opened ws://127.0.0.1:<port>/ws with the victim's cookie.

    A browser sends the page's origin and the site's cookies; 127.0.0.1 is in ALLOWED_HOSTS,
    and host patterns ignored the port. Another port is another origin: refused.
    """
    victim = str(session_user["pk"])
    before = len(tokens_server.events("connect", client=victim))

    await assert_refused(
        tokens_server,
        "origin",
        headers=cookie(session_user),
        origin="http://127.0.0.1:9999",
        subprotocol=SUBPROTOCOL_V1,
        detail=(
            f"http://127.0.0.1:9999 is not the same origin as ws://127.0.0.1:{tokens_server.port}/ws, "
            "nor in RELAY_ALLOWED_ORIGINS"
        ),
    )

    assert len(tokens_server.events("connect", client=victim)) == before


@pytest.fixture(scope="module")
def origins_server(start_server) -> Server:
    """RELAY_ALLOWED_ORIGINS with a wildcard origin, and a host pattern of older releases (which allows nothing)."""
    return start_server(name="origins", env={"RELAY_ALLOWED_ORIGINS": "https://*.example.com,.example.org"})


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://example.com", True),
        ("http://app.example.com", False),  # the wildcard is for https only
        ("https://app.example.com:8443", False),  # and the default port only
        ("https://evil.example.org", False),  # ".example.org" used to allow every subdomain, any scheme
        ("https://example.org", False),
    ],
)
async def test_allowed_origins_are_full_origins_as_csrf_trusted_origins(
    origins_server, open_client, uid, origin, allowed
):
    client_id = uid("page")
    if allowed:
        client = await open_client(origins_server, client_id, f"id={client_id}", origin=origin)
        await client.send_json({"type": "ping"})
        assert await client.recv_json() == {"pong": None}
    else:
        await assert_refused(origins_server, "origin", f"id={client_id}", origin=origin, detail=origin)


async def test_a_client_cannot_forge_a_server_push_with_debug_off(production_server, open_client, uid):
    """The finding: in the original framing a delivery is the bare payload, so a client's frame is a push's bytes."""
    mallory, victim = uid("mallory"), uid("victim")
    token = mint({"sub": mallory, "exp": expires_in(600)})

    await assert_refused(
        production_server, "framing", f"token={token}", detail="the original framing (no subprotocol) is off here"
    )
    refusal = production_server.events("refused", reason="framing")[-1]
    assert "RELAY_FRAMINGS" in refusal["detail"] and "relay.v1" in refusal["detail"]

    # In relay.v1 every delivery says who sent it: mallory's invoice is not the server's.
    sender = await open_client(production_server, mallory, f"token={token}", subprotocol=SUBPROTOCOL_V1)
    receiver = await open_client(
        production_server, victim, f"token={mint({'sub': victim, 'exp': expires_in(600)})}", subprotocol=SUBPROTOCOL_V1
    )
    forged = {"type": "invoice.paid", "id": 1234}
    await sender.send_json({"targets": [victim], "payload": forged})
    delivered = await receiver.recv_json()
    assert delivered == {"type": "message", "from": mallory, "payload": forged}
    assert production_server.events("connect", client=mallory)[-1]["subprotocol"] == SUBPROTOCOL_V1


async def test_connections_past_the_per_id_limit_are_refused(tokens_server, connect, uid):
    """The finding: 1,000 sockets on one token were all accepted. RELAY_MAX_CONNECTIONS_PER_ID is 20."""
    client_id = uid("many")
    opened = [await connect(tokens_server, client_id) for _ in range(20)]

    await assert_refused(
        tokens_server, "too_many_connections", f"id={client_id}", detail="(RELAY_MAX_CONNECTIONS_PER_ID)"
    )

    await opened[0].close()
    await tokens_server.wait_for_events("disconnect", client=client_id)
    again = await connect(tokens_server, client_id)  # room for one again
    await again.send_json({"type": "ping"})
    assert await again.recv_json() == {"pong": None}
    assert len(tokens_server.events("connect", client=client_id)) == 21


# Logging out closes the sockets of that session (4401), in every process, and only those.

STAFF_SESSIONS_SCRIPT = """
import json
from django.contrib.auth import get_user_model
from django.test import Client
user = get_user_model().objects.create_user(id={pk}, username={username!r}, is_staff=True)
sessions = []
for _ in range(2):
    client = Client()
    client.force_login(user)
    sessions.append(client.cookies["sessionid"].value)
print(json.dumps({{"pk": user.pk, "sessions": sessions}}))
"""


@pytest.fixture(scope="module")
def second_server(start_server, tokens_server) -> Server:
    """Another process on the same Redis and database as tokens_server."""
    return start_server(name="tokens-b", env={"RELAY_TOKEN_SECRET": TOKEN_SECRET})


def log_out_over_http(server: Server, session_id: str) -> int:
    """What the user's browser does: the admin's logout form (POST, with its CSRF token). The status."""
    import http.client
    from http.cookies import SimpleCookie

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", "/admin/", headers={"Cookie": f"sessionid={session_id}"})
        page = connection.getresponse()
        page.read()
        csrf = SimpleCookie(page.getheader("Set-Cookie"))["csrftoken"].value
        connection.request(
            "POST",
            "/admin/logout/",
            headers={"Cookie": f"sessionid={session_id}; csrftoken={csrf}", "X-CSRFToken": csrf},
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


async def closed_with(client: Client, timeout: float = 5.0) -> int | None:
    try:
        while True:
            await asyncio.wait_for(client.ws.recv(), timeout)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_logging_out_closes_the_sockets_of_that_session_in_every_process(
    tokens_server, second_server, open_client
):
    """The finding: a socket opened with a session stayed open after the user logged out."""
    pk = uuid.uuid4().int % 10**9 + 2 * 10**9
    script = STAFF_SESSIONS_SCRIPT.format(pk=pk, username=f"e2e-logout-{uuid.uuid4().hex[:8]}")
    user = json.loads(manage_output(tokens_server, "shell", "-v", "0", "-c", script).strip().splitlines()[-1])
    leaving, staying = user["sessions"]
    client_id = str(pk)
    here = await open_client(tokens_server, client_id, headers={"Cookie": f"sessionid={leaving}"})
    there = await open_client(second_server, client_id, headers={"Cookie": f"sessionid={leaving}"})
    other_browser = await open_client(second_server, client_id, headers={"Cookie": f"sessionid={staying}"})
    by_token = await open_client(tokens_server, client_id, f"token={mint({'sub': client_id, 'exp': expires_in(600)})}")
    await tokens_server.wait_for_events("connect", 2, client=client_id)
    await second_server.wait_for_events("connect", 2, client=client_id)

    assert await asyncio.to_thread(log_out_over_http, tokens_server, leaving) == 200

    assert await closed_with(here) == 4401
    assert await closed_with(there) == 4401  # in the other process too, through Redis
    await assert_all_silent([other_browser, by_token], 0.3)
    assert other_browser.ws.state.name == "OPEN" and by_token.ws.state.name == "OPEN"
    disconnects = await second_server.wait_for_events("disconnect", client=client_id)
    assert [event["code"] for event in disconnects] == ["4401"]
    # And the session is gone: it opens nothing any more.
    await assert_refused(tokens_server, "no_identity", headers={"Cookie": f"sessionid={leaving}"})


# The end of a session in the ways Django sends no user_logged_out for: a password change
# (update_session_auth_hash cycles the session's key), another user's login on that browser.

STAFF_USERS_SCRIPT = """
import json
from django.contrib.auth import get_user_model
create = get_user_model().objects.create_user
print(json.dumps([create(name, password={password!r}, is_staff=True).pk for name in {usernames!r}]))
"""
OLD_PASSWORD, NEW_PASSWORD = "e2e-an-old-Passphrase-4711", "e2e-a-new-Passphrase-0815"


def submit_admin_form(server: Server, path: str, session_id: str | None, fields: dict, csrf_from: str = "") -> tuple:
    """What a browser does with an admin form: GET a page (for the CSRF cookie), then POST the form.

    Returns the status and the session cookie the answer set (None if it set none).
    """
    import http.client
    from http.cookies import SimpleCookie
    from urllib.parse import urlencode

    session = f"sessionid={session_id}" if session_id else ""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", csrf_from or path, headers={"Cookie": session} if session else {})
        page = connection.getresponse()
        page.read()
        csrf = SimpleCookie(page.getheader("Set-Cookie"))["csrftoken"].value
        cookies = "; ".join(filter(None, [session, f"csrftoken={csrf}"]))
        body = urlencode({**fields, "csrfmiddlewaretoken": csrf})
        headers = {"Cookie": cookies, "Content-Type": "application/x-www-form-urlencoded"}
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        set_cookies = SimpleCookie()
        for header in response.msg.get_all("Set-Cookie") or []:
            set_cookies.load(header)
        return response.status, set_cookies["sessionid"].value if "sessionid" in set_cookies else None
    finally:
        connection.close()


def log_in_over_http(server: Server, username: str, password: str, session_id: str | None = None) -> str:
    """The admin's login form, from a browser holding ``session_id`` (or none): the new session's key."""
    fields = {"username": username, "password": password, "next": "/admin/"}
    status, new_session = submit_admin_form(
        server, "/admin/login/", session_id, fields, csrf_from="/admin/" if session_id else ""
    )
    assert status == 302 and new_session, (status, new_session)
    return new_session


async def test_a_password_change_and_another_users_login_close_the_sockets_of_the_sessions_they_ended(
    tokens_server, second_server, open_client
):
    """The findings: after a password change (the session key cycled) the logout's 4401 went to the new key
    only, and a login of another user on the same browser flushed the first user's session silently."""
    names = [f"e2e-{who}-{uuid.uuid4().hex[:8]}" for who in ("alice", "bob")]
    script = STAFF_USERS_SCRIPT.format(password=OLD_PASSWORD, usernames=names)
    alice, bob = json.loads(manage_output(tokens_server, "shell", "-v", "0", "-c", script).strip().splitlines()[-1])
    old_key = await asyncio.to_thread(log_in_over_http, tokens_server, names[0], OLD_PASSWORD)
    here = await open_client(tokens_server, str(alice), headers={"Cookie": f"sessionid={old_key}"})
    there = await open_client(second_server, str(alice), headers={"Cookie": f"sessionid={old_key}"})
    by_token = await open_client(
        tokens_server, str(alice), f"token={mint({'sub': str(alice), 'exp': expires_in(600)})}"
    )
    await second_server.wait_for_events("connect", client=str(alice))

    change = {"old_password": OLD_PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    status, new_key = await asyncio.to_thread(
        submit_admin_form, tokens_server, "/admin/password_change/", old_key, change
    )

    assert status == 302 and new_key not in (None, old_key), (status, new_key)
    assert await closed_with(here) == 4401  # the session they were opened with is gone
    assert await closed_with(there) == 4401  # in the other process too
    await assert_all_silent([by_token], 0.3)
    # The browser is still logged in, under the new key: its sockets close when it logs out.
    again = await open_client(second_server, str(alice), headers={"Cookie": f"sessionid={new_key}"})
    await assert_all_silent([again], 0.3)
    assert await asyncio.to_thread(log_out_over_http, tokens_server, new_key) == 200
    assert await closed_with(again) == 4401

    # Alice logs in again; then Bob logs in on her browser, which flushes her session.
    alices_key = await asyncio.to_thread(log_in_over_http, tokens_server, names[0], NEW_PASSWORD)
    alices_tab = await open_client(second_server, str(alice), headers={"Cookie": f"sessionid={alices_key}"})
    await second_server.wait_for_events("connect", 3, client=str(alice))
    bobs_key = await asyncio.to_thread(log_in_over_http, tokens_server, names[1], OLD_PASSWORD, alices_key)

    assert await closed_with(alices_tab) == 4401
    bobs_tab = await open_client(second_server, str(bob), headers={"Cookie": f"sessionid={bobs_key}"})
    await by_token.send_json({"targets": [str(bob)], "payload": "to bob"})  # Alice's token socket stayed open
    assert await bobs_tab.recv_json() == "to bob"


# Rotating the token secret without cutting every client.

OLD_SECRET, NEW_SECRET = TOKEN_SECRET, "e2e-security-the-new-token-secret-of-a-rotation-0123456789abcdef"


@pytest.fixture(scope="module")
def rotating_server(start_server) -> Server:
    return start_server(name="rotating", env={"RELAY_TOKEN_SECRETS": f"{NEW_SECRET},{OLD_SECRET}"})


async def test_token_secrets_rotate_without_cutting_clients(rotating_server, connect, open_client, uid):
    old_client, new_client = uid("old-token"), uid("new-token")
    observer = await connect(rotating_server, uid("observer"), subprotocol=SUBPROTOCOL_V1)

    old = await open_client(rotating_server, old_client, f"token={mint({'sub': old_client, 'exp': expires_in(600)})}")
    await assert_identity(rotating_server, old, observer)
    token = (await asyncio.to_thread(manage_output, rotating_server, "relay_token", new_client)).strip()
    assert jwt.decode(token, NEW_SECRET, algorithms=["HS256"])["sub"] == new_client  # the first one signs
    new = await open_client(rotating_server, new_client, f"token={token}")
    await assert_identity(rotating_server, new, observer)
    await assert_refused(
        rotating_server, "invalid_token", f"token={mint({'sub': old_client, 'exp': expires_in(600)}, WRONG_SECRET)}"
    )
