"""The deployable site's settings with short timings, for the fault tests.

Servers run with ``DJANGO_SETTINGS_MODULE=tests.e2e.fault_settings``: presence expires
after 3 s (heartbeat every 1 s) and a SIGTERM'd process waits at most 3 s for its
clients, so the tests can watch a dead process leave presence and a drain finish.
"""

from relayproject.settings import *  # noqa: F403

RELAY_PRESENCE_TTL = 3
RELAY_PRESENCE_HEARTBEAT = 1
RELAY_SHUTDOWN_TIMEOUT = 3.0
