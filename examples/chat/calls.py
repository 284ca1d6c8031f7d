"""The call: ``{"call": "chat.history", "payload": {"room": "lobby"}, "id": 1}`` answers the last 50 messages."""

import relay
from examples.chat.models import ChatMessage

HISTORY_LENGTH = 50


@relay.rpc("chat.history")
def history(call: relay.Call) -> list[dict[str, object]]:
    """The room's last 50 messages, oldest first."""
    room = call.payload.get("room") if isinstance(call.payload, dict) else None
    if not isinstance(room, str):
        raise relay.Reject("bad_room", 'Name the room: {"room": "lobby"}.')
    latest = ChatMessage.objects.filter(room=room).order_by("-id")[:HISTORY_LENGTH]
    return [message.as_payload() for message in reversed(latest)]
