"""The API keys of ``relay.contrib.http_api`` in the admin (registered when that app is installed)."""

from django.contrib import admin, messages
from django.template.response import TemplateResponse

from relay.contrib.http_api.models import ApiKey


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
        return TemplateResponse(request, "admin/relay_admin/apikey_created.html", context)

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke_keys(self, request, queryset):
        for key in queryset:
            key.revoke()
        messages.success(request, f"Revoked {queryset.count()} key(s).")
