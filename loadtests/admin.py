"""Django admin for load tests: read-mostly (they are started from the endpoint's page or
the API, where the configuration is validated), with approve and reject actions that go
through the same services, and so obey the same rules, as the browser and the API."""

from __future__ import annotations

from django.contrib import admin

from portal.admin import decide_selected
from portal.choices import Source

from . import services
from .models import LoadTest, LoadTestStage


class LoadTestStageInline(admin.TabularInline):
    model = LoadTestStage
    extra = 0
    can_delete = False
    fields = [
        "position",
        "offered_rps",
        "achieved_rps",
        "p50_ms",
        "p99_ms",
        "errors",
        "cache_hit_ratio",
        "model_loads",
        "on_schedule",
        "slo_met",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(LoadTest)
class LoadTestAdmin(admin.ModelAdmin):
    list_display = ["id", "endpoint", "version", "state", "verdict", "created_by", "created_at"]
    list_filter = ["state", "verdict", "endpoint"]
    list_select_related = ["endpoint", "version__model", "created_by"]
    readonly_fields = [
        "endpoint",
        "deployment",
        "version",
        "state",
        "verdict",
        "config",
        "result",
        "error",
        "created_by",
        "created_at",
        "source",
        "approved_by",
        "approved_at",
        "started_at",
        "finished_at",
        "applied_by",
        "applied_at",
        "stop_requested",
    ]
    exclude = ["payload_upload"]
    inlines = [LoadTestStageInline]
    actions = ["approve_selected", "reject_selected"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Approve selected load tests (queues them)")
    def approve_selected(self, request, queryset):
        return decide_selected(
            self,
            request,
            queryset,
            verb="approve",
            action="approve_selected",
            noun="load test(s)",
            decide=lambda load_test, reason: services.loadtest_approve(
                actor=request.user, load_test=load_test, source=Source.ADMIN
            ),
        )

    @admin.action(description="Reject selected load tests")
    def reject_selected(self, request, queryset):
        return decide_selected(
            self,
            request,
            queryset,
            verb="reject",
            action="reject_selected",
            noun="load test(s)",
            decide=lambda load_test, reason: services.loadtest_reject(
                actor=request.user, load_test=load_test, reason=reason, source=Source.ADMIN
            ),
        )
