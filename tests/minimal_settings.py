"""A site with only "relay" installed: no HTTP API, no admin pages, no relay tables."""

import os

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key-0123456789-0123456789-0123456789")
os.environ.setdefault("DEBUG", "1")

from relayproject.settings import *  # noqa: E402,F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if not app.startswith("relay.contrib.")]  # noqa: F405
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
