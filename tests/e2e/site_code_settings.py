"""The site's settings with a send policy that reads the database (it runs in a worker thread).

Before, a sync policy ran on the event loop: ``User.objects...exists()`` raised
SynchronousOnlyOperation and the sender was closed with 1011.
"""

from django.contrib.auth import get_user_model

from relayproject.settings import *  # noqa: F403

RELAY_SEND_POLICY = "tests.e2e.site_code_settings.only_to_users"


def only_to_users(sender: str, target: str) -> bool:
    """Clients may send to the usernames of the site's users only."""
    return get_user_model().objects.filter(username=target).exists()
