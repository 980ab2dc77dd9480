import pytest
from django.contrib.auth import get_user_model

from deployments.choices import DeploymentKind, DeploymentState, PromotionState
from portal.audit import audit_history, state_transition
from portal.choices import AuditAction, Source
from portal.errors import InvalidTransition
from portal.models import ApiToken


def test_every_recorded_state_change_has_a_named_action():
    """A deployment's or promotion's state change is recorded under `<entity>.<state>`: a
    state without its action would fail the transition instead of recording it."""
    for state in DeploymentState.values:
        assert AuditAction.of("deployment", state) == f"deployment.{state}"
    for kind in DeploymentKind.values:
        assert AuditAction.of("deployment", kind) == f"deployment.{kind}"
    for state in (PromotionState.APPROVED, PromotionState.REJECTED):
        assert AuditAction.of("promotion", state) == f"promotion.{state}"
    with pytest.raises(ValueError):
        AuditAction.of("deployment", "teleported")


@pytest.mark.django_db
def test_state_transition_checks_the_move_saves_and_records():
    """An allowed move saves the state with the fields that move along and writes one audit
    record; a move the table does not allow changes nothing and records nothing."""
    user = get_user_model().objects.create_user("ada", password="pw-ada-123")
    token = ApiToken.objects.create(user=user, name="draft", prefix="p", token_hash="h")
    moves = {"draft": {"ci"}, "ci": set()}

    left = state_transition(
        token,
        "ci",
        transitions=moves,
        refusal="never shown",
        actor=user,
        action=AuditAction.TOKEN_CREATE,
        source=Source.API,
        reason="named for CI",
        state_field="name",
        changes={"prefix": "q"},
    )
    assert left == "draft"
    token.refresh_from_db()
    assert (token.name, token.prefix) == ("ci", "q")
    (event,) = audit_history(token)
    assert (event.action, event.from_state, event.to_state, event.source, event.reason) == (
        "token.create",
        "draft",
        "ci",
        "api",
        "named for CI",
    )

    with pytest.raises(InvalidTransition, match="stays ci") as refused:
        state_transition(
            token,
            "draft",
            transitions=moves,
            refusal="It stays ci.",
            actor=user,
            action=AuditAction.TOKEN_REVOKE,
            source=Source.API,
            state_field="name",
        )
    assert refused.value.field == "name"
    token.refresh_from_db()
    assert token.name == "ci"
    assert audit_history(token).count() == 1
