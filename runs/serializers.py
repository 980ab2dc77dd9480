"""The one API shape of a run's log (any run: a deployment's, a version's pipeline...)."""

from rest_framework import serializers

from .choices import RunState, StepState
from .models import Run, RunLogLine
from .services import MAX_CANCEL_REASON


class RunStepSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    state = serializers.ChoiceField(choices=StepState.choices)
    started_at = serializers.CharField(required=False)
    finished_at = serializers.CharField(required=False)
    error = serializers.CharField(required=False)
    result = serializers.DictField(required=False)


class RunLogLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = RunLogLine
        fields = ["id", "created_at", "level", "step", "message"]


class RunFollowSerializer(serializers.Serializer):
    state = serializers.CharField()
    finished = serializers.BooleanField()
    steps = RunStepSerializer(many=True)
    lines = RunLogLineSerializer(many=True)
    next = serializers.IntegerField(help_text="Pass as `since` to get the lines after these.")


class RunCancelSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=MAX_CANCEL_REASON, required=False, allow_blank=True, default=""
    )


class RunSerializer(serializers.ModelSerializer):
    state = serializers.ChoiceField(choices=RunState.choices)

    class Meta:
        model = Run
        fields = ["id", "state", "cancel_requested", "error", "attempts", "created_at"]
