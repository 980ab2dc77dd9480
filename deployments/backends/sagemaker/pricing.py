"""What a SageMaker endpoint costs by the hour: instance type × count × an hourly price.

The prices are AWS's on-demand list prices for real-time inference instances in us-east-1
(https://aws.amazon.com/sagemaker/pricing/, as of PRICES_AS_OF), for the GPU instance types
offered for multi-model endpoints (deployments.choices). Other regions, savings plans and
taxes differ. The AWS Pricing API is not reachable from where the portal runs, so nothing is
looked up live: an admin adds or corrects a price with BERTH_SAGEMAKER_INSTANCE_PRICES
(comma-separated `type=USD per hour`, e.g. `ml.g6.xlarge=1.0`), the way
BERTH_SAGEMAKER_EXTRA_INSTANCE_TYPES adds a type. A type with no price is "price unknown",
never 0."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from django.conf import settings

if TYPE_CHECKING:
    from deployments.models import Endpoint

logger = logging.getLogger(__name__)

PRICES_REGION = "us-east-1"
PRICES_AS_OF = "2025-10"
PRICES_SOURCE = "https://aws.amazon.com/sagemaker/pricing/"
HOURLY_PRICES_USD: dict[str, Decimal] = {
    "ml.g4dn.xlarge": Decimal("0.736"),
    "ml.g4dn.2xlarge": Decimal("0.94"),
    "ml.g4dn.4xlarge": Decimal("1.505"),
    "ml.g4dn.8xlarge": Decimal("2.72"),
    "ml.g4dn.16xlarge": Decimal("5.44"),
    "ml.g5.xlarge": Decimal("1.408"),
    "ml.g5.2xlarge": Decimal("1.515"),
    "ml.g5.4xlarge": Decimal("2.03"),
    "ml.g5.8xlarge": Decimal("3.06"),
    "ml.g5.16xlarge": Decimal("5.12"),
    "ml.p3.2xlarge": Decimal("3.825"),
}
PRICE_NOTE = (
    f"On-demand list prices of {PRICES_REGION} as of {PRICES_AS_OF} ({PRICES_SOURCE}); not "
    "looked up live, other regions differ."
)


def hourly_prices() -> dict[str, Decimal]:
    """AWS's list, with the prices an admin set (BERTH_SAGEMAKER_INSTANCE_PRICES) over it."""
    prices = dict(HOURLY_PRICES_USD)
    for item in getattr(settings, "BERTH_SAGEMAKER_INSTANCE_PRICES", []):
        name, _, value = item.partition("=")
        try:
            price = Decimal(value.strip())
        except InvalidOperation:
            price = Decimal(-1)
        if not name.strip() or not price.is_finite() or price < 0:
            logger.warning("BERTH_SAGEMAKER_INSTANCE_PRICES: %r is not type=USD per hour", item)
            continue
        prices[name.strip()] = price
    return prices


@dataclass(frozen=True)
class HourlyCost:
    instance_type: str
    count: int
    unit_price: Decimal | None

    @property
    def hourly(self) -> Decimal | None:
        return None if self.unit_price is None else self.unit_price * self.count

    def __str__(self) -> str:
        if self.unit_price is None:
            return f"{self.count} × {self.instance_type}: price unknown"
        return (
            f"{self.count} × {self.instance_type} × ${self.unit_price}/h = "
            f"${self.hourly.quantize(Decimal('0.01'))}/h"
        )


def hourly_cost(endpoint: Endpoint, count: int | None = None) -> HourlyCost:
    """What `count` instances of the endpoint's type cost by the hour (its configured count
    when none is given); unit_price None when no price is known."""
    return HourlyCost(
        instance_type=endpoint.instance_type,
        count=endpoint.initial_instance_count if count is None else count,
        unit_price=hourly_prices().get(endpoint.instance_type),
    )
