"""The site's settings under a daphne whose internals the relay does not know.

Makes the relay's daphne adapter look for a transport attribute no daphne has, as a
future daphne might rename the ones it reads: the relay must warn once and still close
connections with codes daphne's ASGI close accepts. Small rate limit (1008 after 5
refused frames) and a short drain, as in rate_limit_settings and fault_settings.
"""

import relay.server.daphne
from relayproject.settings import *  # noqa: F403

relay.server.daphne.TRANSPORT_ATTRIBUTES = ("attribute_of_no_daphne",)

RELAY_RATE_LIMIT = "10/m"
RELAY_RATE_BURST = 10
RELAY_RATE_LIMIT_CLOSE_AFTER = 5
RELAY_SHUTDOWN_TIMEOUT = 3.0
