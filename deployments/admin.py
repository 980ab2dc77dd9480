"""Django admin for deployments. Approving and rejecting promotion requests are admin
actions that call the same services as the browser and the API, so the four-eyes rule
holds here too."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils.html import format_html

from portal.errors import ServiceError

from . import services
from .choices import Source
from .models import (
    Deployment,
    DeploymentLog,
    Endpoint,
    Environment,
    LiveVersion,
    LiveVersionHistory,
    PromotionRequest,
)


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "label", "requires_approval", "order"]
    list_editable = ["requires_approval", "order"]


@admin.register(Endpoint)
class EndpointAdmin(admin.ModelAdmin):
    list_display = ["name", "environment", "backend", "instance_type", "region", "created_at"]
    list_filter = ["environment", "backend"]
    search_fields = ["name", "dataplane_endpoint"]
    readonly_fields = ["created_by", "created_at", "provisioned_at"]


class DeploymentLogInline(admin.TabularInline):
    model = DeploymentLog
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "level", "step", "message"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    """Deployments are read here; they change state only through their services."""

    list_display = [
        "id",
        "endpoint",
        "version",
        "kind",
        "state",
        "created_by",
        "source",
        "created_at",
    ]
    list_filter = ["state", "kind", "source", "endpoint"]
    search_fields = ["model__name", "endpoint__name"]
    list_select_related = ["endpoint", "version__model", "created_by"]
    inlines = [DeploymentLogInline]

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(LiveVersion)
class LiveVersionAdmin(admin.ModelAdmin):
    list_display = ["endpoint", "model", "version", "since", "deployment"]
    list_select_related = ["endpoint", "model", "version__model", "deployment"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(LiveVersionHistory)
class LiveVersionHistoryAdmin(LiveVersionAdmin):
    list_display = ["endpoint", "model", "version", "since", "until", "deployment"]
    list_filter = ["endpoint"]


@admin.register(PromotionRequest)
class PromotionRequestAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "version",
        "target_endpoint",
        "state_badge",
        "requested_by",
        "requested_at",
        "decided_by",
    ]
    list_filter = ["state", "target_endpoint"]
    list_select_related = ["version__model", "target_endpoint", "requested_by", "decided_by"]
    readonly_fields = [
        "version",
        "target_endpoint",
        "staging_deployment",
        "state",
        "evidence",
        "requested_by",
        "requested_at",
        "source",
        "decided_by",
        "decided_at",
        "decision_comment",
        "deployment",
        "comment",
    ]
    actions = ["approve_selected", "reject_selected"]

    @admin.display(description="State", ordering="state")
    def state_badge(self, obj: PromotionRequest) -> str:
        return format_html("<strong>{}</strong>", obj.get_state_display())

    def has_add_permission(self, request):
        return False

    def _decide(self, request, queryset, service, verb: str, action: str):
        """Ask for the comment on an intermediate page, then call the service per request."""
        if "apply" not in request.POST:
            return TemplateResponse(
                request,
                "admin/deployments/promotionrequest/decide.html",
                {
                    **self.admin_site.each_context(request),
                    "title": f"{verb.capitalize()} promotion requests",
                    "opts": self.model._meta,
                    "queryset": queryset,
                    "action": action,
                    "verb": verb,
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                },
            )
        comment = request.POST.get("comment", "")
        done, refused = 0, []
        for promotion in queryset:
            try:
                service(
                    actor=request.user, promotion=promotion, comment=comment, source=Source.ADMIN
                )
                done += 1
            except ServiceError as exc:
                refused.append(f"#{promotion.pk}: {exc.message}")
        if done:
            self.message_user(request, f"{done} request(s) {verb}d.", messages.SUCCESS)
        for message in refused:
            self.message_user(request, message, messages.ERROR)
        return None

    @admin.action(description="Approve selected requests (starts the production deployments)")
    def approve_selected(self, request, queryset):
        return self._decide(
            request, queryset, services.promotion_approve, "approve", "approve_selected"
        )

    @admin.action(description="Reject selected requests")
    def reject_selected(self, request, queryset):
        return self._decide(
            request, queryset, services.promotion_reject, "reject", "reject_selected"
        )
