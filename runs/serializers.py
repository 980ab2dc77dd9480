"""The one API shape of a run's log (any run: a deployment's, a version's pipeline...)."""

from rest_framework import serializers

from .choices import StepState
from .models import RunLogLine


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
