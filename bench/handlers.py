"""Message handlers for the benchmark (``bench/site_code_settings.py``)."""

from django.contrib.auth import get_user_model

import relay


async def unchanged(message: relay.Message) -> relay.Message:
    """Return the message as it came: what an async handler costs by itself."""
    return message


def one_query(message: relay.Message) -> relay.Message:
    """One ORM query per frame, from a sync handler: what the thread hop and a query cost."""
    get_user_model().objects.filter(pk=1).exists()
    return message
