"""Presence with the in-memory layer: this process's hubs, read sync and async."""

import pytest

from relay import presence
from relay.identity.tokens import issue


async def test_nobody_online():
    assert presence.connections() == {}
    assert presence.connections(["alice"]) == {}
    assert presence.online(["alice", "bob"]) == set()
    assert presence.is_online("alice") is False
    assert presence.count() == 0


async def test_reflects_connections(connect):
    await connect("alice")
    await connect("alice")
    await connect("bob")
    await connect("2")
    assert presence.connections() == {"alice": 2, "bob": 1, "2": 1}
    assert presence.connections(["alice", "nobody"]) == {"alice": 2}
    assert presence.connections([]) == {}
    assert presence.online(["alice", "bob", "nobody"]) == {"alice", "bob"}
    assert presence.online(iter(["2"])) == {"2"}
    assert presence.is_online("alice") is True
    assert presence.is_online("nobody") is False
    assert presence.count() == 3


async def test_async_forms(connect):
    await connect("alice")
    await connect("alice")
    await connect("bob")
    assert await presence.aconnections() == {"alice": 2, "bob": 1}
    assert await presence.aconnections(["bob", "nobody"]) == {"bob": 1}
    assert await presence.aonline(["alice", "nobody"]) == {"alice"}
    assert await presence.ais_online("bob") is True
    assert await presence.ais_online("nobody") is False
    assert await presence.acount() == 2


async def test_disconnects_count_at_once(connect):
    alice_phone = await connect("alice")
    alice_laptop = await connect("alice")
    bob = await connect("bob")
    await alice_phone.disconnect()
    assert presence.connections() == {"alice": 1, "bob": 1}
    assert presence.is_online("alice") is True
    await alice_laptop.disconnect()
    assert presence.connections() == {"bob": 1}
    assert presence.is_online("alice") is False
    assert await presence.acount() == 1
    await bob.disconnect()
    assert presence.count() == 0


async def test_refused_handshakes_are_not_online(open_socket, settings):
    settings.RELAY_ALLOWED_ORIGINS = ["example.com"]
    accepted, _ = await open_socket("/ws?id=alice", headers=[(b"origin", b"https://evil.example")])
    assert accepted is False
    accepted, _ = await open_socket("/ws?id=a%20b")
    assert accepted is False
    assert presence.count() == 0


@pytest.mark.parametrize("subprotocols", [None, ["relay.v1"]])
async def test_both_framings_count(connect, subprotocols):
    await connect("alice", subprotocols)
    assert presence.connections() == {"alice": 1}


async def test_token_identity_is_what_counts(open_socket):
    accepted, _ = await open_socket(f"/ws?token={issue('bob')}&id=ignored")
    assert accepted
    assert presence.connections() == {"bob": 1}
