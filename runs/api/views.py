"""The one API for any run: its log (`GET /api/v1/runs/<id>/log/?since=<line id>`) and
its cancellation (`POST /api/v1/runs/<id>/cancel/`)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from portal.choices import Source
from portal.errors import NotFound, ServiceError
from runs import selectors, services
from runs.models import Run
from runs.serializers import RunCancelSerializer, RunFollowSerializer, RunSerializer

MAX_LINE_ID = 2**63 - 1
SINCE_PARAMETER = OpenApiParameter(
    "since",
    {"type": "integer", "minimum": 0, "maximum": MAX_LINE_ID},
    description="Id of the last line you have.",
)


def since_param(raw: str | None) -> int:
    """The `since` query parameter: a line id, 0 when absent."""
    try:
        since = int(raw or 0)
    except ValueError as exc:
        raise ServiceError("`since` must be a line id (an integer).", field="since") from exc
    if not 0 <= since <= MAX_LINE_ID:
        raise ServiceError(f"`since` must be between 0 and {MAX_LINE_ID}.", field="since")
    return since


class RunLogView(GenericAPIView):
    """A run's state, steps and the log lines after `since`. Every signed-in user reads
    runs, as they read the deployments and versions the runs are about."""

    serializer_class = RunFollowSerializer
    pagination_class = None
    filter_backends: list = []

    @extend_schema(parameters=[SINCE_PARAMETER], responses=RunFollowSerializer)
    def get(self, request, pk: int):
        run = Run.objects.prefetch_related(selectors.steps_prefetch()).filter(pk=pk).first()
        if run is None:
            raise NotFound("No such run.")
        follow = selectors.run_follow(
            run=run,
            state=run.state,
            finished=not run.is_active,
            since=since_param(request.query_params.get("since")),
        )
        return Response(RunFollowSerializer(follow).data)


class RunCancelView(GenericAPIView):
    """Ask a run to stop. Who may is the run's subject's rule (a deployment: whoever may
    deploy there; a load test: its requester, approvers and admins). A pending run stops at
    once; a running one at its next heartbeat (load tests: within a second; deployments:
    after the current step). Answers the run's state afterwards."""

    serializer_class = RunCancelSerializer
    pagination_class = None
    filter_backends: list = []

    @extend_schema(request=RunCancelSerializer, responses=RunSerializer)
    def post(self, request, pk: int):
        run = Run.objects.filter(pk=pk).first()
        if run is None:
            raise NotFound("No such run.")
        body = RunCancelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = services.run_cancel_requested(
            actor=request.user, run=run, reason=body.validated_data["reason"], source=Source.API
        )
        return Response(RunSerializer(run).data)
