"""The API keys of ``relay.contrib.http_api`` in the admin (registered when that app is installed)."""

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from relay.contrib.admin.permissions import SEND_PERMISSION
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
    """API keys: created here (the key is shown once), revoked, never shown again.

    Creating one takes ``add_apikey`` and ``relay_admin.send_message``; revoking, ``change_apikey``.
    """

    list_display = ["name", "prefix", "active", "scope", "created_at", "last_used_at", "revoked_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    #: Chosen when the key is created, then fixed: widening a key's reach takes a new key.
    scope_fields = ["can_send", "can_read_presence", "client_ids"]
    actions = ["revoke_keys"]

    @admin.display(boolean=True)
    def active(self, obj: ApiKey) -> bool:
        return obj.active

    @admin.display(description="scope")
    def scope(self, obj: ApiKey) -> str:
        return obj.scope

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> "_FieldGroups":
        if obj is None:
            return ["name", *self.scope_fields]
        return ["name", *self.scope_fields, *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return self.readonly_fields if obj is None else [*self.scope_fields, *self.readonly_fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Creating a key needs the permission to push as well: a key pushes (relay_admin.send_message)."""
        return super().has_add_permission(request) and request.user.has_perm(SEND_PERMISSION)

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
