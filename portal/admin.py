"""Django admin for project-wide models (the audit trail, read-only, and API tokens), and
the one way admin actions decide several objects with a reason (approve, reject)."""

from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from . import services
from .errors import ServiceError
from .models import ApiToken, AuditEvent

MAX_REASON = 2000


def decide_selected(
    model_admin: admin.ModelAdmin,
    request,
    queryset,
    *,
    verb: str,
    action: str,
    noun: str,
    decide: Callable[[object, str], object],
    describe: Callable[[object], str] = str,
    explanation: str = "",
    reason_field: str = "comment",
    reason_label: str = "Comment",
):
    """An admin action that decides each selected object through its service: first an
    intermediate page (`templates/admin/decide.html`) lists them (`describe`) and asks for
    the reason, then `decide(obj, reason)` runs per object; what a service refuses is
    reported per object, the others still go through."""
    if "apply" not in request.POST:
        return TemplateResponse(
            request,
            "admin/decide.html",
            {
                **model_admin.admin_site.each_context(request),
                "title": f"{verb.capitalize()} {noun}",
                "opts": model_admin.model._meta,
                "items": [(obj, describe(obj)) for obj in queryset],
                "action": action,
                "verb": verb,
                "explanation": explanation,
                "reason_field": reason_field,
                "reason_label": reason_label,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )
    reason = request.POST.get(reason_field, "")[:MAX_REASON]
    done, refused = 0, []
    for obj in queryset:
        try:
            decide(obj, reason)
            done += 1
        except ServiceError as exc:
            refused.append(f"#{obj.pk}: {exc.message}")
    if done:
        past = verb + ("d" if verb.endswith("e") else "ed")
        model_admin.message_user(request, f"{done} {noun} {past}.", messages.SUCCESS)
    for message in refused:
        model_admin.message_user(request, message, messages.ERROR)
    return None


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
