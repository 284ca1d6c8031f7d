"""The relay in the Django admin: send a message, see who is online, API keys, audit log."""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from . import api, presence, protocol
from .forms import SendMessageForm
from .models import ApiKey, AuditEntry


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """API keys: created here (the key is shown once), revoked, never shown again."""

    list_display = ["name", "prefix", "active", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_keys"]

    @admin.display(boolean=True)
    def active(self, obj: ApiKey) -> bool:
        return obj.active

    def get_fields(self, request, obj=None):
        return ["name"] if obj is None else ["name", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if not change:
            request.relay_new_key = obj.assign_new_key()
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        """Show the new key once, on a page of its own (never in a message cookie)."""
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "key": obj,
            "plain_key": request.relay_new_key,
            "opts": self.opts,
        }
        return TemplateResponse(request, "admin/relay/apikey/created.html", context)

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        for key in queryset:
            key.revoke()
        messages.success(request, f"Revoked {queryset.count()} key(s).")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """The audit log (read-only), with the "Send a message" and "Who is online" pages."""

    list_display = ["created_at", "source", "actor", "target_list", "online", "size"]
    list_filter = ["source"]
    search_fields = ["actor"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="targets")
    def target_list(self, obj: AuditEntry) -> str:
        shown = ", ".join(obj.targets[:10])
        return shown + (f" … (+{len(obj.targets) - 10})" if len(obj.targets) > 10 else "")

    def get_urls(self):
        return [
            path("send/", self.admin_site.admin_view(self.send_view), name="relay_send_message"),
            path("online/", self.admin_site.admin_view(self.online_view), name="relay_online"),
            *super().get_urls(),
        ]

    def send_view(self, request):
        """Staff with ``relay.send_message`` push a JSON payload to client ids."""
        if not request.user.has_perm("relay.send_message"):
            raise PermissionDenied
        form = SendMessageForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            targets, payload = list(form.cleaned_data["targets"]), form.cleaned_data["payload"]
            try:
                online = api.send(targets, payload)
            except api.LAYER_ERRORS as exc:
                messages.error(request, f"Not sent: the relay cannot reach its channel layer ({exc}).")
            else:
                AuditEntry.record(
                    AuditEntry.Source.ADMIN, request.user.get_username(), targets, online, len(protocol.dumps(payload))
                )
                messages.success(request, f"Sent to {len(targets)} target(s); {online} online.")
                return redirect(reverse("admin:relay_send_message"))
        context = {**self.admin_site.each_context(request), "title": "Send a message", "form": form, "opts": self.opts}
        return TemplateResponse(request, "admin/relay/send_message.html", context)

    def online_view(self, request):
        """Client ids with an open connection, and how many connections each."""
        if not (request.user.has_perm("relay.send_message") or request.user.has_perm("relay.view_auditentry")):
            raise PermissionDenied
        try:
            counts = sorted(presence.connections().items())
            error = None
        except api.LAYER_ERRORS as exc:
            counts, error = [], f"Presence is unavailable: {exc}"
        context = {
            **self.admin_site.each_context(request),
            "title": "Who is online",
            "counts": counts,
            "total": sum(n for _, n in counts),
            "error": error,
            "opts": self.opts,
        }
        return TemplateResponse(request, "admin/relay/online.html", context)
