from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from deployments.selectors import endpoint_get
from portal.errors import ServiceError

from .. import selectors
from ..sources import MetricQuery, MetricSeries
from .serializers import (
    PERIOD_SCHEMA,
    QUERY_PATTERN,
    MetricDataQuerySerializer,
    MetricDataSerializer,
)


class MetricDataView(APIView):
    """Metric series of one endpoint (or one target model on it), in GetMetricData's terms."""

    @extend_schema(
        parameters=[
            MetricDataQuerySerializer,
            OpenApiParameter(
                "query",
                {"type": "string", "pattern": QUERY_PATTERN},
                many=True,
                description="`<Metric>:<Stat>`, e.g. `ModelLatency:p99`; repeatable.",
            ),
            OpenApiParameter(
                "period",
                PERIOD_SCHEMA,
                description="Seconds per data point, a multiple of 60 (default: the window's).",
            ),
            OpenApiParameter(
                "start",
                OpenApiTypes.DATETIME,
                description="With `end`, an explicit window instead of `window`; alone, from "
                "then until now. A start at or after the end is a window with no points.",
            ),
            OpenApiParameter(
                "end",
                OpenApiTypes.DATETIME,
                description="Alone: the `window` that ends then.",
            ),
        ],
        responses=MetricDataSerializer,
    )
    def get(self, request, name: str):
        params = MetricDataQuerySerializer(
            data={**request.query_params.dict(), "query": request.query_params.getlist("query")}
        )
        params.is_valid(raise_exception=True)
        data = params.validated_data
        endpoint = endpoint_get(name=name)
        target = selectors.metric_target(endpoint)
        if data["target_model"] and not target.source.per_model:
            raise ServiceError(
                "SageMaker publishes multi-model metrics per endpoint and variant, not per "
                "target model.",
                field="target_model",
            )
        window_start, window_end, _ = selectors.window_bounds(data["window"])
        start, end, period = data.get("start"), data.get("end"), data["period"]
        if start is None and end is None:
            start, end = window_start, window_end
        elif end is None:
            end = max(window_end, start)
        elif start is None:
            start = end - (window_end - window_start)
        pairs = data["query"] or [
            (line.metric, line.stat)
            for chart in selectors.dashboard_charts(per_model=bool(data["target_model"]))
            for line in chart.lines
        ]
        queries = [MetricQuery(metric, stat, data["target_model"]) for metric, stat in pairs]
        if start < end:
            series, error = selectors.metric_data(
                target=target, queries=queries, start=start, end=end, period=period
            )
        else:
            series, error = [MetricSeries(query, [], []) for query in queries], ""
        body = {
            "endpoint": endpoint.name,
            "source": target.source.kind,
            "start": start,
            "end": end,
            "period": period,
            "error": error,
            "results": [
                {
                    "id": one.query.key,
                    "metric": one.query.metric,
                    "stat": one.query.stat,
                    "target_model": one.query.target_model,
                    "timestamps": one.timestamps,
                    "values": one.values,
                }
                for one in series
            ],
        }
        return Response(MetricDataSerializer(body).data)
