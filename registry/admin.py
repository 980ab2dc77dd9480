"""Django admin for the registry. Versions are registered through the upload form or the API
(which check and store the artifact); here their lineage and artifact are read-only."""

from django.contrib import admin, messages

from portal.choices import Source
from portal.errors import ServiceError

from . import services
from .models import ModelVersion, RegisteredModel, TestResult


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    fields = ["version", "status", "source_commit", "registered_by", "registered_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ["-version"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "created_at", "updated_at"]
    search_fields = ["name", "description"]
    list_select_related = ["owner"]
    # A model's name is in every package name of its versions: it never changes.
    readonly_fields = ["name", "owner", "created_at", "updated_at"]
    inlines = [ModelVersionInline]

    def has_add_permission(self, request):
        # Models are created from the Models page or the API, which check and audit it.
        return False

    def save_model(self, request, obj, form, change):
        try:
            services.model_update(
                actor=request.user,
                model=RegisteredModel.objects.get(pk=obj.pk),
                description=form.cleaned_data.get("description"),
                tags=form.cleaned_data.get("tags"),
                source=Source.ADMIN,
            )
        except ServiceError as exc:
            self.message_user(request, exc.message, messages.ERROR)


class TestResultInline(admin.TabularInline):
    model = TestResult
    fields = ["name", "kind", "outcome", "message", "duration_ms"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "status",
        "source_commit",
        "registered_by",
        "registered_at",
        "attempts",
    ]
    list_filter = ["status", "artifact_source"]
    search_fields = ["model__name", "source_commit", "content_sha256", "dataset_uri"]
    list_select_related = ["model", "registered_by"]
    readonly_fields = [
        "model",
        "version",
        "status",
        "status_changed_at",
        "attempts",
        "artifact_source",
        "artifact_uri",
        "source_uri",
        "content_sha256",
        "size_bytes",
        "source_repository",
        "source_commit",
        "dataset_uri",
        "dataset_version",
        "training_job",
        "parent",
        "metrics",
        "frameworks",
        "tags",
        "registered_by",
        "registered_at",
        "problems",
        "repository_summary",
        "test_cases",
        "progress_log",
        "package_uri",
        "package_sha256",
        "package_size_bytes",
    ]
    inlines = [TestResultInline]
    actions = ["retry_pipeline"]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # Versions are immutable records; deployments and audit events point at them.
        return False

    @admin.action(description="Run the pipeline again from where it stopped")
    def retry_pipeline(self, request, queryset):
        for version in queryset.select_related("model"):
            try:
                services.version_retry(actor=request.user, version=version, source=Source.ADMIN)
            except ServiceError as exc:
                self.message_user(request, f"{version}: {exc.message}", messages.WARNING)
            else:
                self.message_user(request, f"{version}: queued.", messages.SUCCESS)


@admin.register(TestResult)
class TestResultAdmin(admin.ModelAdmin):
    list_display = ["version", "name", "kind", "outcome", "duration_ms", "created_at"]
    list_filter = ["outcome", "kind"]
    list_select_related = ["version", "version__model"]
    search_fields = ["version__model__name", "name"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
