"""REST API of the deployments app: thin viewsets that parse input, call one service or
selector, and answer. Service errors become {"detail","code","field"} with their status."""

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from deployments import selectors, services
from deployments.choices import Source
from deployments.filtersets import DeploymentFilterSet, EndpointFilterSet, PromotionFilterSet
from portal.api import CONFLICT
from portal.errors import ServiceError
from runs.api.views import since_param

from .serializers import (
    DecisionSerializer,
    DeploymentCreateSerializer,
    DeploymentFollowSerializer,
    DeploymentSerializer,
    EndpointActionResultSerializer,
    EndpointActionSerializer,
    EndpointCreateSerializer,
    EndpointSerializer,
    EnvironmentSerializer,
    LiveVersionHistorySerializer,
    LiveVersionSerializer,
    PromotionRequestCreateSerializer,
    PromotionRequestSerializer,
    RejectionSerializer,
    RollbackSerializer,
)


def _endpoint(name: str):
    return selectors.endpoint_get(name=name)


def _model(name: str):
    return selectors.model_get(name=name)


def _version(model_name: str, number: int):
    return selectors.version_get(model_name=model_name, version=number)


class EnvironmentViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = EnvironmentSerializer
    lookup_field = "name"
    # Environment names are slugs; any other address answers 404 before a query runs.
    lookup_value_regex = r"[-a-zA-Z0-9_]+"
    pagination_class = None

    def get_queryset(self):
        return selectors.environment_list()


class EndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Endpoints with what is live on them; create one; roll a model back; the timeline of
    which version served when."""

    lookup_field = "name"
    lookup_value_regex = r"[a-zA-Z0-9-]+"
    filterset_class = EndpointFilterSet

    def get_queryset(self):
        return selectors.endpoint_list()

    def get_serializer_class(self):
        return EndpointCreateSerializer if self.action == "create" else EndpointSerializer

    @extend_schema(request=EndpointCreateSerializer, responses={201: EndpointSerializer})
    def create(self, request, *args, **kwargs):
        # Whether the caller may create endpoints at all is answered before the body is
        # read, so a refusal is a 403 whatever the body names.
        services.require_configure(request.user)
        serializer = EndpointCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        # `dataplane_endpoint` is what `target_name` was called before; errors name the
        # field the client sent.
        target_field = "dataplane_endpoint" if "dataplane_endpoint" in data else "target_name"
        legacy = data.pop("dataplane_endpoint", None)
        if legacy is not None:
            if data.get("target_name", legacy) != legacy:
                raise ServiceError(
                    "Give target_name or dataplane_endpoint (its earlier name), not both.",
                    field="dataplane_endpoint",
                )
            data["target_name"] = legacy
        try:
            endpoint = services.endpoint_create(
                actor=request.user,
                name=data.pop("name"),
                environment=data.pop("environment"),
                backend=data.pop("backend"),
                source=Source.API,
                **data,
            )
        except ServiceError as exc:
            if exc.field == "target_name" and target_field != exc.field:
                exc.field = target_field
            raise
        endpoint = selectors.endpoint_list().get(pk=endpoint.pk)
        return Response(EndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=LiveVersionSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def live(self, request, name=None):
        endpoint = _endpoint(name)
        return Response(
            LiveVersionSerializer(selectors.live_versions(endpoint=endpoint), many=True).data
        )

    @extend_schema(
        parameters=[
            OpenApiParameter("model", OpenApiTypes.STR, description="Only this model."),
            OpenApiParameter(
                "at",
                OpenApiTypes.DATETIME,
                description="Only what served at this instant (ISO 8601).",
            ),
        ],
        responses=LiveVersionHistorySerializer(many=True),
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def timeline(self, request, name=None):
        endpoint = _endpoint(name)
        model = _model(request.query_params["model"]) if request.query_params.get("model") else None
        at = request.query_params.get("at")
        if at:
            moment = parse_datetime(at.replace(" ", "+"))
            if moment is None:
                raise ServiceError("`at` must be an ISO 8601 date and time.", field="at")
            periods = selectors.live_version_at(endpoint=endpoint, at=moment, model=model)
        else:
            periods = selectors.live_timeline(endpoint=endpoint, model=model)
        return Response(LiveVersionHistorySerializer(periods, many=True).data)

    @extend_schema(request=RollbackSerializer, responses={202: DeploymentSerializer, 409: CONFLICT})
    @action(detail=True, methods=["post"])
    def rollback(self, request, name=None):
        serializer = RollbackSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        deployment = services.deployment_rollback(
            actor=request.user,
            endpoint=_endpoint(name),
            model=_model(serializer.validated_data["model"]),
            source=Source.API,
            reason=serializer.validated_data["reason"],
        )
        deployment = selectors.deployment_get(pk=deployment.pk)
        return Response(
            DeploymentSerializer(deployment, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )

    def _aws_action(self, request, name: str, service, action: str) -> Response:
        serializer = EndpointActionSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        outcome = service(
            actor=request.user,
            endpoint=_endpoint(name),
            reason=serializer.validated_data["reason"],
            source=Source.API,
        )
        return Response({"endpoint": name, "action": action, "outcome": outcome})

    @extend_schema(
        request=EndpointActionSerializer,
        responses={200: EndpointActionResultSerializer, 409: CONFLICT},
        description="Delete the SageMaker endpoint AWS left Failed, so the next deployment "
        "creates it anew.",
    )
    @action(detail=True, methods=["post"])
    def recover(self, request, name=None):
        return self._aws_action(request, name, services.endpoint_recover, "recover")

    @extend_schema(
        request=EndpointActionSerializer,
        responses={200: EndpointActionResultSerializer, 409: CONFLICT},
        description="Delete the SageMaker endpoint, its configurations, models and "
        "autoscaling (production: approvers only). Say why.",
    )
    @action(detail=True, methods=["post"])
    def decommission(self, request, name=None):
        return self._aws_action(request, name, services.endpoint_decommission, "decommission")


class DeploymentViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Deployments: start one (202; 409 while another of the same model to the same endpoint
    runs), read one, follow its log."""

    filterset_class = DeploymentFilterSet
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        return selectors.deployment_list()

    def get_serializer_class(self):
        return DeploymentCreateSerializer if self.action == "create" else DeploymentSerializer

    @extend_schema(
        request=DeploymentCreateSerializer, responses={202: DeploymentSerializer, 409: CONFLICT}
    )
    def create(self, request, *args, **kwargs):
        serializer = DeploymentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # Deploys only: where approval is needed this answers 403 approval_required, and
        # CI asks for promotion on the promotions route.
        deployment = services.deployment_request(
            actor=request.user,
            endpoint=_endpoint(data["endpoint"]),
            version=_version(data["model"], data["version"]),
            source=Source.API,
            reason=data["reason"],
            request_promotion=False,
        )
        deployment = selectors.deployment_get(pk=deployment.pk)
        return Response(
            DeploymentSerializer(deployment, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "since",
                {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                description="Id of the last line you have.",
            )
        ],
        responses=DeploymentFollowSerializer,
    )
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def log(self, request, pk=None):
        deployment = self.get_object()
        since = since_param(request.query_params.get("since"))
        follow = selectors.deployment_follow(deployment=deployment, since=since)
        return Response(DeploymentFollowSerializer(follow).data)


class PromotionRequestViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Promotion requests: ask (CI may, with its token), approve or reject (an approver who
    is not the requester)."""

    filterset_class = PromotionFilterSet
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        return selectors.promotion_list()

    def get_serializer_class(self):
        if self.action == "create":
            return PromotionRequestCreateSerializer
        if self.action == "approve":
            return DecisionSerializer
        if self.action == "reject":
            return RejectionSerializer
        return PromotionRequestSerializer

    @extend_schema(
        request=PromotionRequestCreateSerializer,
        responses={201: PromotionRequestSerializer, 409: CONFLICT},
    )
    def create(self, request, *args, **kwargs):
        serializer = PromotionRequestCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        promotion = services.promotion_request_create(
            actor=request.user,
            version=_version(data["model"], data["version"]),
            target_endpoint=_endpoint(data["target_endpoint"]),
            comment=data["comment"],
            source=Source.API,
        )
        promotion = selectors.promotion_get(pk=promotion.pk)
        return Response(PromotionRequestSerializer(promotion).data, status=status.HTTP_201_CREATED)

    def _decide(self, request, service):
        serializer = self.get_serializer_class()(data=request.data)
        serializer.is_valid(raise_exception=True)
        promotion = service(
            actor=request.user,
            promotion=self.get_object(),
            comment=serializer.validated_data["comment"],
            source=Source.API,
        )
        return Response(PromotionRequestSerializer(selectors.promotion_get(pk=promotion.pk)).data)

    @extend_schema(
        request=DecisionSerializer, responses={200: PromotionRequestSerializer, 409: CONFLICT}
    )
    @action(detail=True, methods=["post"])
    def approve(self, request, pk=None):
        return self._decide(request, services.promotion_approve)

    @extend_schema(
        request=RejectionSerializer, responses={200: PromotionRequestSerializer, 409: CONFLICT}
    )
    @action(detail=True, methods=["post"])
    def reject(self, request, pk=None):
        return self._decide(request, services.promotion_reject)
