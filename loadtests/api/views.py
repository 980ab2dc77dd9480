"""REST API of load tests: thin views that parse input, call one service or selector, and
answer. Service errors become {"detail", "code", "field"} with their status."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from deployments import selectors as deployment_selectors
from deployments.models import Deployment
from loadtests import selectors, services
from portal.api import CONFLICT
from portal.choices import Source
from portal.errors import NotFound, ServiceError

from .serializers import (
    ApplySerializer,
    CancelSerializer,
    LoadTestCreateSerializer,
    LoadTestSerializer,
    RejectSerializer,
)


def _int_param(raw: str | None, name: str) -> int | None:
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ServiceError(f"`{name}` must be a whole number.", field=name) from exc
    if not 1 <= value <= 2**31:
        raise ServiceError(f"`{name}` is out of range.", field=name)
    return value


class LoadTestViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Load tests of endpoints: start one (201; 409 while another of the endpoint is
    active), read one with its stages and recommendation, cancel, approve or reject (for
    production endpoints), apply the recommendation to the endpoint's autoscaling."""

    serializer_class = LoadTestSerializer
    lookup_value_regex = r"[0-9]+"
    filter_backends: list = []

    def get_queryset(self):
        if self.action != "list":
            return selectors.loadtest_list()
        params = self.request.query_params
        endpoint = version = None
        if params.get("endpoint"):
            endpoint = deployment_selectors.endpoint_get(name=params["endpoint"])
        number = _int_param(params.get("version"), "version")
        model = params.get("model") or None
        if model is not None and number is not None:
            version = deployment_selectors.version_get(model_name=model, version=number)
        queryset = selectors.loadtest_list(endpoint=endpoint, version=version)
        if version is None and model is not None:
            queryset = queryset.filter(version__model__name=model.replace("\x00", ""))
        elif version is None and number is not None:
            queryset = queryset.filter(version__version=number)
        return queryset

    def get_object(self):
        return selectors.loadtest_get(pk=int(self.kwargs["pk"]))

    @extend_schema(
        parameters=[
            OpenApiParameter("endpoint", OpenApiTypes.STR, description="Only this endpoint's."),
            OpenApiParameter("model", OpenApiTypes.STR, description="Only this model's versions'."),
            OpenApiParameter(
                "version",
                {"type": "integer", "minimum": 1, "maximum": 2**31},
                description="With `model`: only that version's (404 when it does not exist); "
                "alone: versions with this number.",
            ),
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(
        request=LoadTestCreateSerializer, responses={201: LoadTestSerializer, 409: CONFLICT}
    )
    def create(self, request, *args, **kwargs):
        serializer = LoadTestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        endpoint = deployment_selectors.endpoint_get(name=data["endpoint"])
        deployment = None
        if data.get("deployment"):
            deployment = Deployment.objects.filter(pk=data["deployment"]).first()
            if deployment is None:
                raise NotFound("No such deployment.", field="deployment")
        upload = data.get("upload")
        load_test = services.loadtest_start(
            actor=request.user,
            endpoint=endpoint,
            config=data["config"],
            upload=upload.encode() if upload else None,
            deployment=deployment,
            confirmed=data["confirmed"],
            source=Source.API,
        )
        return Response(
            LoadTestSerializer(selectors.loadtest_get(pk=load_test.pk)).data,
            status=status.HTTP_201_CREATED,
        )

    def _answer(self, load_test):
        return Response(LoadTestSerializer(selectors.loadtest_get(pk=load_test.pk)).data)

    @extend_schema(request=CancelSerializer, responses={200: LoadTestSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        serializer = CancelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        load_test = services.loadtest_cancel(
            actor=request.user,
            load_test=self.get_object(),
            reason=serializer.validated_data["reason"],
            source=Source.API,
        )
        return self._answer(load_test)

    @extend_schema(request=None, responses={200: LoadTestSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        load_test = services.loadtest_approve(
            actor=request.user, load_test=self.get_object(), source=Source.API
        )
        return self._answer(load_test)

    @extend_schema(request=RejectSerializer, responses={200: LoadTestSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        serializer = RejectSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        load_test = services.loadtest_reject(
            actor=request.user,
            load_test=self.get_object(),
            reason=serializer.validated_data["reason"],
            source=Source.API,
        )
        return self._answer(load_test)

    @extend_schema(request=ApplySerializer, responses={200: LoadTestSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def apply(self, request, pk=None):
        serializer = ApplySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        load_test = self.get_object()
        services.loadtest_apply(
            actor=request.user,
            load_test=load_test,
            safety_factor=serializer.validated_data["safety_factor"],
            peak_rps=serializer.validated_data["peak_rps"],
            source=Source.API,
        )
        return self._answer(load_test)
