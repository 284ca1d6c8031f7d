"""The site's settings with a longer history and short timings, for the delivery-history tests.

600 entries per id (a test misses 500); entries kept ``HISTORY_TTL`` seconds (300 unless
the test sets the variable); presence and drains as in fault_settings.
"""

import os

from relayproject.settings import *  # noqa: F403

RELAY_HISTORY_SIZE = 600
RELAY_HISTORY_TTL = int(os.environ.get("HISTORY_TTL", "300"))
RELAY_PRESENCE_TTL = 3
RELAY_PRESENCE_HEARTBEAT = 1
RELAY_SHUTDOWN_TIMEOUT = 3.0
