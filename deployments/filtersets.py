"""Filters shared by the list pages and the list API."""

import django_filters
from django import forms

from .choices import Backend, DeploymentKind, DeploymentState, PromotionState
from .models import Deployment, Endpoint, PromotionRequest


class IntegerFilter(django_filters.NumberFilter):
    """A whole number (NumberFilter takes decimals, which no version number is)."""

    field_class = forms.IntegerField


class EndpointFilterSet(django_filters.FilterSet):
    # By name: an environment that does not exist matches no endpoint (an empty page).
    environment = django_filters.CharFilter(field_name="environment__name", label="Environment")
    backend = django_filters.ChoiceFilter(choices=Backend.choices, label="Backend")

    class Meta:
        model = Endpoint
        fields = ["environment", "backend"]


class DeploymentFilterSet(django_filters.FilterSet):
    # Labels are the words the list pages show (django-filter would derive "Endpoint
    # environment name" and "Version version" from the lookups).
    endpoint = django_filters.CharFilter(field_name="endpoint__name", label="Endpoint")
    model = django_filters.CharFilter(field_name="model__name", label="Model")
    version = IntegerFilter(field_name="version__version", label="Version")
    environment = django_filters.CharFilter(
        field_name="endpoint__environment__name", label="Environment"
    )
    state = django_filters.MultipleChoiceFilter(choices=DeploymentState.choices, label="State")
    kind = django_filters.ChoiceFilter(choices=DeploymentKind.choices, label="Kind")

    class Meta:
        model = Deployment
        fields = ["endpoint", "model", "version", "environment", "state", "kind"]


class PromotionFilterSet(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=PromotionState.choices, label="State")
    model = django_filters.CharFilter(field_name="version__model__name", label="Model")
    target_endpoint = django_filters.CharFilter(
        field_name="target_endpoint__name", label="Target endpoint"
    )

    class Meta:
        model = PromotionRequest
        fields = ["state", "model", "target_endpoint"]
