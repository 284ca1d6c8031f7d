"""The floor: the same relay as raw ASGI, with no Django and no Channels.

``daphne bench.floor:application`` serves ``ws://HOST:PORT/ws?id=<client id>``; a text
frame ``{"targets": [ids], "payload": <json>}`` sends the compact JSON of ``payload`` to
every connection of each target in this process. No validation, no errors, no Redis:
it is what any relay under the same server costs at least, and ``make bench`` divides
the relay's figures by its figures.
"""

import json
from urllib.parse import parse_qs

#: Client id -> the ``send`` callables of its open connections.
connections: dict[str, set] = {}


async def application(scope, receive, send):
    """Relay client frames between WebSocket connections; refuse everything else."""
    if scope["type"] != "websocket":
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        return
    client_id = parse_qs(scope["query_string"].decode()).get("id", [""])[0]
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    connections.setdefault(client_id, set()).add(send)
    try:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = json.loads(message.get("text") or "{}")
            text = json.dumps(frame.get("payload"), separators=(",", ":"))
            for target in frame.get("targets", ()):
                for target_send in tuple(connections.get(str(target), ())):
                    await target_send({"type": "websocket.send", "text": text})
    finally:
        connections[client_id].discard(send)
        if not connections[client_id]:
            del connections[client_id]
