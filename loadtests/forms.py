"""The load-test form of the browser. It parses what was typed into the configuration
`loadtests.config.parse_config` validates (the one place the rules and bounds live, shared
with the API), and maps the errors parse_config raises back onto the fields they name."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from deployments.models import Endpoint

from .choices import Mix, Pattern, PayloadSource, SloPercentile

#: Configuration paths (as parse_config names them in ServiceError.field) -> form fields.
#: Paths not listed map by their last part when the form has such a field.
FIELD_FOR_PATH = {
    "models": "models",
    "mix": "mix",
    "mix.kind": "mix",
    "mix.top_share": "top_share_percent",
    "top_share": "top_share_percent",
    "payloads": "payloads",
    "payloads.source": "payloads",
    "payloads.upload": "upload",
    "upload": "upload",
    "pattern": "pattern",
    "pattern.kind": "pattern",
    "pattern.rps": "constant_rps",
    "pattern.seconds": "constant_seconds",
    "pattern.growth": "growth",
    "slo.percentile": "slo_percentile",
    "slo.latency_ms": "slo_latency_ms",
    "slo.max_error_rate": "slo_max_error_percent",
    "stop.error_rate": "stop_error_percent",
    "stop.max_seconds": "stop_max_seconds",
}


class LoadTestForm(forms.Form):
    """What a load test of `endpoint` should do. Number fields are typed here; whether the
    numbers make sense together (rates within the environment's bound, the planned duration,
    the stage count) is parse_config's to say."""

    models = forms.MultipleChoiceField(
        label="Target models",
        widget=forms.CheckboxSelectMultiple,
        help_text="The live models the requests go to.",
    )
    mix = forms.ChoiceField(
        label="Traffic mix", choices=Mix.choices, initial=Mix.UNIFORM, widget=forms.RadioSelect
    )
    top_n = forms.IntegerField(label="Top N models", min_value=1, initial=1, required=False)
    top_share_percent = forms.FloatField(
        label="Share to the top N (%)", min_value=0, max_value=100, initial=90, required=False
    )
    zipf_s = forms.FloatField(
        label="Zipf exponent s",
        min_value=0,
        initial=1.1,
        required=False,
        help_text="1.1 is typical of web traffic; higher concentrates on fewer models.",
    )
    replay_minutes = forms.IntegerField(
        label="Replay the shares of the last (minutes)", min_value=1, initial=60, required=False
    )
    payloads = forms.ChoiceField(
        label="Request bodies",
        choices=PayloadSource.choices,
        initial=PayloadSource.TEST_CASES,
        widget=forms.RadioSelect,
    )
    upload = forms.FileField(
        label="JSON-lines file",
        required=False,
        help_text='One request a line: {"target_model": "...", "body": {...}} (or "body_b64").',
    )
    pattern = forms.ChoiceField(
        label="Traffic pattern",
        choices=Pattern.choices,
        initial=Pattern.STAIRS,
        widget=forms.RadioSelect,
    )
    start_rps = forms.FloatField(label="Start rate (req/s)", min_value=0, initial=5, required=False)
    step_rps = forms.FloatField(label="Step (req/s)", min_value=0, initial=5, required=False)
    growth = forms.FloatField(
        label="Growth factor (instead of a step)",
        min_value=0,
        required=False,
        help_text="Find the maximum only: e.g. 1.5 raises each stage by half; instead of a step.",
    )
    step_seconds = forms.FloatField(
        label="Step duration (s)", min_value=0, initial=10, required=False
    )
    ceiling_rps = forms.FloatField(
        label="Ceiling rate (req/s)", min_value=0, initial=50, required=False
    )
    constant_rps = forms.FloatField(label="Rate (req/s)", min_value=0, initial=10, required=False)
    constant_seconds = forms.FloatField(
        label="Duration (s)", min_value=0, initial=60, required=False
    )
    slo_percentile = forms.ChoiceField(
        label="SLO percentile", choices=SloPercentile.choices, initial=SloPercentile.P99
    )
    slo_latency_ms = forms.FloatField(label="SLO latency (ms)", min_value=0, initial=100)
    slo_max_error_percent = forms.FloatField(
        label="Highest error rate within the SLO (%)", min_value=0, max_value=100, initial=1
    )
    stop_error_percent = forms.FloatField(
        label="Stop when errors pass (%)",
        min_value=0,
        max_value=100,
        initial=50,
        help_text="Over the last second, after the first requests.",
    )
    stop_max_seconds = forms.IntegerField(
        label="Stop after at most (s)",
        min_value=1,
        required=False,
        help_text="Empty: the environment's limit.",
    )
    generators = forms.IntegerField(
        label="Generators",
        min_value=1,
        initial=1,
        help_text="Generator processes on as many workers, each offering its share of the rate.",
    )
    safety_factor = forms.FloatField(
        label="Safety factor",
        min_value=0,
        max_value=1,
        initial=0.5,
        help_text="AWS suggests 0.5 to start: the target is half of what one instance held.",
    )
    peak_rps = forms.FloatField(
        label="Expected peak rate (req/s)",
        min_value=0,
        required=False,
        help_text="Optional: for the minimum and maximum instance counts.",
    )
    deployment = forms.IntegerField(widget=forms.HiddenInput, required=False)
    confirmed = forms.BooleanField(required=False, label="Confirmation")

    def __init__(self, *args, endpoint: Endpoint, live_models: list[tuple[str, str]], **kwargs):
        super().__init__(*args, **kwargs)
        self.endpoint = endpoint
        self.fields["models"].choices = live_models
        self.fields["generators"].max_value = settings.BERTH_LOADTEST_MAX_GENERATORS
        self.fields["generators"].widget.attrs["max"] = settings.BERTH_LOADTEST_MAX_GENERATORS
        environment = endpoint.environment
        # The environment's bounds beside the fields they bound (parse_config enforces them).
        rate_bound = f"At most {environment.loadtest_max_rps} req/s on {environment} endpoints."
        time_bound = f"All stages together: at most {environment.loadtest_max_seconds} s."
        self.fields["ceiling_rps"].help_text = rate_bound
        self.fields["constant_rps"].help_text = rate_bound
        self.fields["step_seconds"].help_text = time_bound
        self.fields["constant_seconds"].help_text = time_bound
        self.fields[
            "stop_max_seconds"
        ].help_text = f"Empty: the environment's limit, {environment.loadtest_max_seconds} s."
        for name in ("start_rps", "step_rps", "ceiling_rps", "constant_rps", "peak_rps"):
            self.fields[name].widget.attrs.update({"step": "any"})
        for name in ("start_rps", "ceiling_rps", "constant_rps"):
            self.fields[name].widget.attrs["max"] = environment.loadtest_max_rps
        for name in ("step_seconds", "constant_seconds", "stop_max_seconds"):
            self.fields[name].widget.attrs.update(
                {"max": environment.loadtest_max_seconds, "step": "any"}
            )
        for name, field in self.fields.items():
            if isinstance(field.widget, forms.NumberInput):
                field.widget.attrs.setdefault("step", "any")
                field.widget.attrs["inputmode"] = "decimal"
            # Help and errors describe the input (see _field.html); a group of radios or
            # checkboxes is described on its fieldset instead (_choices.html).
            if not isinstance(field.widget, forms.RadioSelect | forms.CheckboxSelectMultiple):
                field.widget.attrs["aria-describedby"] = f"{name}-help {name}-errors"

    def clean_upload(self):
        """Refuse an oversized file before any of it is read (parse_config bounds what it
        parses too; this names the file's real size)."""
        upload = self.cleaned_data.get("upload")
        limit = settings.BERTH_LOADTEST_MAX_UPLOAD_BYTES
        if upload is not None and upload.size > limit:
            raise forms.ValidationError(
                f"The file is {upload.size} bytes; at most {limit} bytes are accepted."
            )
        return upload

    def add_error(self, field, error):
        super().add_error(field, error)
        # Screen readers announce the field as invalid; its message is in aria-describedby.
        for name in list(self.errors):
            if name in self.fields:
                self.fields[name].widget.attrs["aria-invalid"] = "true"

    def error_summary(self) -> list[tuple[str, str, str]]:
        """(anchor, label, message) of every error, for the summary at the top: groups of
        radios or checkboxes are reached through their fieldset."""
        items = [("", "", str(error)) for error in self.non_field_errors()]
        for name, errors in self.errors.items():
            if name not in self.fields:
                continue
            widget = self.fields[name].widget
            grouped = isinstance(widget, forms.RadioSelect | forms.CheckboxSelectMultiple)
            anchor = f"#field-{name}" if grouped else f"#{self[name].id_for_label}"
            items.extend((anchor, str(self.fields[name].label or name), e) for e in errors)
        return items

    # The configuration --------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The configuration in the API's shape (what parse_config and loadtest_start
        take). Only the chosen pattern's and mix's parameters are sent."""
        data = self.cleaned_data
        mix: dict[str, Any] = {"kind": data["mix"]}
        if data["mix"] == Mix.TOP_N:
            mix["top_n"] = data.get("top_n")
            share = data.get("top_share_percent")
            mix["top_share"] = None if share is None else share / 100.0
        elif data["mix"] == Mix.ZIPF:
            mix["zipf_s"] = data.get("zipf_s")
        elif data["mix"] == Mix.REPLAY:
            mix["replay_minutes"] = data.get("replay_minutes")
        pattern: dict[str, Any] = {"kind": data["pattern"]}
        if data["pattern"] == Pattern.CONSTANT:
            pattern.update(rps=data.get("constant_rps"), seconds=data.get("constant_seconds"))
        else:
            for key in ("start_rps", "step_rps", "step_seconds", "ceiling_rps"):
                pattern[key] = data.get(key)
            if data["pattern"] == Pattern.FIND_MAX and data.get("growth"):
                # A growth factor replaces the step (parse_config takes one of them).
                pattern["growth"] = data["growth"]
                pattern.pop("step_rps")
        stop: dict[str, Any] = {"error_rate": _ratio(data.get("stop_error_percent"))}
        if data.get("stop_max_seconds"):
            stop["max_seconds"] = data["stop_max_seconds"]
        config = {
            "models": list(data.get("models") or []),
            "mix": _without_none(mix),
            "payloads": {"source": data["payloads"]},
            "pattern": _without_none(pattern),
            "slo": {
                "percentile": data["slo_percentile"],
                "latency_ms": data["slo_latency_ms"],
                "max_error_rate": _ratio(data.get("slo_max_error_percent")),
            },
            "stop": _without_none(stop),
            "generators": data.get("generators") or 1,
            "safety_factor": data.get("safety_factor"),
        }
        if data.get("peak_rps"):
            config["peak_rps"] = data["peak_rps"]
        return _without_none(config)

    def upload_bytes(self, limit: int) -> bytes | None:
        """The uploaded file's bytes, at most `limit` + 1 of them (parse_config refuses
        what is over its bound; reading no further keeps a huge upload out of memory)."""
        upload = self.cleaned_data.get("upload")
        if upload is None or self.cleaned_data.get("payloads") != PayloadSource.UPLOAD:
            return None
        upload.seek(0)
        return upload.read(limit + 1)

    def add_config_error(self, path: str | None, message: str) -> None:
        """Put an error of parse_config or a service on the field its path names."""
        self.add_error(self.field_for(path), message)

    def field_for(self, path: str | None) -> str | None:
        if not path:
            return None
        if path in FIELD_FOR_PATH:
            return FIELD_FOR_PATH[path]
        # e.g. "pattern.ceiling_rps" -> ceiling_rps; "models[2]" -> models
        last = path.split(".")[-1].split("[")[0]
        if last in self.fields:
            return last
        head = path.split(".")[0].split("[")[0]
        return FIELD_FOR_PATH.get(head) or (head if head in self.fields else None)


def _ratio(percent: float | None) -> float | None:
    return None if percent is None else round(percent / 100.0, 6)


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class RecommendationForm(forms.Form):
    """The two inputs of a recommendation the user may change on the result page."""

    safety_factor = forms.FloatField(
        label="Safety factor",
        min_value=0.05,
        max_value=1,
        help_text="Share of the measured maximum each instance should carry.",
    )
    peak_rps = forms.FloatField(label="Expected peak rate (req/s)", min_value=0, required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["safety_factor"].widget.attrs.update({"step": "0.05", "inputmode": "decimal"})
        self.fields["peak_rps"].widget.attrs.update({"step": "any", "inputmode": "decimal"})
        for name, field in self.fields.items():
            field.widget.attrs["aria-describedby"] = f"{name}-help {name}-errors"


class DecisionForm(forms.Form):
    """A reason for rejecting or cancelling."""

    # hx-preserve: the page's polling must not wipe a reason being typed.
    reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea({"rows": 2, "hx-preserve": "true"}),
    )
