"""What a kind of long-running work tells the engine: its steps, how to run one, and what
happens to its subject when the run is claimed, succeeds, fails, is handed back or is
cancelled. In the spirit of NetBox's `JobRunner` (netbox/jobs.py): a subclass per kind of
work, one engine (runs.runner) for claiming, heartbeats, attempts, logs and timing.

A run names its plan by the dotted path of the plan's class, so no registry has to be
filled at start-up and a worker finds the plan of any run it is handed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from .models import Run


class StepError(Exception):
    """A step failed for a reason worth showing to the person who started the run."""


class RetryableStepError(StepError):
    """A step failed for a passing reason (a busy service, a throttled API): the run gets
    another attempt after a backoff while it has attempts left."""


class RunLost(Exception):
    """Another worker holds the run now, or it finished meanwhile: stop quietly."""


class RunCancelled(Exception):
    """Someone asked for the run to stop."""


@dataclass(frozen=True)
class PlanStep:
    name: str
    label: str


@dataclass
class RunContext:
    """What a step may do besides its work: write log lines, show it is alive (which also
    tells it, by raising RunCancelled, that the run was cancelled), and read what the
    earlier steps found."""

    run: Run
    subject: Any
    worker: str
    log: Callable[..., None]
    heartbeat: Callable[[], None]
    results: dict[str, Any] = field(default_factory=dict)
    step: str = ""
    #: What the plan keeps for the run's duration in this worker (a client, say).
    scratch: dict[str, Any] = field(default_factory=dict)


class Plan:
    """A kind of long-running work. Subclasses give `steps` and `step_<name>` methods (or
    override `run_step`), and may react to the run's life in the hooks, which the engine
    calls inside the transaction that changes the run's state, with the run's row locked:
    a hook that writes the subject's state and its audit record commits with the run."""

    #: Errors (besides RetryableStepError) that earn the run another attempt.
    retry_on: tuple[type[BaseException], ...] = ()
    #: Appended to the reason when the sweep gives a run up.
    gave_up_note: str = ""
    #: Seconds between heartbeats while a step runs.
    heartbeat_seconds: int = 10

    @classmethod
    def path(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    # Limits (properties, so settings changed at run time are seen) --------------------

    @property
    def stale_seconds(self) -> int:
        """No heartbeat for this long: the worker is gone."""
        from django.conf import settings

        return settings.BERTH_RUN_STALE_SECONDS

    @property
    def timeout_seconds(self) -> int:
        """A run older than this is failed by the sweep instead of resumed."""
        from django.conf import settings

        return settings.BERTH_RUN_TIMEOUT_SECONDS

    @property
    def max_attempts(self) -> int:
        from django.conf import settings

        return settings.BERTH_RUN_MAX_ATTEMPTS

    def backoff_seconds(self, attempt: int) -> int:
        """Wait before attempt `attempt + 1`: exponential, capped."""
        from django.conf import settings

        base = settings.BERTH_RUN_BACKOFF_SECONDS
        return int(min(settings.BERTH_RUN_BACKOFF_MAX_SECONDS, base * 2 ** max(0, attempt - 1)))

    # The work ---------------------------------------------------------------------------

    def load_subject(self, run: Run) -> Any:
        return run.subject

    def steps(self, subject: Any) -> list[PlanStep]:
        raise NotImplementedError

    def run_step(self, step: str, ctx: RunContext) -> dict[str, Any] | None:
        """Run one step; return what it found (kept with the step), or None. Returning
        {"skipped": True, ...} records the step as skipped (nothing to do)."""
        handler = getattr(self, f"step_{step}", None)
        if handler is None:
            raise StepError(f"{type(self).__name__} has no step {step!r}.")
        return handler(ctx)

    # Who may do what ----------------------------------------------------------------------

    def may_cancel(self, actor, subject: Any) -> bool:
        """Whether `actor` may cancel a run of this plan for `subject` (the run partial asks
        before it shows a Cancel button). Plans whose work must not stop half-way keep the
        default: nobody."""
        return False

    def cancel(self, run: Run, subject: Any, *, actor, reason: str, source: str) -> None:
        """Cancel the run through the subject's own service, which checks who may and
        records it (`POST /api/v1/runs/<id>/cancel/` and the partial's button call this).
        The default refuses."""
        from portal.errors import PermissionDenied

        raise PermissionDenied("Runs of this kind cannot be cancelled.")

    # Hooks ------------------------------------------------------------------------------

    def on_claim(self, run: Run, subject: Any, *, resumed: bool, done: list[str]) -> None:
        """A worker took the run (attempt `run.attempts`)."""

    def on_succeed(self, run: Run, subject: Any, *, results: dict[str, Any]) -> None:
        """Every step is done. Raise RunLost to leave the run as it is."""

    def on_fail(
        self, run: Run, subject: Any, *, step: str, error: str, actor=None, source: str = ""
    ) -> None:
        """The run failed (a step's error, out of attempts or time)."""

    def on_requeue(self, run: Run, subject: Any, *, reason: str) -> None:
        """The run goes back to pending for another attempt."""

    def on_cancel(
        self, run: Run, subject: Any, *, actor=None, reason: str = "", source: str = ""
    ) -> None:
        """The run was cancelled."""


@cache
def plan_for(path: str) -> Plan:
    """The plan a run names. Only services write `Run.plan`, never a request."""
    plan_class = import_string(path)
    if not (isinstance(plan_class, type) and issubclass(plan_class, Plan)):
        raise TypeError(f"{path} is not a Plan.")
    return plan_class()
