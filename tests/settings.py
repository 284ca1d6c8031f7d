"""Settings for in-process tests: the site's settings with a test secret and the in-memory layer.

Tests against Redis start real daphne processes with the site's own settings instead.
"""

import os

# What the site reads from the environment is fixed here, whatever the shell exports
# (DEBUG=0 would turn on HTTPS redirects, RELAY_* would change the relay's settings).
os.environ["SECRET_KEY"] = "tests-only-secret-key-0123456789-0123456789-0123456789"
os.environ["DEBUG"] = "1"
for name in [name for name in os.environ if name.startswith("RELAY_")]:
    del os.environ[name]

from relayproject.settings import *  # noqa: E402,F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# pytest-django runs tests with DEBUG off; the open ?id= mode is what most tests use.
RELAY_ALLOW_QUERY_ID = True
# Both framings, as with DEBUG on: most tests speak the original one (the default with DEBUG off is relay.v1 only).
RELAY_FRAMINGS = ["relay.v1", "original"]
# Tests that send fast turn the limit on themselves; the others must not trip it.
RELAY_RATE_LIMIT = None
# The test package as an app, so that its calls.py is discovered like a site app's.
INSTALLED_APPS = [*INSTALLED_APPS, "tests"]  # noqa: F405
