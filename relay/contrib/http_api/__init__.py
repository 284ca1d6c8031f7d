"""The HTTP API (``/relay/api/``) and its API keys, for services that are not Django."""
