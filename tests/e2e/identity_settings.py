"""The deployable site's settings with a site's own identity backend before the built-ins.

Servers run with ``DJANGO_SETTINGS_MODULE=tests.e2e.identity_settings``: a signed
``?ticket=`` (``tests/e2e/identity_backends.py``) decides first, then a session login
as ``account-<username>`` with ``?as=account``; tokens, sessions and ``?id=`` work as by
default.
"""

from relayproject.settings import *  # noqa: F403

RELAY_IDENTITY_BACKENDS = [
    "tests.e2e.identity_backends.TicketBackend",
    "tests.e2e.identity_backends.AccountSessionBackend",
    "relay.identity.backends.TokenBackend",
    "relay.identity.backends.SessionBackend",
    "relay.identity.backends.QueryIdBackend",
]
