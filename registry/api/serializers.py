"""API shapes of the registry. Serializers parse and present; the rules live in services."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from portal.api import StrictCharField, StrictRegexField
from portal.parsers import JSONInputError, json_loads_bounded

from ..lineage import MAX_TAG_LENGTH, MAX_TAGS
from ..models import ModelVersion, RegisteredModel, TestResult, model_name_validator
from ..validation.schema import openapi_schema

# Where the JSON Schema of berth.yaml is served (registry.api.urls), for descriptions.
BERTH_SCHEMA_URL = "/api/v1/schemas/berth.yaml.json"

# Version numbers are PostgreSQL integers.
MAX_VERSION = 2**31 - 1

# Renders datetimes as the serializers' declared DateTimeFields do.
_DATETIME = serializers.DateTimeField()


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectOrStringField(serializers.Field):
    """A JSON value given as a JSON body member or, in multipart forms, as a JSON string."""

    def __init__(self, *, expect: type, **kwargs):
        self.expect = expect
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, bytes | str):
            text = data.decode() if isinstance(data, bytes) else data
            if not text.strip():
                return self.expect()
            try:
                data = json_loads_bounded(text)
            except JSONInputError as exc:
                raise serializers.ValidationError(f"Not valid JSON: {exc}") from exc
        if not isinstance(data, self.expect):
            kind = "an object" if self.expect is dict else "a list"
            raise serializers.ValidationError(f"Must be {kind}.")
        return data

    def to_representation(self, value):
        return value


@extend_schema_field(
    {
        "oneOf": [
            openapi_schema("testCases"),
            {
                "type": "string",
                "description": "The same list as JSON text: what a multipart form sends. "
                "An empty string means no cases.",
            },
        ],
        "externalDocs": {"description": "berth.yaml's JSON Schema", "url": BERTH_SCHEMA_URL},
    },
    component_name="BerthTestCases",
)
class TestCasesField(JSONObjectOrStringField):
    """Test cases in berth.yaml's `tests:` shape: a list of case objects, or (multipart) its
    JSON text. Their checks run in the validate step, with the archive's own cases."""

    def __init__(self, **kwargs):
        super().__init__(expect=list, **kwargs)


class RegisteredModelSerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    version_count = serializers.IntegerField(read_only=True)
    latest_version = serializers.IntegerField(read_only=True, allow_null=True)
    latest_status = serializers.CharField(read_only=True, allow_null=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = RegisteredModel
        fields = [
            "name",
            "description",
            "tags",
            "owner",
            "created_at",
            "updated_at",
            "version_count",
            "latest_version",
            "latest_status",
            "url",
        ]

    def get_url(self, obj) -> str:
        return obj.get_absolute_url()

    def to_representation(self, obj) -> dict:
        # The declared fields' shape (a test holds them equal), built directly for lists.
        return {
            "name": obj.name,
            "description": obj.description,
            "tags": obj.tags,
            "owner": obj.owner.username,
            "created_at": _DATETIME.to_representation(obj.created_at),
            "updated_at": _DATETIME.to_representation(obj.updated_at),
            "version_count": obj.version_count,
            "latest_version": obj.latest_version,
            "latest_status": obj.latest_status,
            "url": self.get_url(obj),
        }


class ModelCreateSerializer(serializers.Serializer):
    name = StrictRegexField(
        model_name_validator.regex.pattern,
        max_length=100,
        error_messages={"invalid": model_name_validator.message},
        help_text="Letters, digits, '_', '.' or '-', starting with a letter or digit.",
    )
    description = StrictCharField(required=False, allow_blank=True, default="")
    tags = serializers.ListField(
        # Blank tags are dropped, not refused.
        child=StrictCharField(max_length=MAX_TAG_LENGTH, allow_blank=True),
        required=False,
        default=list,
        max_length=MAX_TAGS,
    )


class ParentSerializer(serializers.Serializer):
    model = serializers.CharField(source="model.name")
    version = serializers.IntegerField()


class ModelVersionSerializer(serializers.ModelSerializer):
    """A version as lists show it: status and lineage."""

    model = serializers.CharField(source="model.name", read_only=True)
    registered_by = serializers.CharField(source="registered_by.username", read_only=True)
    parent = ParentSerializer(read_only=True, allow_null=True)
    lineage = serializers.SerializerMethodField()
    package = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "version",
            "status",
            "status_changed_at",
            "status_reason",
            "description",
            "artifact_source",
            "source_uri",
            "content_sha256",
            "size_bytes",
            "lineage",
            "parent",
            "registered_by",
            "registered_at",
            "package",
            "url",
        ]

    def get_lineage(self, obj) -> dict:
        return {
            "source_repository": obj.source_repository,
            "source_commit": obj.source_commit,
            "dataset_uri": obj.dataset_uri,
            "dataset_version": obj.dataset_version,
            "training_job": obj.training_job,
            "metrics": obj.metrics,
            "frameworks": obj.frameworks,
            "tags": obj.tags,
        }

    def get_package(self, obj) -> dict | None:
        if not obj.package_uri:
            return None
        return {
            "name": obj.package_name,
            "uri": obj.package_uri,
            "sha256": obj.package_sha256,
            "size_bytes": obj.package_size_bytes,
        }

    def get_url(self, obj) -> str:
        return obj.get_absolute_url()

    def to_representation(self, obj) -> dict:
        # The same shape the declared fields give (a test holds them equal), built directly:
        # list pages serialize up to 200 rows, and DRF's per-field machinery is most of their
        # time.
        parent = obj.parent
        return {
            "model": obj.model.name,
            "version": obj.version,
            "status": obj.status,
            "status_changed_at": _DATETIME.to_representation(obj.status_changed_at),
            "status_reason": obj.status_reason,
            "description": obj.description,
            "artifact_source": obj.artifact_source,
            "source_uri": obj.source_uri,
            "content_sha256": obj.content_sha256,
            "size_bytes": obj.size_bytes,
            "lineage": self.get_lineage(obj),
            "parent": {"model": parent.model.name, "version": parent.version} if parent else None,
            "registered_by": obj.registered_by.username,
            "registered_at": _DATETIME.to_representation(obj.registered_at),
            "package": self.get_package(obj),
            "url": self.get_url(obj),
        }


class TestResultSerializer(serializers.ModelSerializer):
    class Meta:
        model = TestResult
        fields = [
            "name",
            "kind",
            "outcome",
            "message",
            "inputs",
            "expected",
            "actual",
            "duration_ms",
            "created_at",
        ]


class ProblemSerializer(serializers.Serializer):
    file = serializers.CharField()
    line = serializers.IntegerField(allow_null=True)
    message = serializers.CharField()


class ModelVersionDetailSerializer(ModelVersionSerializer):
    """A version with everything CI waits for: problems, test results, package."""

    problems = ProblemSerializer(many=True, read_only=True)
    test_results = TestResultSerializer(many=True, read_only=True)
    in_progress = serializers.BooleanField(read_only=True)

    def to_representation(self, obj) -> dict:
        # Declared fields, the way DRF renders them (detail pages are one row).
        return serializers.ModelSerializer.to_representation(self, obj)

    class Meta(ModelVersionSerializer.Meta):
        fields = [
            *ModelVersionSerializer.Meta.fields,
            "in_progress",
            "attempts",
            "problems",
            "repository_summary",
            "test_cases",
            "test_results",
            "progress_log",
            "artifact_uri",
        ]


class VersionRegisterSerializer(serializers.Serializer):
    """Register a version: multipart with `archive` (+ `lineage` as a JSON string), or JSON
    with `uri` (+ `lineage` as an object)."""

    archive = serializers.FileField(
        required=False, help_text=".tar.gz, .tgz, .tar or .zip of a Triton model repository."
    )
    uri = StrictCharField(
        required=False,
        allow_blank=True,
        max_length=1024,
        help_text="An archive or a repository folder: s3://bucket/key.tar.gz, "
        "s3://bucket/prefix/ (the repository's objects), or a local path under an allowed "
        "folder.",
    )
    lineage = JSONObjectOrStringField(
        expect=dict,
        required=False,
        default=dict,
        help_text="source_repository, source_commit, dataset_uri, dataset_version, training_job, "
        "parent ('model:version'), metrics {name: number}, frameworks [..], tags [..].",
    )
    test_cases = TestCasesField(
        required=False,
        default=list,
        help_text="Test cases in berth.yaml's `tests:` shape, run in addition to the archive's: "
        f"a list of cases, or its JSON text in a multipart form. JSON Schema: {BERTH_SCHEMA_URL} "
        "(`$defs/testCases`).",
    )
    description = StrictCharField(required=False, allow_blank=True, default="")
    version = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_VERSION,
        help_text="Expected version number: 409 if it already exists.",
    )


class VersionFromUriSerializer(VersionRegisterSerializer):
    """Register a version from an archive or repository named by URI (the JSON body: `uri`
    is required)."""

    archive = None
    uri = StrictCharField(
        max_length=1024,
        help_text="An archive or a repository folder: s3://bucket/key.tar.gz, "
        "s3://bucket/prefix/ (the repository's objects), or a local path under an allowed "
        "folder.",
    )
