"""The demo (``RELAY_DEMO = True``): clients in one page chatting through the relay, with relay.js only.

``/relay/demo/`` in a site that includes ``relay.urls`` (and ``/`` in the relay's own site
with DEBUG on). It mints tokens for ``demo-<name>`` ids (``token``), and registers one call,
``relay.demo.online``, that tells demo clients which demo ids are online. With DEBUG off
only staff may use it; ``check --deploy`` warns while it is on.
"""
