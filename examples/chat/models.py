from django.db import models


class ChatMessage(models.Model):
    """One message said in a room."""

    room = models.CharField(max_length=64, db_index=True)
    sender = models.CharField(max_length=64)
    text = models.TextField(max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def as_payload(self) -> dict[str, object]:
        """The message as clients receive it."""
        return {
            "type": "chat",
            "id": self.pk,
            "room": self.room,
            "from": self.sender,
            "text": self.text,
            "at": self.created_at.isoformat(),
        }
