"""The README's "Testing your code", verbatim: a site's tests of its code that pushes.

The ``relay_pushes`` fixture comes from ``pytest_plugins = ["relay.testing"]`` in the root
``conftest.py``, as the README says.
"""

from asgiref.sync import sync_to_async

import relay
from relay.testing import Push, capture_pushes, connect_as


def pay(invoice_id, customer):  # your code: a view, a task, a signal receiver...
    relay.send(customer, {"type": "invoice.paid", "id": invoice_id})


def test_paying_tells_the_customer():
    with capture_pushes() as pushes:
        pay(1234, "alice")
    assert pushes.to("alice") == [{"type": "invoice.paid", "id": 1234}]


def test_the_fixture_does_the_same(relay_pushes):
    pay(1234, "alice")
    assert relay_pushes == [Push(targets=("alice",), payload={"type": "invoice.paid", "id": 1234})]


async def test_a_connected_client_receives_it():
    async with connect_as("alice") as alice:  # a channels.testing.WebsocketCommunicator, in relay.v1
        with capture_pushes(deliver=True) as pushes:
            await sync_to_async(pay)(1234, "alice")
        assert await alice.receive_json_from() == {
            "type": "message",
            "from": None,
            "payload": {"type": "invoice.paid", "id": 1234},
        }
    assert len(pushes) == 1
