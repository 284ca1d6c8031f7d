"""The API keys of ``relay.contrib.http_api`` in the admin (registered when that app is installed)."""

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from relay.contrib.http_api.models import ApiKey

if TYPE_CHECKING:  # ModelAdmin is generic in django-stubs only: ModelAdmin[...] fails at run time
    from django.contrib.admin.options import _FieldGroups

    _ModelAdmin = admin.ModelAdmin[ApiKey]

    class _AddKeyRequest(HttpRequest):
        """The add view's request, carrying the new key from ``save_model`` to ``response_add``."""

        relay_new_key: str
else:
    _ModelAdmin = admin.ModelAdmin


@admin.register(ApiKey)
class ApiKeyAdmin(_ModelAdmin):
    """API keys: created here (the key is shown once), revoked, never shown again."""

    list_display = ["name", "prefix", "active", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_keys"]

    @admin.display(boolean=True)
    def active(self, obj: ApiKey) -> bool:
        return obj.active

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> "_FieldGroups":
        return ["name"] if obj is None else ["name", *self.readonly_fields]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            cast("_AddKeyRequest", request).relay_new_key = obj.assign_new_key()
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        """Show the new key once, on a page of its own (never in a message cookie)."""
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "key": obj,
            "plain_key": cast("_AddKeyRequest", request).relay_new_key,
            "opts": self.opts,
        }
        return TemplateResponse(request, "admin/relay_admin/apikey_created.html", context)

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            key.revoke()
        messages.success(request, f"Revoked {queryset.count()} key(s).")
