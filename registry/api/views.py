"""Registry API v1: models, versions, registration."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.cache import cache_control
from django.views.decorators.http import etag, require_safe
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from portal.api import CONFLICT, TOO_LARGE
from portal.choices import Source
from portal.errors import ServiceError
from portal.pagination import StrictPageNumberPagination
from portal.parsers import BoundedJSONParser

from .. import selectors, services
from ..artifacts import check_request_size
from ..filtersets import ModelVersionFilterSet, RegisteredModelFilterSet
from ..models import ModelVersion, RegisteredModel, model_name_validator
from ..validation.schema import berth_schema_bytes, berth_schema_etag
from .serializers import (
    BERTH_SCHEMA_URL,
    ModelCreateSerializer,
    ModelVersionDetailSerializer,
    ModelVersionSerializer,
    RegisteredModelSerializer,
    VersionFromUriSerializer,
    VersionRegisterSerializer,
)


class RegistryPagination(StrictPageNumberPagination):
    """Pages of 50 rows, `page_size` up to 200. DRF falls back to the default size for a
    `page_size` that is not a positive integer; here that is refused, as the schema says."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = "Rows per page; more than 200 gives 200."
        return parameters

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None:
            try:
                valid = int(raw) >= 1
            except ValueError:
                valid = False
            if not valid:
                raise ServiceError("`page_size` must be a positive integer.", field="page_size")
        return super().get_page_size(request)


# The model a path names: the URL converter only routes names of this alphabet here.
MODEL_NAME = OpenApiParameter(
    "name",
    str,
    OpenApiParameter.PATH,
    pattern=model_name_validator.regex.pattern,
    description="The registered model's name.",
)


@extend_schema_view(
    get=extend_schema(summary="List models", tags=["registry"]),
    post=extend_schema(
        summary="Create a model",
        tags=["registry"],
        request=ModelCreateSerializer,
        responses={201: RegisteredModelSerializer, 409: CONFLICT},
    ),
)
class ModelListCreate(generics.ListCreateAPIView):
    serializer_class = RegisteredModelSerializer
    filterset_class = RegisteredModelFilterSet
    pagination_class = RegistryPagination

    def get_queryset(self):
        return selectors.model_list()

    def create(self, request, *args, **kwargs):
        data = ModelCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        model = services.model_create(actor=request.user, source=Source.API, **data.validated_data)
        model = selectors.model_get(name=model.name)
        return Response(RegisteredModelSerializer(model).data, status=status.HTTP_201_CREATED)


@extend_schema(summary="Retrieve a model", tags=["registry"], parameters=[MODEL_NAME])
class ModelRetrieve(generics.RetrieveAPIView):
    serializer_class = RegisteredModelSerializer
    lookup_field = "name"

    def get_object(self):
        return selectors.model_get(name=self.kwargs["name"])


@extend_schema_view(
    get=extend_schema(summary="List versions", tags=["registry"]),
)
class VersionList(generics.ListAPIView):
    """All versions, newest first (filters: status, tag, commit, model, registered_by, sha256)."""

    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilterSet
    pagination_class = RegistryPagination

    def get_queryset(self):
        return selectors.version_list()


@extend_schema_view(
    get=extend_schema(
        summary="List a model's versions", tags=["registry"], parameters=[MODEL_NAME]
    ),
    post=extend_schema(
        summary="Register a version",
        description=(
            "multipart/form-data with `archive` (a .tar.gz/.tgz/.tar/.zip Triton model repository) "
            "and `lineage` (a JSON string), or application/json with `uri` (an s3:// archive, "
            "an s3:// prefix holding a repository, or a path under an allowed folder) and "
            "`lineage` (an object). Answers 201 with the version, which is then validated, "
            "tested and packaged by workers: poll it until `in_progress` is false. 409 when the "
            "same content is already registered (`existing_version` names it) or `version` "
            "exists; 413 when the archive is over the upload limit. `berth.yaml` in the "
            "archive and `test_cases` follow the JSON Schema at "
            f"[{BERTH_SCHEMA_URL}]({BERTH_SCHEMA_URL}). A version that ends `invalid` or "
            "`test_failed` says why in `status_reason` (one line); `problems` and "
            "`test_results` hold the rest."
        ),
        tags=["registry"],
        parameters=[MODEL_NAME],
        request={
            "multipart/form-data": VersionRegisterSerializer,
            "application/json": VersionFromUriSerializer,
        },
        responses={201: ModelVersionDetailSerializer, 409: CONFLICT, 413: TOO_LARGE},
    ),
)
class ModelVersionListRegister(generics.ListCreateAPIView):
    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilterSet
    pagination_class = RegistryPagination
    parser_classes = [MultiPartParser, FormParser, BoundedJSONParser]

    def get_model(self) -> RegisteredModel:
        if not hasattr(self, "_model"):
            self._model = get_object_or_404(RegisteredModel, name=self.kwargs["name"])
        return self._model

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation: no URL kwargs
            return ModelVersion.objects.none()
        return selectors.version_list(model=self.get_model())

    def create(self, request, *args, **kwargs):
        check_request_size(request)
        model = selectors.model_get(name=self.kwargs["name"])
        data = VersionRegisterSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        version = services.version_register(
            actor=request.user,
            model=model,
            archive=values.get("archive"),
            uri=values.get("uri") or None,
            lineage=values.get("lineage"),
            test_cases=values.get("test_cases") or None,
            description=values.get("description", ""),
            version=values.get("version"),
            source=Source.API,
        )
        version = selectors.version_get(name=model.name, version=version.version)
        return Response(ModelVersionDetailSerializer(version).data, status=status.HTTP_201_CREATED)


@extend_schema(
    summary="Retrieve a version (status, problems, test results, package)",
    tags=["registry"],
    parameters=[MODEL_NAME],
)
class VersionRetrieve(generics.RetrieveAPIView):
    serializer_class = ModelVersionDetailSerializer

    def get_object(self):
        return selectors.version_get(name=self.kwargs["name"], version=self.kwargs["version"])


@extend_schema(
    summary="Run the pipeline again from where the version stopped",
    tags=["registry"],
    parameters=[MODEL_NAME],
    request=None,
    responses={202: ModelVersionDetailSerializer, 409: CONFLICT},
)
class VersionRetry(generics.GenericAPIView):
    serializer_class = ModelVersionDetailSerializer

    def post(self, request, name: str, version: int):
        found = selectors.version_get(name=name, version=version)
        services.version_retry(actor=request.user, version=found, source=Source.API)
        found = selectors.version_get(name=name, version=version)
        return Response(ModelVersionDetailSerializer(found).data, status=status.HTTP_202_ACCEPTED)


# The schema is public (it describes a file format, not data) and changes only with a
# release: anyone may read it, caches may keep it an hour, and an ETag revalidates it.
@require_safe
@cache_control(public=True, max_age=3600)
@etag(lambda request: berth_schema_etag())
def berth_schema_document(request: HttpRequest) -> HttpResponse:
    """The JSON Schema of berth.yaml (draft 2020-12)."""
    return HttpResponse(berth_schema_bytes(), content_type="application/schema+json")
