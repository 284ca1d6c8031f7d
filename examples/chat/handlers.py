"""The message handler: every chat message is saved before it is relayed (RELAY_MESSAGE_HANDLERS)."""

import relay
from examples.chat.models import ChatMessage


def save_chat_message(message: relay.Message) -> relay.Message:
    """Save ``{"type": "chat", "room": ..., "text": ...}`` and relay it with its id and time.

    Sync, so it runs in a worker thread and may use the ORM. Other frames pass unchanged.
    """
    payload = message.payload
    if not isinstance(payload, dict) or payload.get("type") != "chat":
        return message
    room, text = payload.get("room"), payload.get("text")
    if not isinstance(room, str) or not 1 <= len(room) <= 64:
        raise relay.Reject("bad_room", 'A chat message names its "room" (1-64 characters).')
    if not isinstance(text, str) or not text.strip():
        raise relay.Reject("empty_message", "Write something first.")
    if len(text) > 2000:
        raise relay.Reject("too_long", "A message is at most 2,000 characters.")
    saved = ChatMessage.objects.create(room=room, sender=message.sender, text=text)
    return message.replace(payload=saved.as_payload())
