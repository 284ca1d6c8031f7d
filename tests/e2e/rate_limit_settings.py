"""The site's settings with a small rate limit, for counting exactly what gets through.

Bursts of 10 frames, refilled at 10 a minute (one every 6 s, so that a slow test machine
cannot earn a frame in the middle of a burst), closed with 1008 after 5 rate-limited
frames in a row.
"""

from relayproject.settings import *  # noqa: F403

RELAY_RATE_LIMIT = "10/m"
RELAY_RATE_BURST = 10
RELAY_RATE_LIMIT_CLOSE_AFTER = 5
