from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.errors import ServiceError

from .. import selectors
from ..sources import MetricQuery
from .serializers import MetricDataQuerySerializer, MetricDataSerializer


class MetricDataView(APIView):
    """Metric series of one endpoint (or one target model on it), in GetMetricData's terms."""

    @extend_schema(
        parameters=[
            MetricDataQuerySerializer,
            OpenApiParameter(
                "query",
                str,
                many=True,
                description="`<Metric>:<Stat>`, e.g. `ModelLatency:p99`; repeatable.",
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
        endpoint = selectors.endpoint_get(name=name)
        target = selectors.metric_target(endpoint)
        if data["target_model"] and not target.source.per_model:
            raise ServiceError(
                "SageMaker publishes multi-model metrics per endpoint and variant, not per "
                "target model.",
                field="target_model",
            )
        if data.get("start"):
            start, end, period = data["start"], data["end"], data["period"]
        else:
            start, end, _ = selectors.window_bounds(data["window"])
            period = data["period"]
        pairs = data["query"] or [
            (line.metric, line.stat)
            for chart in selectors.dashboard_charts(per_model=bool(data["target_model"]))
            for line in chart.lines
        ]
        queries = [MetricQuery(metric, stat, data["target_model"]) for metric, stat in pairs]
        series, error = selectors.metric_data(
            target=target, queries=queries, start=start, end=end, period=period
        )
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
