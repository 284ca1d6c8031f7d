"""The site's settings with the built-in policy that lets clients reach only their own id."""

from relayproject.settings import *  # noqa: F403

RELAY_SEND_POLICY = "relay.server.policies.SameIdOnly"
