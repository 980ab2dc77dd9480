"""Forms of the deploy wizard, the endpoint page and the approval page. They parse input;
the rules are the services'."""

import re

from django import forms

from .choices import DEFAULT_GPU_INSTANCE_TYPE, GPU_INSTANCE_TYPES, Backend
from .models import Endpoint, Environment, endpoint_name_validator
from .services.endpoints import ENDPOINT_FIELDS


class MemorySizeField(forms.IntegerField):
    """A memory size typed the way people write it ("8 GiB", "512 MiB", "1.5 GB", or plain
    bytes), cleaned to bytes; a stored value is shown back in the largest whole binary unit.
    A dozen lines, so no size-parsing dependency (none is installed; humanfriendly would be
    the one to take if more formats were needed)."""

    UNITS = {
        "": 1,
        "b": 1,
        "kb": 1000,
        "mb": 1000**2,
        "gb": 1000**3,
        "tb": 1000**4,
        "kib": 1024,
        "mib": 1024**2,
        "gib": 1024**3,
        "tib": 1024**4,
    }
    PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", re.IGNORECASE)
    widget = forms.TextInput

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, int):
            return value
        match = self.PATTERN.match(str(value))
        unit = match[2].lower() if match else ""
        if not match or unit not in self.UNITS:
            raise forms.ValidationError(
                "Write a size such as 8 GiB, 512 MiB or 2 GB (or a number of bytes).",
                code="invalid",
            )
        return int(float(match[1]) * self.UNITS[unit])

    def prepare_value(self, value):
        if isinstance(value, int) and value > 0:
            for unit in ("TiB", "GiB", "MiB", "KiB"):
                size = self.UNITS[unit.lower()]
                if value % size == 0:
                    return f"{value // size} {unit}"
        return value


class EndpointStepForm(forms.Form):
    """Step 2: an existing endpoint, or a new one."""

    choice = forms.ChoiceField(
        choices=[("existing", "An existing endpoint"), ("new", "A new endpoint")],
        initial="existing",
        widget=forms.RadioSelect,
    )
    endpoint = forms.ModelChoiceField(
        queryset=Endpoint.objects.select_related("environment"),
        required=False,
        to_field_name="name",
        widget=forms.RadioSelect,
    )
    name = forms.CharField(max_length=63, required=False, validators=[endpoint_name_validator])
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.all(), required=False, to_field_name="name"
    )
    backend = forms.ChoiceField(choices=Backend.choices, required=False, initial=Backend.LOCAL)
    instance_type = forms.ChoiceField(
        choices=GPU_INSTANCE_TYPES,
        required=False,
        initial=DEFAULT_GPU_INSTANCE_TYPE,
        label="GPU instance type",
    )
    initial_instance_count = forms.IntegerField(min_value=1, required=False, initial=1)
    region = forms.CharField(
        required=False, help_text="SageMaker only; default the portal's region."
    )
    execution_role_arn = forms.CharField(required=False, label="Execution role ARN")
    s3_prefix = forms.CharField(required=False, label="S3 prefix", help_text="s3://bucket/prefix/")
    memory_budget_bytes = MemorySizeField(
        min_value=1,
        required=False,
        label="Memory budget",
        help_text="Local data plane only: how much the endpoint's loaded models may hold, "
        "e.g. 8 GiB or 512 MiB. Empty: no budget.",
    )

    def clean(self):
        data = super().clean()
        if data.get("choice") == "existing" and not data.get("endpoint"):
            self.add_error("endpoint", "Choose an endpoint.")
        if data.get("choice") == "new":
            if not data.get("name"):
                self.add_error("name", "Name the new endpoint.")
            if not data.get("environment"):
                self.add_error("environment", "Choose its environment.")
            if data.get("backend") == Backend.SAGEMAKER:
                for field in ("execution_role_arn", "s3_prefix"):
                    if not data.get(field):
                        self.add_error(field, "Needed for a SageMaker endpoint.")
        return data


class AutoscalingForm(forms.Form):
    """Step 3: the endpoint's autoscaling policy (target tracking on invocations per
    instance), prefilled from the endpoint."""

    autoscaling_min_instances = forms.IntegerField(min_value=1, label="Minimum instances")
    autoscaling_max_instances = forms.IntegerField(min_value=1, label="Maximum instances")
    target_invocations_per_instance = forms.IntegerField(
        min_value=1, label="Target invocations per instance (per minute)"
    )
    scale_in_cooldown_seconds = forms.IntegerField(min_value=0, label="Scale-in cooldown (s)")
    scale_out_cooldown_seconds = forms.IntegerField(min_value=0, label="Scale-out cooldown (s)")

    def clean(self):
        data = super().clean()
        low, high = data.get("autoscaling_min_instances"), data.get("autoscaling_max_instances")
        if low and high and high < low:
            self.add_error("autoscaling_max_instances", "At least the minimum.")
        return data


class ReviewForm(forms.Form):
    """Step 4: confirm; for production, the promotion request's comment."""

    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


class AlarmNamesField(forms.CharField):
    """CloudWatch alarm names, one a line (a name may hold a comma), cleaned to a list."""

    widget = forms.Textarea(attrs={"rows": 2})

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value


class RolloutFields(forms.Form):
    """How a SageMaker endpoint's changes roll out (its deployment guardrails); SageMaker's
    bounds are checked by the endpoint service."""

    rollout_traffic = forms.ChoiceField(
        choices=Endpoint._meta.get_field("rollout_traffic").choices,
        initial="ALL_AT_ONCE",
        required=False,
        label="Traffic shifting",
        help_text="Blue/green: the new fleet is provisioned beside the old one, which keeps "
        "serving until traffic has moved.",
    )
    rollout_step_type = forms.ChoiceField(
        choices=Endpoint._meta.get_field("rollout_step_type").choices,
        initial="CAPACITY_PERCENT",
        required=False,
        label="Step counted in",
    )
    rollout_step_size = forms.IntegerField(
        min_value=1,
        required=False,
        label="Canary or linear step",
        help_text="Canary: at most 50% of the fleet; linear: 10-50%.",
    )
    rollout_wait_seconds = forms.IntegerField(
        min_value=0,
        max_value=3600,
        required=False,
        initial=0,
        label="Baking period per step (s)",
    )
    rollout_termination_wait_seconds = forms.IntegerField(
        min_value=0,
        max_value=3600,
        required=False,
        initial=0,
        label="Keep the old fleet after the last step (s)",
    )
    rollout_timeout_seconds = forms.IntegerField(
        min_value=600, max_value=28800, required=False, label="Update timeout (s)"
    )
    rollback_alarms = AlarmNamesField(
        required=False,
        label="Auto-rollback alarms",
        help_text="CloudWatch alarm names in the endpoint's region, one a line (up to 10).",
    )


class EndpointForm(RolloutFields):
    """A new endpoint, outside the wizard (admins only; the service says so). Its rollout
    settings (SageMaker only) come last."""

    name = forms.CharField(max_length=63, validators=[endpoint_name_validator])
    environment = forms.ModelChoiceField(queryset=Environment.objects.all(), to_field_name="name")
    backend = forms.ChoiceField(choices=Backend.choices, initial=Backend.LOCAL)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    target_name = forms.CharField(
        required=False,
        max_length=63,
        label="Maps to",
        help_text="The data-plane endpoint (local) or SageMaker endpoint (sagemaker) it deploys "
        "to. Empty: its own name.",
    )
    memory_budget_bytes = forms.IntegerField(min_value=1, required=False)
    region = forms.CharField(required=False)
    instance_type = forms.ChoiceField(
        choices=GPU_INSTANCE_TYPES, initial=DEFAULT_GPU_INSTANCE_TYPE, label="GPU instance type"
    )
    initial_instance_count = forms.IntegerField(min_value=1, initial=1)
    execution_role_arn = forms.CharField(required=False, label="Execution role ARN")
    s3_prefix = forms.CharField(required=False, label="S3 prefix")
    image_uri = forms.CharField(
        required=False,
        label="Triton image URI",
        help_text="Empty: the SageMaker Triton image of the region.",
    )

    # In the order the service lists an endpoint's settings (names the form lacks are skipped).
    field_order = ["name", "environment", "backend", *ENDPOINT_FIELDS]


class DecisionForm(forms.Form):
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


class PromotionForm(forms.Form):
    version = forms.IntegerField(widget=forms.HiddenInput)
    target_endpoint = forms.ModelChoiceField(
        queryset=Endpoint.objects.filter(environment__requires_approval=True), to_field_name="name"
    )
    comment = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # With one production endpoint there is nothing to choose: it is preselected.
        choices = list(self.fields["target_endpoint"].queryset[:2])
        if len(choices) == 1 and not self.initial.get("target_endpoint"):
            self.initial["target_endpoint"] = choices[0].name
