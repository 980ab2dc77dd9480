from django.contrib import admin

from .models import Run, RunLogLine, RunStep


class RunStepInline(admin.TabularInline):
    model = RunStep
    extra = 0
    can_delete = False
    fields = ["position", "name", "state", "started_at", "finished_at", "error"]
    readonly_fields = fields


class RunLogLineInline(admin.TabularInline):
    model = RunLogLine
    extra = 0
    can_delete = False
    fields = ["created_at", "level", "step", "message"]
    readonly_fields = fields


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    """Runs are written by workers only; the admin shows them."""

    list_display = ["id", "plan", "content_type", "object_id", "state", "attempts", "created_at"]
    list_filter = ["plan", "state"]
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [RunStepInline, RunLogLineInline]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
