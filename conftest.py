"""The repository's root conftest.py: the relay's pytest fixtures (``relay_pushes``), as a site's own gets them."""

pytest_plugins = ["relay.testing"]
