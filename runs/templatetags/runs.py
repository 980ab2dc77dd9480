"""What the run partial asks of a run: whether the person looking may cancel it."""

from django import template

from runs.plans import plan_for

register = template.Library()


@register.filter
def cancellable_by(run, user) -> bool:
    """True when `user` may cancel `run` now (its plan's subject's rule)."""
    if run is None or not getattr(run, "is_active", False) or run.cancel_requested:
        return False
    plan = plan_for(run.plan)
    return plan.may_cancel(user, plan.load_subject(run))


@register.filter
def steps_or_own(steps, run):
    """The steps a page passed in (the version page's pipeline), else the run's own."""
    if steps:
        return steps
    return run.steps.all() if run is not None else []
