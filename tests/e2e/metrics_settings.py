"""The deployable site's settings with no address allowed to read /relay/metrics.

With ``RELAY_METRICS_ALLOWED_IPS = []`` only the bearer token (``RELAY_METRICS_TOKEN``
in the environment) opens the metrics, even from 127.0.0.1.
"""

from relayproject.settings import *  # noqa: F403

RELAY_METRICS_ALLOWED_IPS: list[str] = []
