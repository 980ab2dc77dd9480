"""Serializers of the load tests API: what a client sends to start or decide a load test,
and how a load test (config, state, verdict, stages, recommendation, links) reads."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from loadtests.models import LoadTest, LoadTestStage
from portal.api import StrictCharField


class LoadTestCreateSerializer(serializers.Serializer):
    endpoint = StrictCharField(max_length=63, help_text="The endpoint's name.")
    config = serializers.DictField(
        help_text="The load test: models (target models; default every live one), mix "
        "{kind: one|uniform|top_n|zipf|replay, top_n, top_share, zipf_s, replay_minutes}, "
        "payloads {source: test_cases|upload}, pattern {kind: stairs|constant|find_max, "
        "start_rps, step_rps, growth, step_seconds, ceiling_rps, rps, seconds}, slo "
        "{percentile: p95|p99, latency_ms, max_error_rate}, stop {error_rate, max_seconds}, "
        "arrival (uniform|poisson), generators, safety_factor, peak_rps. Example: "
        '{"pattern": {"kind": "find_max", "start_rps": 5, "growth": 2, "step_seconds": 30, '
        '"ceiling_rps": 160}, "slo": {"percentile": "p99", "latency_ms": 200}}. A field at '
        "fault is named by its path (pattern.ceiling_rps)."
    )
    confirmed = serializers.BooleanField(
        help_text="Must be true: the endpoint takes real load from this test."
    )
    deployment = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="Started from this deployment."
    )
    upload = StrictCharField(
        required=False,
        allow_blank=False,
        trim_whitespace=False,
        max_length=settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES,
        help_text='Request bodies as JSON lines: {"target_model"?, "body" | "body_b64", '
        '"content_type"?} per line (with config.payloads.source = "upload").',
    )


class CancelSerializer(serializers.Serializer):
    reason = StrictCharField(required=False, allow_blank=True, default="", max_length=2000)


class RejectSerializer(serializers.Serializer):
    reason = StrictCharField(max_length=2000, help_text="Why the load test is rejected.")


class ApplySerializer(serializers.Serializer):
    safety_factor = serializers.FloatField(
        required=False, allow_null=True, min_value=0.01, max_value=1.0, default=None
    )
    peak_rps = serializers.FloatField(
        required=False, allow_null=True, min_value=0.001, max_value=1e9, default=None
    )


class LoadTestStageSerializer(serializers.ModelSerializer):
    error_rate = serializers.FloatField(read_only=True)

    class Meta:
        model = LoadTestStage
        fields = [
            "position",
            "offered_rps",
            "planned_seconds",
            "started_at",
            "finished_at",
            "finished",
            "duration_seconds",
            "sent",
            "completed",
            "ok",
            "errors",
            "error_rate",
            "achieved_rps",
            "p50_ms",
            "p90_ms",
            "p95_ms",
            "p99_ms",
            "max_ms",
            "mean_ms",
            "cache_hit_ratio",
            "model_loads",
            "cpu_percent",
            "gpu_percent",
            "memory_percent",
            "generator_cpu_seconds",
            "schedule_lag_p99_ms",
            "on_schedule",
            "slo_met",
        ]


class LoadTestSerializer(serializers.ModelSerializer):
    endpoint = serializers.CharField(source="endpoint.name")
    environment = serializers.CharField(source="endpoint.environment.name")
    model = serializers.SerializerMethodField()
    version = serializers.SerializerMethodField()
    created_by = serializers.CharField(source="created_by.get_username")
    approved_by = serializers.SerializerMethodField()
    applied_by = serializers.SerializerMethodField()
    run = serializers.SerializerMethodField()
    stages = LoadTestStageSerializer(many=True)
    links = serializers.SerializerMethodField()

    class Meta:
        model = LoadTest
        fields = [
            "id",
            "endpoint",
            "environment",
            "deployment",
            "model",
            "version",
            "state",
            "verdict",
            "config",
            "result",
            "error",
            "source",
            "created_by",
            "created_at",
            "approved_by",
            "approved_at",
            "started_at",
            "finished_at",
            "applied_by",
            "applied_at",
            "run",
            "stages",
            "links",
        ]

    @extend_schema_field({"type": "string", "nullable": True})
    def get_model(self, obj: LoadTest):
        return obj.version.model.name if obj.version_id else None

    @extend_schema_field({"type": "integer", "nullable": True})
    def get_version(self, obj: LoadTest):
        return obj.version.version if obj.version_id else None

    @extend_schema_field({"type": "string", "nullable": True})
    def get_approved_by(self, obj: LoadTest):
        return obj.approved_by.get_username() if obj.approved_by_id else None

    @extend_schema_field({"type": "string", "nullable": True})
    def get_applied_by(self, obj: LoadTest):
        return obj.applied_by.get_username() if obj.applied_by_id else None

    @extend_schema_field({"type": "integer", "nullable": True})
    def get_run(self, obj: LoadTest):
        run = obj.run
        return run.pk if run else None

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "self": {"type": "string"},
                "page": {"type": "string"},
                "log": {"type": "string", "nullable": True},
            },
        }
    )
    def get_links(self, obj: LoadTest):
        run = obj.run
        return {
            "self": f"/api/v1/loadtests/{obj.pk}/",
            "page": obj.get_absolute_url(),
            "log": f"/api/v1/runs/{run.pk}/log/" if run else None,
        }
