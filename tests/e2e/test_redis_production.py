"""Redis as production runs it, with real redis-server processes of the tests' own and real daphne:
TLS with a CA made here, ACL users, Sentinel failover, and two shards.
"""

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from relay.client import RelayClient
from relay.redis.servers import shard_index

from .conftest import NO_RATE_LIMIT, SUBPROTOCOL_V1, Client, free_port, http_get, run_manage_sync

HISTORY = {"DJANGO_SETTINGS_MODULE": "tests.e2e.history_settings", **NO_RATE_LIMIT}


async def wait_for(condition, timeout: float = 15.0, step: float = 0.1):
    """Poll ``condition()`` (a function or a coroutine function) until true or ``timeout``; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(step)


async def health(server) -> int:
    return (await http_get(server, "/relay/healthz")).status


async def healthy(server) -> bool:
    return await health(server) == 200


async def relays(sender: Client, receiver: Client, payload) -> bool:
    """Whether a frame from ``sender`` reaches ``receiver`` now (within a second)."""
    await sender.send_json({"targets": [receiver.client_id], "payload": payload})
    try:
        frame = await receiver.recv_json(1)
    except AssertionError:
        return False
    return frame == payload or (isinstance(frame, dict) and frame.get("payload") == payload)


async def assert_down_and_said_once(server, reason: str, connect, uid) -> tuple[Client, Client]:
    """``server``'s Redis refuses it for ``reason``: 503, the reason logged once while the link retries,
    and a sender hears ``unavailable``. Returns two connected clients."""
    assert await health(server) == 503
    assert await wait_for(lambda: server.log_lines(reason))
    await asyncio.sleep(2.5)  # the link has retried several times meanwhile (resp.RECONNECT_DELAYS)
    assert len(server.log_lines("redis commands")) == 1, server.log  # once, not once per retry
    alice, bob = await connect(server, uid("alice")), await connect(server, uid("bob"))
    await alice.send_json({"targets": [bob.client_id], "payload": 1, "id": "x"})
    assert (await alice.recv_json())["error"]["code"] == "unavailable"  # the sender always knows
    return alice, bob


# --- TLS ------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> Path:
    """A self-signed CA ``<name>.pem`` / ``<name>.key`` in ``directory``."""
    openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=directory)  # fmt: skip
    return directory / f"{name}.pem"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A test CA, a server certificate it signed for 127.0.0.1/localhost, and another CA."""
    directory = tmp_path_factory.mktemp("tls")
    ca = make_ca(directory, "ca")
    other = make_ca(directory, "other-ca")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr", cwd=directory)  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem", cwd=directory)  # fmt: skip
    return {"ca": ca, "other_ca": other, "cert": directory / "server.pem", "key": directory / "server.key"}


@pytest.fixture
def tls_redis(private_redis, certificates):
    tls = certificates
    args = ("--tls-port", "{port}", "--tls-cert-file", str(tls["cert"]), "--tls-key-file", str(tls["key"]),
            "--tls-ca-cert-file", str(tls["ca"]), "--tls-auth-clients", "no")  # fmt: skip
    return private_redis(args, client={"ssl": True, "ssl_ca_certs": str(tls["ca"])})


async def test_two_processes_relay_over_tls_only(start_server, tls_redis, certificates, connect, uid):
    env = {
        **HISTORY,
        "REDIS_URL": f"rediss://127.0.0.1:{tls_redis.port}/0",
        "REDIS_SSL_CA_CERTS": str(certificates["ca"]),
    }
    a, b = start_server(name="tls-a", env=env), start_server(name="tls-b", env=env)
    alice = await connect(a, uid("alice"), subprotocol=SUBPROTOCOL_V1)
    bob = await connect(b, uid("bob"), subprotocol=SUBPROTOCOL_V1)
    assert await wait_for(lambda: healthy(a)) and await wait_for(lambda: healthy(b))
    await alice.send_json({"targets": [bob.client_id], "payload": "over tls", "id": 1})
    assert (await bob.recv_json())["payload"] == "over tls"
    assert await alice.recv_json() == {"type": "ack", "ref": 1, "offsets": {bob.client_id: 1}}
    pushed = await asyncio.to_thread(run_manage_sync, a, "relay_send", bob.client_id, "--payload", '"pushed"')
    assert pushed.returncode == 0, pushed.stderr  # redis-py over TLS too
    assert (await bob.recv_json())["payload"] == "pushed"


async def test_a_wrong_ca_is_a_clear_503(start_server, tls_redis, certificates, uid):
    env = {"REDIS_URL": f"rediss://127.0.0.1:{tls_redis.port}/0", "REDIS_SSL_CA_CERTS": str(certificates["other_ca"])}
    server = start_server(name="tls-wrong-ca", env=env)
    assert await health(server) == 503
    lines = await wait_for(lambda: server.log_lines("certificate verify failed"))
    assert lines and "cannot connect" in lines[0]
    assert len(server.log_lines("redis commands")) == 1  # said once, not once per retry


# --- ACL users ------------------------------------------------------------------------


#: The permissions the README says the relay's user needs, exactly.
RELAY_ACL = "~* &* +@pubsub +@scripting +@hash +@list +@keyspace +@sortedset +@connection +info"


@pytest.fixture
def acl_redis(private_redis):
    """A Redis with a user of exactly the permissions the relay needs, and one without channel access."""
    relay_user = ("--user", "relay", "on", ">s3cret", *RELAY_ACL.split())
    boxed_user = ("--user", "boxed", "on", ">pw", "~*", "resetchannels", "+@all")
    return private_redis(relay_user + boxed_user)


async def test_an_acl_user_with_the_needed_permissions_relays(start_server, acl_redis, connect, uid):
    env = {"REDIS_URL": f"redis://relay:s3cret@127.0.0.1:{acl_redis.port}/0"}
    a, b = start_server(name="acl-a", env=env), start_server(name="acl-b", env=env)
    alice, bob = await connect(a, uid("alice")), await connect(b, uid("bob"))
    assert await wait_for(lambda: relays(alice, bob, "acl ok"))
    assert await health(a) == 200
    pushed = await asyncio.to_thread(run_manage_sync, a, "relay_send", bob.client_id, "--payload", '"pushed"')
    assert pushed.returncode == 0, pushed.stderr  # history, presence and the push through redis-py too
    assert await bob.recv_json() == "pushed"
    assert not a.log_lines("NOPERM") and not b.log_lines("NOPERM")


async def test_a_wrong_password_is_503_then_recovers_when_the_acl_is_fixed(start_server, acl_redis, connect, uid):
    env = {"REDIS_URL": f"redis://relay:newpass@127.0.0.1:{acl_redis.port}/0"}
    server = start_server(name="acl-wrong", env=env)
    alice, bob = await assert_down_and_said_once(server, "WRONGPASS", connect, uid)
    with redis.Redis(port=acl_redis.port) as admin:
        admin.execute_command("ACL", "SETUSER", "relay", ">newpass")  # fixed: no restart of the relay
    assert await wait_for(lambda: healthy(server), timeout=20)
    assert await wait_for(lambda: relays(alice, bob, "after the fix"))
    # Said once the link has stayed up a moment (resp.STABLE_AFTER), not on every reconnect.
    assert await wait_for(lambda: server.log_lines("connected again"), timeout=5)


async def test_a_refused_select_is_503_with_the_reason_said_once(start_server, private_redis, connect, uid):
    """A database the Redis does not have (SELECT refused): the link is down, not connected and silent."""
    store = private_redis(args=("--databases", "2"))
    server = start_server(name="select-refused", env={"REDIS_URL": f"redis://127.0.0.1:{store.port}/5"})
    await assert_down_and_said_once(server, "DB index is out of range", connect, uid)
    assert "Traceback" not in server.log


async def test_a_user_without_channel_permissions_is_503_with_noperm(start_server, acl_redis, uid):
    server = start_server(name="acl-boxed", env={"REDIS_URL": f"redis://boxed:pw@127.0.0.1:{acl_redis.port}/0"})
    assert await wait_for(lambda: server.log_lines("NOPERM"))
    assert await health(server) == 503
    with redis.Redis(port=acl_redis.port) as admin:
        admin.execute_command("ACL", "SETUSER", "boxed", "allchannels")
    assert await wait_for(lambda: healthy(server), timeout=20)


# --- Sentinel -------------------------------------------------------------------------

SENTINEL_CONFIG = """port {port}
bind 127.0.0.1
sentinel monitor mymaster 127.0.0.1 {master} 2
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 5000
sentinel parallel-syncs mymaster 1
"""


@pytest.fixture
def sentinel_setup(private_redis, tmp_path):
    """One master, one replica, three sentinels watching them as ``mymaster``."""
    master = private_redis()
    replica = private_redis(("--replicaof", "127.0.0.1", str(master.port)))
    sentinels = []
    for index in range(3):
        config = tmp_path / f"sentinel-{index}.conf"
        port = free_port()
        config.write_text(SENTINEL_CONFIG.format(port=port, master=master.port))
        sentinels.append(private_redis((str(config), "--sentinel"), port=port))
    return master, replica, sentinels


def sentinel_url(sentinels) -> str:
    return "redis+sentinel://" + ",".join(f"127.0.0.1:{s.port}" for s in sentinels) + "/mymaster/0"


def master_port(sentinels) -> int | None:
    """Where the first sentinel that answers says the master is."""
    for sentinel in sentinels:
        try:
            with redis.Redis(port=sentinel.port, socket_timeout=1) as client:
                host, port = client.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster")
                return int(port)
        except (redis.RedisError, OSError, TypeError):
            continue
    return None


async def test_the_relay_follows_a_sentinel_failover_and_clients_stay(start_server, sentinel_setup, connect, uid):
    master, replica, sentinels = sentinel_setup
    # The sentinels know the replica (and each other) before the master can be failed over.
    assert await wait_for(lambda: _sentinels_ready(sentinels), timeout=30)
    env = {**HISTORY, "REDIS_URL": sentinel_url(sentinels)}
    a, b = start_server(name="sentinel-a", env=env), start_server(name="sentinel-b", env=env)
    alice = await connect(a, uid("alice"), subprotocol=SUBPROTOCOL_V1)
    bob = await connect(b, uid("bob"), subprotocol=SUBPROTOCOL_V1)
    bob.gapless = False  # a failover may lose the last writes; the epoch then changes
    assert await wait_for(lambda: relays(alice, bob, "before"))
    answers: dict[int, str] = {}
    received: list[int] = []
    sent = 0

    async def receive() -> None:
        while True:
            frame = await bob.recv_json(60)
            if frame.get("type") == "message" and isinstance(frame.get("payload"), int):
                received.append(frame["payload"])

    async def answer() -> None:
        while True:
            frame = await alice.recv_json(60)
            if frame.get("type") in ("ack", "error"):
                answers[frame["ref"]] = frame["type"] if frame["type"] == "ack" else frame["code"]

    tasks = [asyncio.create_task(receive()), asyncio.create_task(answer())]
    try:

        async def send_for(seconds: float) -> None:
            nonlocal sent
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await alice.send_json({"targets": [bob.client_id], "payload": sent, "id": sent})
                sent += 1
                await asyncio.sleep(0.05)

        await send_for(1)
        before_kill = sent
        master.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        master.process.wait()
        # Frames keep being sent; the relay follows the promoted replica by itself.
        while time.monotonic() - killed < 40 and master_port(sentinels) != replica.port:
            await send_for(0.5)
        promoted = time.monotonic() - killed
        assert master_port(sentinels) == replica.port, "the sentinels did not fail over"
        first_ack_after = None
        while time.monotonic() - killed < 60:
            mark = sent
            await send_for(0.5)
            if any(answers.get(ref) == "ack" for ref in range(mark, sent)):
                first_ack_after = time.monotonic() - killed
                break
        assert first_ack_after is not None, "no frame was stored after the failover"
        mark = sent
        await send_for(1)
        await wait_for(lambda: all(ref in answers for ref in range(sent)), timeout=20)
    finally:
        for task in tasks:
            task.cancel()
    print(f"\nSentinel failover: promoted after {promoted:.1f}s, the relay stored frames again "
          f"{first_ack_after:.1f}s after the kill ({first_ack_after - promoted:.1f}s after the promotion)")  # fmt: skip
    assert first_ack_after <= promoted + 6
    # Every frame was answered: acked or unavailable, never silence.
    assert set(answers) == set(range(sent)) and set(answers.values()) <= {"ack", "unavailable"}
    # What was acked before the kill and after the failover arrived; the clients stayed connected.
    acked = [ref for ref in range(sent) if answers[ref] == "ack"]
    assert set(range(before_kill)) <= set(received)
    assert set(range(mark, sent)) <= set(received) and all(answers[ref] == "ack" for ref in range(mark, sent))
    assert not a.events("disconnect", client=alice.client_id) and not b.events("disconnect", client=bob.client_id)
    lost = sorted(set(acked) - set(received))
    assert len(lost) <= 5, lost  # at most the writes in flight when the master died (told by the epoch)
    if lost:
        assert len({epoch for epoch, _ in bob.positions}) > 1


def _sentinels_ready(sentinels) -> bool:
    try:
        for sentinel in sentinels:
            with redis.Redis(port=sentinel.port, socket_timeout=1) as client:
                fields = client.execute_command("SENTINEL", "master", "mymaster")  # redis-py makes it a dict
                if int(fields[b"num-slaves"]) < 1 or int(fields[b"num-other-sentinels"]) < 2:
                    return False
        return True
    except (redis.RedisError, OSError, KeyError):
        return False


# --- Shards ---------------------------------------------------------------------------


def layer_prefix() -> str:
    """The channel layer's prefix in the servers, as relayproject.settings makes it of REDIS_PREFIX."""
    prefix = os.environ.get("REDIS_PREFIX", "")
    return f"{prefix}.asgi" if prefix else "asgi"


def ids_on(shard: int, uid, count: int = 2) -> list[str]:
    """``count`` fresh client ids that hash to ``shard`` (of two)."""
    found, n = [], 0
    while len(found) < count:
        candidate = uid(f"s{n}")
        if shard_index(candidate, 2, layer_prefix()) == shard:
            found.append(candidate)
        n += 1
    return found


async def test_two_shards_carry_their_own_ids_and_one_down_stops_only_its_ids(
    start_server, private_redis, connect, uid
):
    first, second = private_redis(), private_redis()
    env = {
        **HISTORY,
        "REDIS_URL": f"redis://127.0.0.1:{first.port}/0,redis://127.0.0.1:{second.port}/0",
        "RELAY_METRICS_TOKEN": "shard-metrics-token",
    }
    a, b = start_server(name="shard-a", env=env), start_server(name="shard-b", env=env)
    (x_sender, x_receiver), (y_sender, y_receiver) = ids_on(0, uid), ids_on(1, uid)
    on_x = (
        await connect(a, x_sender, subprotocol=SUBPROTOCOL_V1),
        await connect(b, x_receiver, subprotocol=SUBPROTOCOL_V1),
    )
    on_y = (
        await connect(a, y_sender, subprotocol=SUBPROTOCOL_V1),
        await connect(b, y_receiver, subprotocol=SUBPROTOCOL_V1),
    )
    assert await wait_for(lambda: relays(*on_x, "x")) and await wait_for(lambda: relays(*on_y, "y"))
    # Each shard holds the streams of its own ids only.
    with (
        redis.Redis(port=first.port, decode_responses=True) as x,
        redis.Redis(port=second.port, decode_responses=True) as y,
    ):
        assert any(x_receiver in key for key in x.keys("*stream*")) and not any(
            x_receiver in key for key in y.keys("*stream*")
        )
        assert any(y_receiver in key for key in y.keys("*stream*")) and not any(
            y_receiver in key for key in x.keys("*stream*")
        )

    second.stop()
    assert await wait_for(lambda: a.log_lines(f"127.0.0.1:{second.port}"))
    await on_y[0].send_json({"targets": [y_receiver], "payload": "lost", "id": "y1"})
    refused = await on_y[0].recv_json()
    assert (refused["type"], refused["code"], refused["ref"]) == ("error", "unavailable", "y1")
    assert await relays(*on_x, "x still flows")  # the other shard's ids are untouched
    assert await health(a) == 503
    # With the metrics token, the detail names the shard that is down, and only that one
    # (the layer's round trip fails too when its fresh channel lands on that shard).
    detailed = await http_get(a, "/relay/healthz", {"Authorization": "Bearer shard-metrics-token"})
    assert detailed.json()["reason"] in ("redis", "channel_layer"), detailed.text
    assert f"127.0.0.1:{second.port}" in detailed.json()["detail"], detailed.text
    assert f"127.0.0.1:{first.port}" not in detailed.json()["detail"], detailed.text

    second.start()
    assert await wait_for(lambda: relays(*on_y, "y again"), timeout=20)
    assert await wait_for(lambda: healthy(a)) and await wait_for(lambda: healthy(b))


async def test_a_frame_to_ids_on_two_shards_with_one_down_reaches_the_others_and_says_which_missed_it(
    start_server, private_redis, connect, uid
):
    """The sender hears ``unavailable`` for the target on the shard that is down, naming it, then
    the ack with the offsets of the others: a retry to that target only doubles nothing."""
    first, second = private_redis(), private_redis()
    env = {**HISTORY, "REDIS_URL": f"redis://127.0.0.1:{first.port}/0,redis://127.0.0.1:{second.port}/0"}
    server = start_server(name="shard-partial", env=env)
    (sender_id, x), (y,) = ids_on(0, uid), ids_on(1, uid, 1)
    sender = await connect(server, sender_id, subprotocol=SUBPROTOCOL_V1)
    x_receiver = await connect(server, x, subprotocol=SUBPROTOCOL_V1)
    second.stop()
    assert await wait_for(lambda: server.log_lines(f"127.0.0.1:{second.port}"))

    await sender.send_json({"targets": [x, y], "payload": "partly", "id": 2})
    missed, ack = await sender.recv_many(2)
    assert (missed["type"], missed["code"], missed["ref"], missed["target"]) == ("error", "unavailable", 2, y)
    assert "not delivered to it" in missed["detail"] and y in missed["detail"]
    assert ack == {"type": "ack", "ref": 2, "offsets": {x: 1}}
    assert await x_receiver.recv_json() == {"type": "message", "from": sender_id, "payload": "partly"}

    second.start()
    assert await wait_for(lambda: healthy(server), timeout=20)
    y_receiver = await connect(server, y, subprotocol=SUBPROTOCOL_V1)
    await sender.send_json({"targets": [missed["target"]], "payload": "partly", "id": 3})  # the retry
    assert (await sender.recv_json())["type"] == "ack"
    assert (await y_receiver.recv_json())["payload"] == "partly"
    await x_receiver.assert_silent()  # x got it once, y once

    second.stop()

    async def noticed() -> bool:
        return await health(server) == 503

    assert await wait_for(noticed)
    async with RelayClient(server.url(), client_id=sender_id) as client:  # relay.client tells the same
        sent = await client.send([x, y], "again")
    assert sent.offsets == {x: 2} and [(e.code, e.target) for e in sent.unavailable] == [("unavailable", y)]
