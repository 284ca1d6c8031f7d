"""Signals the relay sends, for the site's own code to receive."""

from django.dispatch import Signal

#: Sent after a push made by a person or a service: the admin's "Send a message", the
#: ``relay_send`` command, the HTTP API. Arguments: ``source`` ("admin", "command",
#: "api"), ``actor`` (who: a username, an OS user, an API key's name), ``targets`` (the
#: client ids), ``online`` (how many were online), ``size`` (bytes of the payload's
#: JSON). ``relay.contrib.admin`` records each one in its audit log.
operator_push = Signal()
