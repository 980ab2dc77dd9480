"""Deployment guardrails of a SageMaker endpoint change: the endpoint service refuses what
SageMaker would (sizes, waits, timeouts, alarms CloudWatch does not have), and the update
sends exactly the DeploymentConfig botocore's service model takes (Stubber: moto has no
UpdateEndpoint). The wizard's review shows what an update rolls out."""

from __future__ import annotations

import pytest

from deployments import services
from deployments.backends.base import DeploymentStepError
from deployments.backends.sagemaker import SageMakerBackend
from deployments.backends.sagemaker.guardrails import (
    deployment_config,
    describe_rollout,
    missing_alarms,
)
from deployments.choices import DeploymentState
from deployments.models import Endpoint
from portal.errors import ServiceError

from .factories import (
    packaged_version,
    put_alarm,
    queue_answer,
    run,
    sagemaker_endpoint,
)
from .test_sagemaker_contract import (
    context,
    described_endpoint,
    expect_current,
    expect_resolved,
    stubs,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("fields", "field", "reason"),
    [
        ({"rollout_traffic": "CANARY"}, "rollout_step_size", "needs a size"),
        (
            {"rollout_traffic": "CANARY", "rollout_step_size": 60},
            "rollout_step_size",
            "1-50% of the fleet",
        ),
        (
            {"rollout_traffic": "LINEAR", "rollout_step_size": 5},
            "rollout_step_size",
            "10-50% of the fleet",
        ),
        (
            # One instance of a one-instance fleet is 100%, not a canary.
            {
                "rollout_traffic": "CANARY",
                "rollout_step_type": "INSTANCE_COUNT",
                "rollout_step_size": 1,
            },
            "rollout_step_size",
            "1 instance(s): 1 is not",
        ),
        ({"rollout_wait_seconds": 3601}, "rollout_wait_seconds", "3600"),
        ({"rollout_timeout_seconds": 599}, "rollout_timeout_seconds", "600"),
        (
            # 10 linear steps of 60 s is all of 600 s: the timeout must be longer.
            {
                "rollout_traffic": "LINEAR",
                "rollout_step_size": 10,
                "rollout_wait_seconds": 60,
                "rollout_timeout_seconds": 600,
            },
            "rollout_timeout_seconds",
            "waits 600 s in all",
        ),
        ({"rollback_alarms": ["ok", "  "]}, "rollback_alarms", "Not a valid"),
        ({"rollback_alarms": [f"a{i}" for i in range(11)]}, "rollback_alarms", "At most 10"),
        ({"rollback_alarms": ["sm-5xx"]}, "rollback_alarms", "CloudWatch has no alarm sm-5xx"),
    ],
)
def test_the_service_refuses_what_sagemaker_would(aws, platform_admin, fields, field, reason):
    endpoint = sagemaker_endpoint()
    with pytest.raises(ServiceError) as refused:
        services.endpoint_update(actor=platform_admin, endpoint=endpoint, **fields)
    assert refused.value.field == field
    assert reason in refused.value.message


def test_guardrails_are_saved_once_the_alarms_exist(aws, platform_admin):
    endpoint = sagemaker_endpoint(initial_instance_count=4)
    put_alarm("sm-5xx")
    saved = services.endpoint_update(
        actor=platform_admin,
        endpoint=endpoint,
        rollout_traffic="LINEAR",
        rollout_step_type="INSTANCE_COUNT",
        rollout_step_size=2,
        rollout_wait_seconds=300,
        rollout_termination_wait_seconds=120,
        rollout_timeout_seconds=3600,
        rollback_alarms=["sm-5xx"],
    )
    assert describe_rollout(saved) == (
        "Blue/green: linear steps of 2 instance(s) (2 steps), each baked 300 s; old fleet "
        "kept 120 s more; timeout 3600 s; rolled back if sm-5xx goes to ALARM."
    )
    # All at once uses no step size: a stale one is dropped, not sent.
    saved = services.endpoint_update(
        actor=platform_admin, endpoint=saved, rollout_traffic="ALL_AT_ONCE"
    )
    assert saved.rollout_step_size is None
    assert "rollout_step_size" not in str(deployment_config(saved))


def test_missing_alarms_reads_every_page(stubs):  # noqa: F811
    cloudwatch = stubs["cloudwatch"]
    params = {"AlarmNames": ["a", "b", "c"], "AlarmTypes": ["MetricAlarm", "CompositeAlarm"]}
    cloudwatch.add_response(
        "describe_alarms", {"MetricAlarms": [{"AlarmName": "a"}], "NextToken": "2"}, params
    )
    cloudwatch.add_response(
        "describe_alarms", {"CompositeAlarms": [{"AlarmName": "c"}]}, params | {"NextToken": "2"}
    )
    from portal import aws

    assert missing_alarms(aws.client("cloudwatch"), ["a", "b", "c"]) == ["b"]


def canary_endpoint():
    endpoint = sagemaker_endpoint(
        instance_type="ml.g5.xlarge",
        initial_instance_count=2,
        rollout_traffic="CANARY",
        rollout_step_type="CAPACITY_PERCENT",
        rollout_step_size=10,
        rollout_wait_seconds=600,
        rollout_termination_wait_seconds=300,
        rollout_timeout_seconds=7200,
        rollback_alarms=["sm-staging-5xx", "sm-staging-latency"],
    )
    return endpoint


def test_a_canary_with_alarms_is_sent_as_sagemaker_takes_it(stubs, scientist):  # noqa: F811
    endpoint = canary_endpoint()
    ctx, lines = context(endpoint, scientist)
    backend = SageMakerBackend()
    sm, scaling, cloudwatch = (
        stubs["sagemaker"],
        stubs["application-autoscaling"],
        stubs["cloudwatch"],
    )
    old = backend.variant_spec(endpoint, endpoint.sagemaker_model_name) | {
        "InstanceType": "ml.g4dn.xlarge"
    }
    config = expect_resolved(sm, backend, endpoint, old_config=old)
    name = {"EndpointName": "sm-staging"}
    base = endpoint.sagemaker_config_name
    sm.add_response("describe_endpoint", described_endpoint(endpoint, "InService", base), name)
    cloudwatch.add_response(
        "describe_alarms",
        {"MetricAlarms": [{"AlarmName": "sm-staging-5xx"}, {"AlarmName": "sm-staging-latency"}]},
        {
            "AlarmNames": ["sm-staging-5xx", "sm-staging-latency"],
            "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
        },
    )
    expect_current(sm, backend, endpoint, old)
    scaling.add_response("describe_scalable_targets", {"ScalableTargets": []}, None)
    sm.add_response(
        "update_endpoint",
        {"EndpointArn": described_endpoint(endpoint, "Updating", config)["EndpointArn"]},
        name
        | {
            "EndpointConfigName": config,
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "WaitIntervalInSeconds": 600,
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                    },
                    "TerminationWaitInSeconds": 300,
                    "MaximumExecutionTimeoutInSeconds": 7200,
                },
                "AutoRollbackConfiguration": {
                    "Alarms": [
                        {"AlarmName": "sm-staging-5xx"},
                        {"AlarmName": "sm-staging-latency"},
                    ]
                },
            },
            # Only the instance type changed: the fleet keeps the count autoscaling gave it.
            "RetainAllVariantProperties": True,
        },
    )
    sm.add_response("describe_endpoint", described_endpoint(endpoint, "InService", config), name)

    assert backend.step_ensure_endpoint(ctx) == {"status": "InService", "config": config}
    update = next(line for line in lines if line.startswith("Updating endpoint"))
    assert "it stays in service" in update
    assert "canary of 10%, baked 600 s, then the rest" in update


def test_an_alarm_deleted_since_stops_the_update_before_anything_changes(
    stubs,  # noqa: F811
    scientist,
):
    endpoint = canary_endpoint()
    ctx, _ = context(endpoint, scientist)
    backend = SageMakerBackend()
    sm, cloudwatch = stubs["sagemaker"], stubs["cloudwatch"]
    old = backend.variant_spec(endpoint, endpoint.sagemaker_model_name) | {
        "InitialInstanceCount": 1
    }
    expect_resolved(sm, backend, endpoint, old_config=old)
    base = endpoint.sagemaker_config_name
    sm.add_response(
        "describe_endpoint",
        described_endpoint(endpoint, "InService", base),
        {"EndpointName": "sm-staging"},
    )
    cloudwatch.add_response("describe_alarms", {"MetricAlarms": [{"AlarmName": "sm-staging-5xx"}]})

    # No autoscaling deregistration, no UpdateEndpoint: the Stubber would refuse them.
    with pytest.raises(DeploymentStepError, match="sm-staging-latency do not exist"):
        backend.step_ensure_endpoint(ctx)


def test_the_review_shows_what_an_endpoint_change_rolls_out(client, aws, scientist, platform_admin):
    endpoint = sagemaker_endpoint()
    version = packaged_version(registered_by=scientist)
    queue_answer(version.test_cases[0])
    done = run(services.deployment_start(actor=scientist, endpoint=endpoint, version=version))
    assert done.state == DeploymentState.SUCCEEDED, done.error

    client.force_login(scientist)

    def review() -> str:
        client.get(f"/deployments/start/?endpoint={endpoint.name}")
        client.post(
            "/deployments/new/1/", {"version": packaged_version(registered_by=scientist).pk}
        )
        client.post("/deployments/new/2/", {"choice": "existing", "endpoint": endpoint.name})
        step3 = client.get("/deployments/new/3/")
        client.post("/deployments/new/3/", step3.context["form"].initial)
        return client.get("/deployments/new/4/").content.decode()

    unchanged = review()
    assert "No endpoint change: sm-staging keeps sm-staging-config." in unchanged
    assert 'id="endpoint-config-diff"' not in unchanged

    put_alarm("sm-5xx")
    services.endpoint_update(
        actor=platform_admin,
        endpoint=endpoint,
        instance_type="ml.g5.xlarge",
        initial_instance_count=2,
        rollout_traffic="LINEAR",
        rollout_step_size=50,
        rollout_wait_seconds=120,
        rollback_alarms=["sm-5xx"],
    )
    changed = review()
    assert 'id="endpoint-config-diff"' in changed
    assert 'data-setting="instance_type"' in changed and 'data-setting="instance_count"' in changed
    assert 'data-setting="image"' not in changed  # what did not change is not listed
    assert "instance type ml.g4dn.xlarge → ml.g5.xlarge" in changed
    assert "it stays in service during the update" in changed
    assert "linear steps of 50% (2 steps), each baked 120 s" in changed
    assert "rolled back if sm-5xx goes to ALARM" in changed


def test_the_endpoint_form_sets_the_guardrails(client, aws, platform_admin):
    from .factories import allow, environment

    client.force_login(platform_admin)
    allow(
        environment("staging"),
        s3_prefix="s3://berth-models/",
        role="arn:aws:iam::123456789012:role/berth-sagemaker",
    )
    fields = {
        "name": "sm-canary",
        "environment": "staging",
        "backend": "sagemaker",
        "instance_type": "ml.g4dn.xlarge",
        "initial_instance_count": 2,
        "execution_role_arn": "arn:aws:iam::123456789012:role/berth-sagemaker",
        "s3_prefix": "s3://berth-models/canary/",
        "rollout_traffic": "CANARY",
        "rollout_step_type": "INSTANCE_COUNT",
        "rollout_step_size": 1,
        "rollout_wait_seconds": 300,
        "rollback_alarms": "sm-canary-5xx\n",
    }
    page = client.get("/endpoints/new/").content.decode()
    assert 'name="rollout_traffic"' in page and "Rolling deployments are not offered" in page

    refused = client.post("/endpoints/new/", fields)
    assert refused.status_code == 400
    assert refused.context["form"].errors["rollback_alarms"] == [
        "CloudWatch has no alarm sm-canary-5xx in us-east-1; create it first (SageMaker rolls "
        "an update back when one of these alarms fires)."
    ]
    put_alarm("sm-canary-5xx")
    created = client.post("/endpoints/new/", fields)
    assert created.status_code == 302
    endpoint = Endpoint.objects.get(name="sm-canary")
    assert deployment_config(endpoint)["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "WaitIntervalInSeconds": 300,
        "CanarySize": {"Type": "INSTANCE_COUNT", "Value": 1},
    }
    assert endpoint.rollback_alarms == ["sm-canary-5xx"]
