"""Filters shared by the browser lists and the API (one definition serves both)."""

import django_filters
from django.db import connection
from django.db.models import Q

from .choices import VersionStatus
from .models import ModelVersion, RegisteredModel


def _tag_filter(queryset, field: str, value: str):
    """Rows whose JSON list `field` holds `value`."""
    if not value:
        return queryset
    if connection.vendor == "postgresql":
        return queryset.filter(**{f"{field}__contains": [value]})
    # SQLite has no JSON containment: match the quoted element in the JSON text.
    return queryset.filter(**{f"{field}__icontains": f'"{value}"'})


class RegisteredModelFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_q", label="Search")
    tag = django_filters.CharFilter(method="filter_tag", label="Tag")
    owner = django_filters.CharFilter(field_name="owner__username", label="Owner")
    status = django_filters.ChoiceFilter(
        choices=VersionStatus.choices, method="filter_status", label="Latest status"
    )

    class Meta:
        model = RegisteredModel
        fields = ["q", "tag", "owner", "status"]

    def filter_q(self, queryset, name, value):
        if not value:
            return queryset
        return queryset.filter(Q(name__icontains=value) | Q(description__icontains=value))

    def filter_tag(self, queryset, name, value):
        return _tag_filter(queryset, "tags", value)

    def filter_status(self, queryset, name, value):
        # `latest_status` is annotated by selectors.model_list.
        return queryset.filter(latest_status=value) if value else queryset


class ModelVersionFilterSet(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=VersionStatus.choices, label="Status")
    tag = django_filters.CharFilter(method="filter_tag", label="Tag")
    commit = django_filters.CharFilter(method="filter_commit", label="Commit (prefix)")
    model = django_filters.CharFilter(field_name="model__name", label="Model")
    registered_by = django_filters.CharFilter(
        field_name="registered_by__username", label="Registered by"
    )
    sha256 = django_filters.CharFilter(field_name="content_sha256", label="Content sha256")

    class Meta:
        model = ModelVersion
        fields = ["status", "tag", "commit", "model", "registered_by", "sha256"]

    def filter_tag(self, queryset, name, value):
        return _tag_filter(queryset, "tags", value)

    def filter_commit(self, queryset, name, value):
        # CI knows the full commit, people type a prefix.
        return queryset.filter(source_commit__startswith=value) if value else queryset
