"""Browser forms. They turn text boxes into the same values the API takes; the checks that
matter run in the services, and their errors come back onto the form field concerned."""

import json

import yaml
from django import forms

from toolkit import yamlsafe

# Service error fields -> form fields.
FIELD_MAP = {
    "archive": "archive",
    "uri": "uri",
    "lineage": "__all__",
    "lineage.source_repository": "source_repository",
    "lineage.source_commit": "source_commit",
    "lineage.dataset_uri": "dataset_uri",
    "lineage.dataset_version": "dataset_version",
    "lineage.training_job": "training_job",
    "lineage.parent": "parent",
    "lineage.metrics": "metrics",
    "lineage.frameworks": "frameworks",
    "lineage.tags": "tags",
    "test_cases": "test_cases",
    "version": "__all__",
    "name": "name",
    "tags": "tags",
}


def add_service_error(form: forms.Form, exc) -> None:
    field = FIELD_MAP.get(exc.field or "", "__all__")
    if field != "__all__" and field not in form.fields:
        field = "__all__"
    form.add_error(None if field == "__all__" else field, exc.message)


class ModelCreateForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="Letters, digits, '_', '.', '-'.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    tags = forms.CharField(required=False, help_text="Comma separated.")

    def clean_tags(self):
        return [t.strip() for t in self.cleaned_data["tags"].split(",") if t.strip()]


class VersionUploadForm(forms.Form):
    archive = forms.FileField(
        required=False,
        help_text="A Triton model repository as .tar.gz, .tgz, .tar or .zip.",
        widget=forms.ClearableFileInput(attrs={"accept": ".tar.gz,.tgz,.tar,.zip"}),
    )
    uri = forms.CharField(
        required=False,
        max_length=1024,
        label="…or its URI",
        help_text="s3://bucket/key.tar.gz, s3://bucket/repository/ (a folder of objects), or a "
        "local path the server may read.",
    )
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    source_repository = forms.CharField(required=False, max_length=512, label="Source repository")
    source_commit = forms.CharField(required=False, max_length=64, label="Commit")
    dataset_uri = forms.CharField(required=False, max_length=1024, label="Dataset URI")
    dataset_version = forms.CharField(
        required=False, max_length=128, label="Dataset version or hash"
    )
    training_job = forms.CharField(required=False, max_length=1024, label="Training job id or URL")
    parent = forms.CharField(
        required=False,
        label="Fine-tuned from",
        help_text="model:version, e.g. iris:3; pick one of the suggestions or type it.",
        widget=forms.TextInput(attrs={"list": "parent-versions", "autocomplete": "off"}),
    )
    metrics = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line: name = number (or a JSON object).",
    )
    frameworks = forms.CharField(required=False, help_text="Comma separated, e.g. onnx, pytorch.")
    tags = forms.CharField(required=False, help_text="Comma separated.")
    test_cases = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Extra test cases",
        help_text="YAML or JSON list in berth.yaml's tests: shape (optional).",
    )

    #: Suggestions the "Fine-tuned from" picker offers; the service checks what is typed.
    PARENT_SUGGESTIONS = 200

    def __init__(self, *args, model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = model
        # One of "archive" or "uri" is needed; the page marks both and says so.
        self.required_one_of = ("archive", "uri")

    def parent_suggestions(self) -> list[tuple[str, str]]:
        """(value, label) of recent versions, this model's first: what a fine-tuned version
        is most often made from."""
        from .models import ModelVersion

        versions = ModelVersion.objects.select_related("model").order_by("-registered_at")[
            : self.PARENT_SUGGESTIONS
        ]
        own = self.model.pk if self.model is not None else None
        ranked = sorted(versions, key=lambda v: v.model_id != own)
        return [
            (
                f"{v.model.name}:{v.version}",
                f"{v.model.name} v{v.version} ({v.get_status_display()})",
            )
            for v in ranked
        ]

    def clean_metrics(self):
        text = self.cleaned_data["metrics"].strip()
        if not text:
            return {}
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise forms.ValidationError(f"Not valid JSON: {exc}") from exc
            return value
        metrics = {}
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise forms.ValidationError(f"Line {number}: write name = number.")
            try:
                metrics[name.strip()] = float(value)
            except ValueError as exc:
                raise forms.ValidationError(
                    f"Line {number}: {value.strip()!r} is not a number."
                ) from exc
        return metrics

    def clean_test_cases(self):
        text = self.cleaned_data["test_cases"].strip()
        if not text:
            return None
        try:
            value = yamlsafe.load(text, what="The test cases")
        except yamlsafe.YamlRefused as exc:
            raise forms.ValidationError(str(exc)) from exc
        except yaml.YAMLError as exc:
            raise forms.ValidationError(f"Not valid YAML or JSON: {exc}") from exc
        if isinstance(value, dict) and "tests" in value:
            value = value["tests"]
        return value

    def clean(self):
        data = super().clean()
        if not data.get("archive") and not (data.get("uri") or "").strip():
            self.add_error("archive", "Upload an archive or give its URI.")
        return data

    def lineage(self) -> dict:
        data = self.cleaned_data
        lineage = {
            key: data.get(key, "")
            for key in (
                "source_repository",
                "source_commit",
                "dataset_uri",
                "dataset_version",
                "training_job",
            )
        }
        lineage["parent"] = data.get("parent") or None
        lineage["metrics"] = data.get("metrics") or {}
        lineage["frameworks"] = data.get("frameworks", "")
        lineage["tags"] = data.get("tags", "")
        return lineage
