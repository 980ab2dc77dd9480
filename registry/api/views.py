"""Registry API v1: models, versions, registration."""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from .. import selectors, services
from ..artifacts import check_request_size
from ..filtersets import ModelVersionFilterSet, RegisteredModelFilterSet
from ..models import ModelVersion, RegisteredModel
from .serializers import (
    ModelCreateSerializer,
    ModelVersionDetailSerializer,
    ModelVersionSerializer,
    RegisteredModelSerializer,
    VersionRegisterSerializer,
)


class RegistryPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


ERROR = OpenApiResponse(description="`{detail, code, field, errors}`")


@extend_schema_view(
    get=extend_schema(summary="List models", tags=["registry"]),
    post=extend_schema(
        summary="Create a model",
        tags=["registry"],
        request=ModelCreateSerializer,
        responses={201: RegisteredModelSerializer, 400: ERROR, 409: ERROR},
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
        model = services.model_create(actor=request.user, source="api", **data.validated_data)
        model = selectors.model_get(name=model.name)
        return Response(RegisteredModelSerializer(model).data, status=status.HTTP_201_CREATED)


@extend_schema(summary="Retrieve a model", tags=["registry"])
class ModelRetrieve(generics.RetrieveAPIView):
    serializer_class = RegisteredModelSerializer
    lookup_field = "name"

    def get_object(self):
        return selectors.model_get(name=self.kwargs["name"])


@extend_schema_view(
    get=extend_schema(
        summary="List versions",
        tags=["registry"],
        parameters=[OpenApiParameter("page_size", int, description="Rows per page, at most 200.")],
    ),
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
        summary="List a model's versions",
        tags=["registry"],
        parameters=[OpenApiParameter("page_size", int, description="Rows per page, at most 200.")],
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
            "exists; 413 when the archive is over the upload limit."
        ),
        tags=["registry"],
        request={
            "multipart/form-data": VersionRegisterSerializer,
            "application/json": VersionRegisterSerializer,
        },
        responses={
            201: ModelVersionDetailSerializer,
            400: ERROR,
            404: ERROR,
            409: ERROR,
            413: ERROR,
        },
    ),
)
class ModelVersionListRegister(generics.ListCreateAPIView):
    serializer_class = ModelVersionSerializer
    filterset_class = ModelVersionFilterSet
    pagination_class = RegistryPagination
    parser_classes = [MultiPartParser, FormParser, JSONParser]

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
            source="api",
        )
        version = selectors.version_get(name=model.name, version=version.version)
        return Response(ModelVersionDetailSerializer(version).data, status=status.HTTP_201_CREATED)


@extend_schema(
    summary="Retrieve a version (status, problems, test results, package)", tags=["registry"]
)
class VersionRetrieve(generics.RetrieveAPIView):
    serializer_class = ModelVersionDetailSerializer

    def get_object(self):
        return selectors.version_get(name=self.kwargs["name"], version=self.kwargs["version"])


@extend_schema(
    summary="Run the pipeline again from where the version stopped",
    tags=["registry"],
    request=None,
    responses={202: ModelVersionDetailSerializer, 409: ERROR},
)
class VersionRetry(generics.GenericAPIView):
    serializer_class = ModelVersionDetailSerializer

    def post(self, request, name: str, version: int):
        found = selectors.version_get(name=name, version=version)
        services.version_retry(actor=request.user, version=found, source="api")
        found = selectors.version_get(name=name, version=version)
        return Response(ModelVersionDetailSerializer(found).data, status=status.HTTP_202_ACCEPTED)
