"""The relay in the Django admin: send a message, who is online, API keys, the audit log."""
