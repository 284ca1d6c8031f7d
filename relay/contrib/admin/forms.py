"""The admin's "Send a message" form: validated like a WebSocket frame."""

import re

from django import forms

from relay import protocol
from relay.protocol import JSON


class SendMessageForm(forms.Form):
    """Client ids and a JSON payload to push to them."""

    targets = forms.CharField(
        help_text="Client ids, separated by spaces or commas.",
        widget=forms.TextInput(attrs={"size": 60}),
    )
    payload = forms.CharField(
        help_text='Any JSON value, e.g. {"text": "Maintenance at 18:00"}.',
        widget=forms.Textarea(attrs={"rows": 8, "cols": 60}),
    )

    def clean_targets(self) -> tuple[str, ...]:
        """The distinct client ids named."""
        raw = [part for part in re.split(r"[\s,]+", self.cleaned_data["targets"]) if part]
        try:
            return protocol.parse_targets(raw, max_targets=10_000)
        except protocol.ProtocolError as exc:
            raise forms.ValidationError(exc.detail, code=exc.code) from None

    def clean_payload(self) -> JSON:
        """The payload as a JSON value."""
        try:
            return protocol.loads(self.cleaned_data["payload"])
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}", code=protocol.INVALID_JSON) from None
