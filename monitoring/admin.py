from django.contrib import admin

from .models import MetricSample


@admin.register(MetricSample)
class MetricSampleAdmin(admin.ModelAdmin):
    list_display = ("timestamp", "endpoint_name", "target_model", "metric", "stat", "value")
    list_filter = ("endpoint_name", "metric", "stat")
    search_fields = ("endpoint_name", "target_model")
    date_hierarchy = "timestamp"

    # Samples are what the data plane reported; nobody edits them.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
