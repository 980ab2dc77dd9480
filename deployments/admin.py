"""Django admin for deployments. Approving and rejecting promotion requests are admin
actions that call the same services as the browser and the API, so the four-eyes rule
holds here too; endpoints and environments are created, changed and deleted through their
services as well (admins only, audited)."""

import copy

from django import forms
from django.contrib import admin
from django.forms.models import construct_instance
from django.urls import reverse
from django.utils.html import format_html

from portal.admin import decide_selected
from portal.errors import ServiceError

from . import services
from .choices import Source
from .models import (
    Deployment,
    Endpoint,
    Environment,
    LiveVersion,
    LiveVersionHistory,
    PromotionRequest,
)


class LinesField(forms.CharField):
    """A list of strings edited as one per line (the allow-lists). Django has no such form
    field outside django.contrib.postgres, whose SimpleArrayField is for ArrayField."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 80})

    def prepare_value(self, value):
        if isinstance(value, list | tuple):
            return "\n".join(value)
        return value

    def to_python(self, value):
        if isinstance(value, list | tuple):
            return list(value)
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


class ServiceAdminMixin:
    """Endpoints and environments change through their services, whatever the way in: the
    permission is the services' rule, the form's validation is the service's check (so its
    errors show on their fields), and saving and deleting call the services, which write
    the audit record."""

    def _allowed(self, request) -> bool:
        return services.may_configure(request.user)

    def has_add_permission(self, request):
        return self._allowed(request)

    def has_change_permission(self, request, obj=None):
        return self._allowed(request)

    def has_delete_permission(self, request, obj=None):
        return self._allowed(request)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


def _service_check(form: forms.ModelForm, data: dict, check, argument: str) -> dict:
    """Run the service's check on a copy of the instance holding the form's values, before
    the model's own validation: its reasons (which endpoint already maps there, which
    allow-list refuses a bucket) are what the admin reads, and what it resolves (an empty
    target is the endpoint's name) is what the form saves."""
    if form.errors:
        return data
    candidate = construct_instance(form, copy.copy(form.instance))
    try:
        check(**{argument: candidate})
    except ServiceError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return data
    for name in form.fields:
        if name in data and hasattr(candidate, name):
            data[name] = getattr(candidate, name)
    return data


class EnvironmentForm(forms.ModelForm):
    allowed_s3_buckets = LinesField(
        required=False,
        help_text=Environment._meta.get_field("allowed_s3_buckets").help_text + " One a line.",
    )
    allowed_role_arns = LinesField(
        required=False,
        help_text=Environment._meta.get_field("allowed_role_arns").help_text + " One a line.",
    )
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why (kept in the audit record).",
    )

    class Meta:
        model = Environment
        fields = ["name", *services.ENVIRONMENT_FIELDS]

    def clean(self):
        return _service_check(self, super().clean(), services.environment_check, "environment")


@admin.register(Environment)
class EnvironmentAdmin(ServiceAdminMixin, admin.ModelAdmin):
    """No list_editable: approval is changed on the environment's own page, through the
    service, which records the old and new value."""

    form = EnvironmentForm
    list_display = ["name", "label", "requires_approval", "order"]

    def get_readonly_fields(self, request, obj=None):
        return ["name"] if obj is not None else []

    def save_model(self, request, obj, form, change):
        data = {
            f: form.cleaned_data[f] for f in services.ENVIRONMENT_FIELDS if f in form.cleaned_data
        }
        reason = form.cleaned_data.get("reason", "")
        if change:
            saved = services.environment_update(
                actor=request.user, environment=obj, source=Source.ADMIN, reason=reason, **data
            )
        else:
            data.pop("label", None)
            saved = services.environment_create(
                actor=request.user,
                name=obj.name,
                label=obj.label,
                source=Source.ADMIN,
                **data,
            )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.environment_delete(actor=request.user, environment=obj, source=Source.ADMIN)


class EndpointForm(forms.ModelForm):
    reason = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why (kept in the audit record).",
    )

    class Meta:
        model = Endpoint
        fields = ["name", "environment", "backend", *services.ENDPOINT_FIELDS]

    def clean(self):
        return _service_check(self, super().clean(), services.endpoint_check, "endpoint")


@admin.register(Endpoint)
class EndpointAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = EndpointForm
    list_display = [
        "name",
        "environment",
        "backend",
        "target_name",
        "instance_type",
        "region",
        "created_at",
    ]
    list_filter = ["environment", "backend"]
    search_fields = ["name", "target_name"]

    def get_readonly_fields(self, request, obj=None):
        fields = ["created_by", "created_at", "provisioned_at"]
        # The portal's key and the kind of endpoint stay; create another to change them.
        return fields + ["name", "backend"] if obj is not None else fields

    def save_model(self, request, obj, form, change):
        data = {
            f: form.cleaned_data[f]
            for f in services.ENDPOINT_UPDATE_FIELDS
            if f in form.cleaned_data
        }
        if change:
            services.endpoint_update(
                actor=request.user,
                endpoint=obj,
                source=Source.ADMIN,
                reason=form.cleaned_data.get("reason", ""),
                **data,
            )
            return
        environment = data.pop("environment")
        saved = services.endpoint_create(
            actor=request.user,
            name=obj.name,
            environment=environment,
            backend=obj.backend,
            source=Source.ADMIN,
            **data,
        )
        obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.endpoint_delete(actor=request.user, endpoint=obj, source=Source.ADMIN)

    actions = ["recover_selected", "decommission_selected"]

    def _aws_action(self, request, queryset, service, *, verb: str, action: str, explanation):
        """Ask why on an intermediate page, then call the service per endpoint (it checks
        who may, and writes the audit record)."""
        return decide_selected(
            self,
            request,
            queryset,
            verb=verb,
            action=action,
            noun="endpoint(s)",
            decide=lambda endpoint, reason: service(
                actor=request.user, endpoint=endpoint, reason=reason, source=Source.ADMIN
            ),
            describe=lambda endpoint: (
                f"{endpoint.name}: SageMaker endpoint {endpoint.target_name} in "
                f"{endpoint.region} ({endpoint.environment}, {endpoint.initial_instance_count} "
                f"× {endpoint.instance_type})"
            ),
            explanation=explanation,
            reason_field="reason",
            reason_label="Why (kept in the audit record)",
        )

    @admin.action(description="Recover selected Failed SageMaker endpoints (delete them)")
    def recover_selected(self, request, queryset):
        return self._aws_action(
            request,
            queryset,
            services.endpoint_recover,
            verb="recover",
            action="recover_selected",
            explanation="SageMaker left these endpoints Failed. Recovering deletes the failed "
            "endpoint; the next deployment creates it anew from its settings.",
        )

    @admin.action(description="Decommission selected SageMaker endpoints (delete in AWS)")
    def decommission_selected(self, request, queryset):
        return self._aws_action(
            request,
            queryset,
            services.endpoint_decommission,
            verb="decommission",
            action="decommission_selected",
            explanation="Decommissioning deletes each SageMaker endpoint, its endpoint "
            "configurations, models and autoscaling: nothing of it bills or serves any more. "
            "Production endpoints: approvers only.",
        )


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

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in self.model._meta.fields] + ["run_link"]

    @admin.display(description="Run (steps and log)")
    def run_link(self, obj: Deployment) -> str:
        run = obj.run
        if run is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:runs_run_change", args=[run.pk]), run
        )

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

    def _decide(self, request, queryset, service, verb: str):
        return decide_selected(
            self,
            request,
            queryset,
            verb=verb,
            action=f"{verb}_selected",
            noun="request(s)",
            decide=lambda promotion, comment: service(
                actor=request.user, promotion=promotion, comment=comment, source=Source.ADMIN
            ),
            describe=lambda promotion: (
                f"#{promotion.pk} {promotion} — requested by {promotion.requested_by}"
                + (f": “{promotion.comment}”" if promotion.comment else "")
            ),
        )

    @admin.action(description="Approve selected requests (starts the production deployments)")
    def approve_selected(self, request, queryset):
        return self._decide(request, queryset, services.promotion_approve, "approve")

    @admin.action(description="Reject selected requests")
    def reject_selected(self, request, queryset):
        return self._decide(request, queryset, services.promotion_reject, "reject")
