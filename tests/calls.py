"""Calls of the test site, registered at startup as any installed app's ``calls.py`` would be."""

import relay


@relay.rpc("testapp.echo")
async def echo(call: relay.Call) -> object:
    """Answer with the payload."""
    return call.payload
