"""Optional Django apps around the relay: add them to ``INSTALLED_APPS`` where wanted."""
