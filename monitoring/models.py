"""Metric history. CloudWatch keeps its own; the local data plane keeps only a window in
memory, so the metrics pull copies its one-minute statistics here."""

from django.db import models


class MetricSample(models.Model):
    """One statistic of one metric over one minute, for an endpoint (target_model blank) or
    one target model on it, as the local data plane reported it."""

    endpoint_name = models.CharField(max_length=128, help_text="The data plane's endpoint name.")
    target_model = models.CharField(
        max_length=255, blank=True, help_text="Blank for the whole endpoint."
    )
    metric = models.CharField(max_length=64)
    stat = models.CharField(max_length=16)
    timestamp = models.DateTimeField(help_text="Start of the minute.")
    value = models.FloatField()

    class Meta:
        ordering = ["endpoint_name", "target_model", "metric", "stat", "timestamp"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint_name", "target_model", "metric", "stat", "timestamp"],
                name="unique_metric_sample",
            )
        ]
        indexes = [models.Index(fields=["timestamp"], name="metric_sample_time")]

    def __str__(self) -> str:
        scope = self.endpoint_name + (f"/{self.target_model}" if self.target_model else "")
        return f"{scope} {self.metric} {self.stat} {self.timestamp:%Y-%m-%d %H:%M}: {self.value:g}"
