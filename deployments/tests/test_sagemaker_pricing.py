"""The hourly cost of a SageMaker endpoint: instance type × count × the list price, or "price
unknown" (never 0); an admin prices the types they add. The endpoint page and the
decommission confirmation say what decommissioning stops."""

from __future__ import annotations

from decimal import Decimal

import pytest

from deployments.backends.sagemaker.pricing import HOURLY_PRICES_USD, hourly_cost
from deployments.choices import MME_GPU_INSTANCE_TYPES

from .factories import sagemaker_endpoint

pytestmark = pytest.mark.django_db


def test_every_offered_instance_type_has_a_list_price():
    assert {value for value, _ in MME_GPU_INSTANCE_TYPES} == set(HOURLY_PRICES_USD)


def test_the_cost_is_type_times_count_times_price():
    endpoint = sagemaker_endpoint(instance_type="ml.g5.xlarge", initial_instance_count=3)
    cost = hourly_cost(endpoint)
    assert cost.hourly == Decimal("4.224")
    assert str(cost) == "3 × ml.g5.xlarge × $1.408/h = $4.22/h"
    assert hourly_cost(endpoint, 1).hourly == Decimal("1.408")


def test_a_type_without_a_price_is_unknown_until_an_admin_prices_it(settings):
    settings.BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES = ["ml.g6.xlarge"]
    endpoint = sagemaker_endpoint(instance_type="ml.g6.xlarge", initial_instance_count=2)
    assert hourly_cost(endpoint).hourly is None
    assert str(hourly_cost(endpoint)) == "2 × ml.g6.xlarge: price unknown"

    # Malformed entries are skipped (and logged), not read as 0.
    settings.BERTH_SAGEMAKER_INSTANCE_PRICES = ["ml.g6.xlarge=1.25", "ml.g5.xlarge=", "=3"]
    assert hourly_cost(endpoint).hourly == Decimal("2.50")
    other = sagemaker_endpoint("sm-other", instance_type="ml.g5.xlarge")
    assert hourly_cost(other).unit_price == Decimal("1.408")


def test_the_endpoint_page_and_the_decommission_confirmation_show_the_cost(
    client, platform_admin, settings
):
    client.force_login(platform_admin)
    sagemaker_endpoint(initial_instance_count=2, autoscaling_max_instances=4)
    page = client.get("/endpoints/sm-staging/").content.decode()
    assert "2 × ml.g4dn.xlarge × $0.736/h = $1.47/h" in page
    assert "up to $2.94/h at 4 instances" in page
    assert "On-demand list prices of us-east-1 as of" in page
    assert "This stops 2 × ml.g4dn.xlarge × $0.736/h = $1.47/h" in page  # the confirmation
    assert "Blue/green: all traffic at once, baked 0 s; no auto-rollback alarms." in page

    settings.BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES = ["ml.g6.xlarge"]
    sagemaker_endpoint("sm-new", instance_type="ml.g6.xlarge")
    unknown = client.get("/endpoints/sm-new/").content.decode()
    assert "1 × ml.g6.xlarge: price unknown" in unknown
    assert "$0.00" not in unknown
