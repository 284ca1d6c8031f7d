"""The admin's relay permissions, in one place (the pages of both admin modules check them)."""

#: The permission to push from the admin, and to create API keys (a key pushes too).
SEND_PERMISSION = "relay_admin.send_message"
