"""client_connected / client_disconnected: sync and async receivers, what they get, failing receivers."""

import asyncio
import logging

import pytest
from django.contrib.auth import get_user_model

import relay
from relay import metrics, signals
from tests.conftest import frame, send_text


async def eventually(condition, timeout: float = 2.0) -> None:
    """Wait until ``condition()`` holds: signals are sent by the connection's own task."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
def received():
    """A sync and an async receiver on both signals; the calls they got, in order."""
    calls: list[tuple[str, str, dict]] = []

    def sync_connected(sender, **kwargs):
        calls.append(("sync", "connected", kwargs))

    async def async_connected(sender, **kwargs):
        await asyncio.sleep(0)
        calls.append(("async", "connected", kwargs))

    def sync_disconnected(sender, **kwargs):
        calls.append(("sync", "disconnected", kwargs))

    async def async_disconnected(sender, **kwargs):
        await asyncio.sleep(0)
        calls.append(("async", "disconnected", kwargs))

    receivers = [
        (signals.client_connected, sync_connected),
        (signals.client_connected, async_connected),
        (signals.client_disconnected, sync_disconnected),
        (signals.client_disconnected, async_disconnected),
    ]
    for signal, receiver in receivers:
        signal.connect(receiver)
    yield calls
    for signal, receiver in receivers:
        signal.disconnect(receiver)


async def test_connect_and_disconnect_reach_sync_and_async_receivers(connect, received):
    alice = await connect("alice")
    await eventually(lambda: len(received) == 2)
    # Django runs sync receivers in a thread and async ones concurrently: no order between them.
    assert sorted((kind, name) for kind, name, _ in received) == [("async", "connected"), ("sync", "connected")]
    connection = received[0][2]["connection"]
    assert isinstance(connection, relay.Connection)
    assert (connection.client_id, connection.user, len(connection.connection_id)) == ("alice", None, 32)
    await alice.disconnect(code=1000)
    await eventually(lambda: len(received) == 4)
    assert sorted((kind, name) for kind, name, _ in received[2:]) == [
        ("async", "disconnected"),
        ("sync", "disconnected"),
    ]
    gone = received[2][2]
    assert gone["connection"] is connection
    assert gone["code"] == 1000 and 0 <= gone["duration"] < 5


async def test_two_tabs_have_their_own_connection_ids(connect, received):
    await connect("alice")
    await connect("alice")
    await eventually(lambda: len(received) == 4)
    ids = {kwargs["connection"].connection_id for _, name, kwargs in received if name == "connected"}
    assert len(ids) == 2


@pytest.mark.django_db(transaction=True)
async def test_a_sync_receiver_may_use_the_orm(connect):
    users = get_user_model()

    def record(sender, connection, **kwargs):
        users.objects.create(username=f"seen-{connection.client_id}")

    signals.client_connected.connect(record)
    try:
        await connect("alice")

        for _ in range(200):
            if await users.objects.filter(username="seen-alice").aexists():
                break
            await asyncio.sleep(0.01)
    finally:
        signals.client_connected.disconnect(record)
    assert await users.objects.filter(username="seen-alice").aexists()


async def test_a_failing_receiver_is_logged_and_breaks_nothing(connect, received, caplog):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    signals.client_connected.connect(broken)
    before = metrics.SITE_CODE_ERRORS.labels("signal")._value.get()
    try:
        caplog.clear()
        with caplog.at_level(logging.ERROR, "relay"):
            alice, bob = await connect("alice"), await connect("bob")
            await eventually(lambda: sum(name == "connected" for _, name, _ in received) == 4)
    finally:
        signals.client_connected.disconnect(broken)
    ours = [r for r in caplog.records if r.name == "relay.signals"]
    assert [r.getMessage().split(" receiver=")[0] for r in ours] == ["event=signal_receiver_failed"] * 2
    assert all(r.getMessage().endswith("error=RuntimeError: receiver bug") for r in ours)
    tracebacks = [r for r in caplog.records if r.name == "django.dispatch"]
    assert len(tracebacks) == 2 and all(r.exc_info for r in tracebacks)  # Django logs the traceback
    assert metrics.SITE_CODE_ERRORS.labels("signal")._value.get() == before + 2
    assert sum(name == "connected" for _, name, _ in received) == 4  # the other receivers still ran
    await send_text(alice, frame(["bob"], "still relaying"))
    assert await bob.receive_from() == '"still relaying"'


async def test_no_receivers_send_nothing(connect):
    assert not signals.client_connected.receivers
    alice = await connect("alice")
    assert alice is not None
