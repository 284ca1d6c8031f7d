"""GroupMembership: a connection's channel-layer group, joined at once or in the background."""

import asyncio
import logging

import pytest
import redis
from channels.layers import InMemoryChannelLayer

from relay.server import membership as membership_module
from relay.server.membership import GroupMembership

GROUP = "relay.alice"
EVENT = {"type": "relay.deliver", "payload": 1}
LAYER_DOWN = OSError("Connection refused")


async def until(predicate, timeout: float = 2.0) -> None:
    """Wait until ``predicate()`` is true; fail the test if it is not within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            pytest.fail("the expected state was not reached in time")
        await asyncio.sleep(0.001)


class FlakyLayer(InMemoryChannelLayer):
    """The in-memory layer, counting calls, whose group_add fails ``failures`` times first.

    A failure raises ``error``, or hangs when ``error`` is None (a Redis that does not answer).
    """

    def __init__(self, failures: int = 0, error: BaseException | None = LAYER_DOWN):
        super().__init__()
        self.failures = failures
        self.error = error
        self.calls: list[str] = []

    async def new_channel(self, prefix="specific."):
        self.calls.append("new_channel")
        return await super().new_channel(prefix)

    async def group_add(self, group, channel):
        self.calls.append("group_add")
        if self.failures:
            self.failures -= 1
            if self.error is None:
                await asyncio.Event().wait()
            raise self.error
        await super().group_add(group, channel)

    async def group_discard(self, group, channel):
        self.calls.append("group_discard")
        await super().group_discard(group, channel)

    def members(self, group: str) -> set[str]:
        return set(self.groups.get(group, {}))


class LeaveFailsLayer(FlakyLayer):
    """group_discard raises ``error`` (or hangs when it is None)."""

    def __init__(self, error: BaseException | None):
        super().__init__()
        self.discard_error = error

    async def group_discard(self, group, channel):
        self.calls.append("group_discard")
        if self.discard_error is None:
            await asyncio.Event().wait()
        raise self.discard_error


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(membership_module, "RETRY_DELAYS", (0.01,))
    monkeypatch.setattr(membership_module, "JOIN_TIMEOUT", 0.05)


@pytest.fixture
def events() -> list[dict]:
    return []


@pytest.fixture
async def memberships(events):
    """``memberships(layer, redis_up=None)``: a GroupMembership handling events into ``events``."""
    made: list[GroupMembership] = []

    def make(layer, redis_up=None) -> GroupMembership:
        async def handle(event):
            events.append(event)

        membership = GroupMembership(layer, GROUP, handle, redis_up)
        made.append(membership)
        return membership

    yield make
    for membership in made:
        await membership.leave()


async def test_join_adds_the_channel_to_the_group_and_events_reach_handle(memberships, events):
    layer = FlakyLayer()
    membership = memberships(layer)
    await membership.join()
    assert layer.members(GROUP) == {membership.channel_name}
    await layer.group_send(GROUP, EVENT)
    await layer.group_send(GROUP, {**EVENT, "payload": 2})
    await until(lambda: len(events) == 2)
    assert events == [EVENT, {**EVENT, "payload": 2}]


@pytest.mark.parametrize(
    "error",
    [OSError("Connection refused"), TimeoutError(), redis.ConnectionError("Error 111 connecting")],
    ids=["os-error", "timeout", "redis-error"],
)
async def test_a_layer_error_at_join_is_retried_in_the_background_until_it_joins(memberships, events, error, caplog):
    layer = FlakyLayer(failures=2, error=error)
    membership = memberships(layer)
    await asyncio.wait_for(membership.join(), 1)  # does not raise: the connection goes on without the group
    assert layer.calls == ["new_channel", "group_add"]
    assert layer.members(GROUP) == set()
    assert len([r for r in caplog.records if "event=layer_unavailable" in r.getMessage()]) == 1
    await until(lambda: layer.members(GROUP))
    assert layer.calls == ["new_channel", "group_add", "group_add", "group_add"]  # one channel throughout
    assert layer.members(GROUP) == {membership.channel_name}
    assert len([r for r in caplog.records if "event=layer_joined" in r.getMessage()]) == 1
    await layer.group_send(GROUP, EVENT)
    await until(lambda: events)
    assert events == [EVENT]


async def test_a_layer_that_does_not_answer_at_join_is_given_up_on_after_join_timeout(memberships, events):
    layer = FlakyLayer(failures=1, error=None)  # the first group_add hangs
    membership = memberships(layer)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(membership.join(), 1)
    assert loop.time() - started < 0.5
    await until(lambda: layer.members(GROUP))
    await layer.group_send(GROUP, EVENT)
    await until(lambda: events)
    assert events == [EVENT]


async def test_leave_stops_handling_events_and_discards_the_group(memberships, events):
    layer = FlakyLayer()
    membership = memberships(layer)
    await membership.join()
    channel = membership.channel_name
    await membership.leave()
    assert layer.members(GROUP) == set()
    await layer.send(channel, EVENT)  # straight to the channel: nobody reads it any more
    await asyncio.sleep(0.02)
    assert events == []


async def test_leave_during_background_retries_stops_them(memberships):
    layer = FlakyLayer(failures=1000)
    membership = memberships(layer)
    await membership.join()
    await until(lambda: layer.calls.count("group_add") >= 2)
    await membership.leave()
    attempts = layer.calls.count("group_add")
    await asyncio.sleep(0.05)  # several retry delays
    assert layer.calls.count("group_add") == attempts
    assert layer.calls[-1] == "group_discard"


@pytest.mark.parametrize("error", [OSError("Connection reset by peer"), None], ids=["error", "no-answer"])
async def test_a_layer_error_on_leave_is_logged_not_raised(memberships, events, error, caplog):
    layer = LeaveFailsLayer(error)
    membership = memberships(layer)
    await membership.join()
    channel = membership.channel_name
    await asyncio.wait_for(membership.leave(), 1)
    leaving = [r for r in caplog.records if "while leaving" in r.getMessage()]
    assert len(leaving) == 1 and leaving[0].levelno == logging.WARNING
    await layer.send(channel, EVENT)  # the listening task was stopped all the same
    await asyncio.sleep(0.02)
    assert events == []


async def test_leave_before_any_channel_touches_no_layer(memberships):
    layer = FlakyLayer()
    membership = memberships(layer)
    await membership.leave()
    assert layer.calls == []


async def test_with_redis_down_no_attempt_is_made_until_it_is_back(memberships, events):
    layer = FlakyLayer()
    redis_up = asyncio.Event()
    membership = memberships(layer, redis_up)
    await asyncio.wait_for(membership.join(), 1)  # gives up waiting after JOIN_TIMEOUT
    await asyncio.sleep(0.05)  # several retry delays
    assert layer.calls == []
    redis_up.set()
    await until(lambda: layer.members(GROUP))
    assert layer.calls == ["new_channel", "group_add"]
    await layer.group_send(GROUP, EVENT)
    await until(lambda: events)
    assert events == [EVENT]


async def test_with_redis_up_the_join_happens_at_once(memberships):
    layer = FlakyLayer()
    redis_up = asyncio.Event()
    redis_up.set()
    membership = memberships(layer, redis_up)
    await membership.join()
    assert layer.members(GROUP) == {membership.channel_name}
