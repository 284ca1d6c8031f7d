"""``relay.demo.online``: demo presence, for demo ids, only where the demo is on."""

import pytest

from relay import calls
from relay.testing import connect_as

V1 = "relay.v1"


def test_it_is_registered_where_the_demo_was_on_at_startup():
    assert calls.lookup("relay.demo.online") is not None  # tests.settings: RELAY_DEMO follows DEBUG=1


async def test_it_answers_demo_ids_with_the_demo_ids_online(settings, connect):
    settings.RELAY_DEMO = True
    await connect("alice")
    await connect("demo-bob")
    await connect("demo-bob")
    async with connect_as("demo-alice") as demo:
        await demo.send_json_to({"call": "relay.demo.online", "id": 1})
        assert await demo.receive_json_from() == {
            "type": "reply",
            "ref": 1,
            "payload": {"demo-alice": 1, "demo-bob": 2},
        }


@pytest.mark.parametrize(("demo", "caller"), [(False, "demo-alice"), (True, "alice")])
async def test_anyone_else_hears_there_is_no_such_call(settings, demo, caller):
    settings.RELAY_DEMO = demo
    async with connect_as(caller) as client:
        await client.send_json_to({"call": "relay.demo.online", "id": 1})
        assert await client.receive_json_from() == {
            "type": "error",
            "code": "unknown_call",
            "detail": "No call named 'relay.demo.online'.",
            "ref": 1,
        }
