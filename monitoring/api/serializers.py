import re

from rest_framework import serializers

from ..choices import METRICS, WINDOW_PERIODS, Statistic, Window

# `<Metric>` or `<Metric>:<Stat>`, in the names the sources know: the schema carries it, so
# a client knows which series it may ask for.
QUERY_PATTERN = (
    f"^({'|'.join(re.escape(name) for name in sorted(METRICS))})"
    f"(:({'|'.join(re.escape(stat) for stat in Statistic.values)}))?$"
)
PERIOD_SCHEMA = {"type": "integer", "minimum": 60, "maximum": 86400, "multipleOf": 60}


class MetricDataQuerySerializer(serializers.Serializer):
    """Query parameters of the metric-data API: a window (or start/end), a period, and the
    series wanted as `query=<Metric>:<Stat>` (repeatable; the dashboard's set when omitted)."""

    window = serializers.ChoiceField(choices=Window.choices, required=False, default=Window.HOUR)
    start = serializers.DateTimeField(required=False)
    end = serializers.DateTimeField(required=False)
    period = serializers.IntegerField(required=False, min_value=60, max_value=86400)
    target_model = serializers.CharField(required=False, allow_blank=True, default="")
    query = serializers.ListField(
        child=serializers.RegexField(QUERY_PATTERN), required=False, default=list
    )

    def validate_query(self, value):
        pairs = []
        for item in value:
            metric, _, stat = item.partition(":")
            if metric not in METRICS:
                raise serializers.ValidationError(
                    f"Unknown metric {metric!r}; known: {', '.join(sorted(METRICS))}."
                )
            stat = stat or Statistic.AVERAGE
            if stat not in Statistic.values:
                raise serializers.ValidationError(
                    f"Unknown statistic {stat!r}; use one of {', '.join(Statistic.values)}."
                )
            pairs.append((metric, stat))
        return pairs

    def validate_period(self, value):
        if value % 60:
            raise serializers.ValidationError("The period is a multiple of 60 seconds.")
        return value

    def validate(self, attrs):
        attrs.setdefault("period", WINDOW_PERIODS[attrs["window"]])
        return attrs


class MetricSeriesSerializer(serializers.Serializer):
    id = serializers.CharField()
    metric = serializers.CharField()
    stat = serializers.CharField()
    target_model = serializers.CharField()
    timestamps = serializers.ListField(child=serializers.DateTimeField())
    values = serializers.ListField(child=serializers.FloatField())


class MetricDataSerializer(serializers.Serializer):
    endpoint = serializers.CharField()
    source = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
    period = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)
    results = MetricSeriesSerializer(many=True)
