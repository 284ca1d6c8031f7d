"""``relay.demo.online``: which demo ids are online, for the demo's "who is online".

Registered only where ``RELAY_DEMO`` is on when Django starts, and answered only while it
is on and only to demo ids: a site without the demo exposes no presence to its clients.
"""

import relay
from relay import presence
from relay.conf import conf
from relay.demo.identity import DEMO_PREFIX


@relay.rpc("relay.demo.online")
async def online(call: relay.Call) -> dict[str, int]:
    """Open connections per online demo id (``demo-*``)."""
    if not conf.RELAY_DEMO or not call.sender.startswith(DEMO_PREFIX):
        raise relay.Reject("unknown_call", f"No call named {call.name!r}.")
    counts = await presence.aconnections()
    return {client_id: n for client_id, n in sorted(counts.items()) if client_id.startswith(DEMO_PREFIX)}
