"""The site's settings with one message handler, for measuring what the site's code costs.

``BENCH_HANDLER=async``: an async handler that returns the message (the cost of the
handler machinery itself); ``BENCH_HANDLER=orm``: a sync handler that runs one ORM query
per frame (in a worker thread, as every sync handler does).
"""

import os

from relayproject.settings import *  # noqa: F403

RELAY_MESSAGE_HANDLERS = [
    {"async": "bench.handlers.unchanged", "orm": "bench.handlers.one_query"}[os.environ["BENCH_HANDLER"]]
]
