"""The site's settings with presence that expires in seconds, so a dead process is seen soon.

A heartbeat every second, counted for 3 seconds (the defaults are 10 and 30).
"""

from relayproject.settings import *  # noqa: F403

RELAY_PRESENCE_TTL = 3
RELAY_PRESENCE_HEARTBEAT = 1
