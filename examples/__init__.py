"""Example apps built on the relay (see the README's "Adding your own logic")."""
