"""Django admin for project-wide models: the audit trail (read-only) and API tokens."""

from django.contrib import admin, messages

from . import services
from .models import ApiToken, AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail is history: nobody adds, edits or deletes it, administrators included."""

    list_display = [
        "created_at",
        "action",
        "target_repr",
        "from_state",
        "to_state",
        "actor",
        "source",
    ]
    list_filter = ["action", "source", "target_type"]
    search_fields = ["target_repr", "reason", "actor__username", "action"]
    list_select_related = ["actor", "target_type"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # With the view permission only, the admin shows each event read-only.
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created by their user in the browser (the raw token is shown only there);
    administrators list and revoke them."""

    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username", "prefix"]
    list_select_related = ["user"]
    readonly_fields = [
        "user",
        "name",
        "prefix",
        "token_hash",
        "created_at",
        "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        revoked = services.tokens_revoke_by_admin(
            actor=request.user, token_ids=list(queryset.values_list("pk", flat=True))
        )
        self.message_user(request, f"{revoked} token(s) revoked.", messages.SUCCESS)
