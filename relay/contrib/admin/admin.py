"""The relay in the Django admin: send a message, see who is online, the audit log."""

from typing import TYPE_CHECKING

from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from relay import api, presence, protocol
from relay.contrib.admin.forms import SendMessageForm
from relay.contrib.admin.models import AuditEntry
from relay.contrib.admin.permissions import SEND_PERMISSION  # re-exported: it was defined here
from relay.exceptions import LAYER_ERRORS

if TYPE_CHECKING:  # ModelAdmin is generic in django-stubs only: ModelAdmin[...] fails at run time
    _ModelAdmin = admin.ModelAdmin[AuditEntry]
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(AuditEntry)
class AuditEntryAdmin(_ModelAdmin):
    """The audit log, with the "Send a message" and "Who is online" pages.

    Read-only: nobody adds or changes entries here, and only superusers may delete them.
    """

    list_display = ["created_at", "source", "actor", "target_list", "online", "size"]
    list_filter = ["source"]
    search_fields = ["actor"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        # An audit log that its subjects can prune is no audit log: only superusers, whatever
        # permissions staff were given (old entries go by RELAY_AUDIT_RETENTION_DAYS anyway).
        return bool(request.user.is_superuser)

    @admin.display(description="targets")
    def target_list(self, obj: AuditEntry) -> str:
        shown = ", ".join(obj.targets[:10])
        return shown + (f" … (+{len(obj.targets) - 10})" if len(obj.targets) > 10 else "")

    def get_urls(self) -> list[URLPattern]:
        return [
            path("send/", self.admin_site.admin_view(self.send_view), name="relay_send_message"),
            path("online/", self.admin_site.admin_view(self.online_view), name="relay_online"),
            *super().get_urls(),
        ]

    def send_view(self, request: HttpRequest) -> HttpResponse:
        """Staff with ``relay_admin.send_message`` push a JSON payload to client ids."""
        if not request.user.has_perm(SEND_PERMISSION):
            raise PermissionDenied
        form = SendMessageForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            targets, payload = list(form.cleaned_data["targets"]), form.cleaned_data["payload"]
            try:
                sent = api.send(targets, payload)
            except LAYER_ERRORS as exc:
                messages.error(request, f"Not sent: the relay cannot reach Redis ({exc}).")
            else:
                size = len(protocol.dumps(payload))
                AuditEntry.record(AuditEntry.Source.ADMIN, request.user.get_username(), targets, len(sent.online), size)
                messages.success(request, sent.summary())
                return redirect(reverse("admin:relay_send_message"))
        context = {**self.admin_site.each_context(request), "title": "Send a message", "form": form, "opts": self.opts}
        return TemplateResponse(request, "admin/relay_admin/send_message.html", context)

    def online_view(self, request: HttpRequest) -> HttpResponse:
        """Client ids with an open connection, and how many connections each."""
        if not (request.user.has_perm(SEND_PERMISSION) or request.user.has_perm("relay_admin.view_auditentry")):
            raise PermissionDenied
        try:
            counts = sorted(presence.connections().items())
            error = None
        except LAYER_ERRORS as exc:
            counts, error = [], f"Presence is unavailable: {exc}"
        context = {
            **self.admin_site.each_context(request),
            "title": "Who is online",
            "counts": counts,
            "total": sum(n for _, n in counts),
            "error": error,
            "opts": self.opts,
        }
        return TemplateResponse(request, "admin/relay_admin/online.html", context)


if apps.is_installed("relay.contrib.http_api"):
    from relay.contrib.admin import api_keys  # noqa: F401  (registers the API keys' admin)
