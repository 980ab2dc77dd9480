"""Reads of the registry, shaped for their pages: each list is one query for its rows,
whatever the page size."""

from __future__ import annotations

from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce

from portal.audit import audit_history
from portal.errors import NotFound
from portal.models import AuditEvent

from .choices import IN_PROGRESS_STATUSES, VersionStatus
from .models import ModelVersion, RegisteredModel, TestResult

LINEAGE_DEPTH = 6
LIST_COLUMNS = [
    "id",
    "model_id",
    "version",
    "status",
    "status_changed_at",
    "status_reason",
    "description",
    "artifact_source",
    "source_uri",
    "content_sha256",
    "size_bytes",
    "source_repository",
    "source_commit",
    "dataset_uri",
    "dataset_version",
    "training_job",
    "metrics",
    "frameworks",
    "tags",
    "registered_at",
    "registered_by_id",
    "parent_id",
    "package_uri",
    "package_sha256",
    "package_size_bytes",
    "model__id",
    "model__name",
    "registered_by__id",
    "registered_by__username",
    "parent__id",
    "parent__version",
    "parent__status",
    "parent__model_id",
    "parent__model__id",
    "parent__model__name",
]


def home_summary(*, user) -> dict:
    return {
        "model_count": RegisteredModel.objects.count(),
        "version_count": ModelVersion.objects.count(),
        "in_progress_count": ModelVersion.objects.filter(status__in=IN_PROGRESS_STATUSES).count(),
        "recent_versions": ModelVersion.objects.select_related("model", "registered_by").order_by(
            "-registered_at"
        )[:10],
    }


def model_list() -> QuerySet[RegisteredModel]:
    """Models with their owner, version count and latest version's number and status."""
    latest = ModelVersion.objects.filter(model=OuterRef("pk")).order_by("-version")
    # Correlated subqueries (on the (model, -version) index) rather than a JOIN + GROUP BY
    # over every version: the cost follows the page, not the size of the registry.
    count = (
        ModelVersion.objects.filter(model=OuterRef("pk"))
        .order_by()
        .values("model")
        .annotate(n=Count("*"))
        .values("n")
    )
    return (
        RegisteredModel.objects.select_related("owner")
        .annotate(
            version_count=Coalesce(Subquery(count), 0),
            latest_version=Subquery(latest.values("version")[:1]),
            latest_status=Subquery(latest.values("status")[:1]),
        )
        .order_by("name")
    )


def model_get(*, name: str) -> RegisteredModel:
    model = model_list().filter(name=name).first()
    if model is None:
        raise NotFound(f"No model named {name!r}.", field="name")
    return model


def version_list(*, model: RegisteredModel | None = None) -> QuerySet[ModelVersion]:
    """Versions newest first with what a list row shows (model, who registered, parent)."""
    qs = ModelVersion.objects.select_related("model", "registered_by", "parent", "parent__model")
    if model is not None:
        qs = qs.filter(model=model).order_by("-version")
    else:
        qs = qs.order_by("-registered_at", "-id")
    # A list row needs a few columns of the version and fewer of its relations.
    return qs.only(*LIST_COLUMNS)


def version_get(*, name: str, version: int) -> ModelVersion:
    """One version with its test results, ready for the version page and API."""
    found = (
        ModelVersion.objects.select_related(
            "model", "model__owner", "registered_by", "parent", "parent__model"
        )
        .prefetch_related(Prefetch("test_results", queryset=TestResult.objects.order_by("id")))
        .filter(model__name=name, version=version)
        .first()
    )
    if found is None:
        raise NotFound(f"{name} v{version} is not registered.")
    return found


def version_status_get(*, name: str, version: int) -> ModelVersion:
    """Just what the live status fragment shows."""
    found = (
        ModelVersion.objects.select_related("model")
        .only(
            "id",
            "model__name",
            "version",
            "status",
            "status_changed_at",
        )
        .filter(model__name=name, version=version)
        .first()
    )
    if found is None:
        raise NotFound(f"{name} v{version} is not registered.")
    return found


def version_history(*, version: ModelVersion) -> QuerySet[AuditEvent]:
    return audit_history(version)


def version_ancestors(*, version: ModelVersion, depth: int = LINEAGE_DEPTH) -> list[ModelVersion]:
    """Parent, grandparent, ... oldest last; at most `depth` of them (one query each)."""
    chain: list[ModelVersion] = []
    seen = {version.pk}
    current = version.parent
    while current is not None and len(chain) < depth and current.pk not in seen:
        chain.append(current)
        seen.add(current.pk)
        current = (
            ModelVersion.objects.select_related("model", "parent", "parent__model")
            .get(pk=current.pk)
            .parent
        )
    return chain


def version_children(*, version: ModelVersion) -> QuerySet[ModelVersion]:
    return version.children.select_related("model").order_by("model__name", "version")


def lineage_graph(*, version: ModelVersion) -> dict:
    """Nodes and edges of the version's lineage, laid out left to right for an inline SVG:
    ancestors -> this version -> versions fine-tuned from it, with its dataset and commit
    above it."""
    ancestors = list(reversed(version_ancestors(version=version)))
    children = list(version_children(version=version)[:4])
    box_w, box_h, gap, margin = 150, 44, 70, 10
    row_y = margin + box_h + 40
    nodes: list[dict] = []

    def add(
        kind: str, label: str, sub: str, x: int, y: int, url: str = "", title: str = ""
    ) -> dict:
        node = {"kind": kind, "label": label[:22], "title": title or label, "sub": sub[:24],
                "x": x, "y": y, "w": box_w, "h": box_h, "url": url}  # fmt: skip
        nodes.append(node)
        return node

    chain = []
    for index, ancestor in enumerate(ancestors):
        chain.append(
            add(
                "parent",
                f"{ancestor.model.name} v{ancestor.version}",
                ancestor.get_status_display(),
                index * (box_w + gap),
                row_y,
                ancestor.get_absolute_url(),
            )  # fmt: skip
        )
    x = len(ancestors) * (box_w + gap)
    current = add("current", f"{version.model.name} v{version.version}",
                  version.get_status_display(), x, row_y)  # fmt: skip
    chain.append(current)
    above = []
    if version.dataset_uri or version.dataset_version:
        above.append(
            (
                "dataset",
                version.dataset_uri.rstrip("/").rsplit("/", 1)[-1] or "dataset",
                version.dataset_version,
                f"{version.dataset_uri} {version.dataset_version}".strip(),
                "trained on",
            )  # fmt: skip
        )
    if version.source_commit or version.source_repository:
        repository = version.source_repository.rstrip("/").rsplit("/", 1)[-1]
        above.append(
            (
                "commit",
                repository or "source",
                version.source_commit[:12],
                f"{version.source_repository} @ {version.source_commit}".strip(" @"),
                "built from",
            )  # fmt: skip
        )
    tops = []
    for index, (kind, label, sub, title, edge_label) in enumerate(above):
        offset = 0 if len(above) == 1 else (index * 2 - 1) * (box_w // 2 + 10)
        tops.append((add(kind, label, sub, x + offset, margin, title=title), edge_label))
    kids = [
        add(
            "child",
            f"{child.model.name} v{child.version}",
            child.get_status_display(),
            x + box_w + gap,
            row_y + index * (box_h + 10),
            child.get_absolute_url(),
        )  # fmt: skip
        for index, child in enumerate(children)
    ]
    # Shift everything right when the nodes above reach past the left edge.
    shift = margin - min(node["x"] for node in nodes)
    for node in nodes:
        node["x"] += shift
        node["cx"] = node["x"] + box_w // 2
        node["cy"] = node["y"] + box_h // 2
    edges = [_edge(a, b, "fine-tuned") for a, b in zip(chain, chain[1:], strict=False)]
    edges += [_edge(node, current, label, vertical=True) for node, label in tops]
    edges += [_edge(current, kid, "fine-tuned") for kid in kids]
    width = max(n["x"] + n["w"] for n in nodes) + margin
    height = max(n["y"] + n["h"] for n in nodes) + margin
    return {"nodes": nodes, "edges": edges, "width": width, "height": height}


def _edge(a: dict, b: dict, label: str, *, vertical: bool = False) -> dict:
    if vertical:
        x1, y1, x2, y2 = a["cx"], a["y"] + a["h"], b["cx"], b["y"]
    else:
        x1, y1, x2, y2 = a["x"] + a["w"], a["cy"], b["x"], b["cy"]
    return {
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "label": label,
        "lx": (x1 + x2) // 2,
        "ly": (y1 + y2) // 2 - (4 if vertical else 6),
    }


# The pipeline as the version page shows it. Per stage: its step on the engine (None for
# registration, which is not a run), the status it runs in, the one it fails in, and the
# statuses that come after it.
S = VersionStatus
PIPELINE = (
    ("registered", "Registered", None, None, set(S.values) - {S.REGISTERED}),
    (
        "validate",
        "Validate",
        S.VALIDATING,
        S.INVALID,
        {S.VALIDATED, S.TESTING, S.TEST_FAILED, S.TESTED, S.PACKAGING, S.PACKAGED},
    ),
    ("test", "Test on Triton", S.TESTING, S.TEST_FAILED, {S.TESTED, S.PACKAGING, S.PACKAGED}),
    ("package", "Package", S.PACKAGING, None, {S.PACKAGED}),
)
PROGRESS_LINES = 50


def version_pipeline(*, version: ModelVersion) -> dict:
    """What the version page's live part shows through the shared run partial: the pipeline's
    stages as steps (state and, from each stage's latest run, its duration and error), the
    latest log lines over all its runs, and the run under way (or the latest)."""
    from django.contrib.contenttypes.models import ContentType

    from runs.models import Run, RunLogLine, RunStep

    from .plans import PLANS

    runs = list(
        Run.objects.filter(
            content_type=ContentType.objects.get_for_model(ModelVersion), object_id=version.pk
        ).order_by("id")
    )
    latest_step: dict[str, RunStep] = {}
    for step in RunStep.objects.filter(run__in=runs).order_by("run_id"):
        latest_step[step.name] = step
    paths = {plan.path(): name for name, plan in PLANS.items()}
    latest_run = {paths.get(run.plan): run for run in runs}
    steps = []
    for name, label, running, failed, after in PIPELINE:
        recorded = latest_step.get(name)
        if version.status in after or running is None:
            state = "done"
        elif version.status == running:
            state = "running"
        elif version.status == failed:
            state = "failed"
        else:
            state = "pending"
        steps.append(
            {
                "name": name,
                "label": label,
                "state": state,
                "duration_seconds": recorded.duration_seconds if recorded else None,
                "error": recorded.error if recorded and state == "failed" else "",
            }
        )
    lines = list(RunLogLine.objects.filter(run__in=runs).order_by("-id")[:PROGRESS_LINES])
    lines.reverse()
    run = next((r for r in reversed(runs) if r.is_active), runs[-1] if runs else None)
    return {"steps": steps, "log_lines": lines, "run": run, "latest_run": latest_run}
