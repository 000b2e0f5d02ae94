"""Ending the instance: StopInstances / Hibernate / TerminateInstances against moto's EC2
over real HTTP, exact parameters and errors through botocore's Stubber."""

from __future__ import annotations

import logging
from typing import Any, Tuple

import boto3
import pytest
from awshelpers import REGION, context, notice_in
from botocore.stub import Stubber

from spotwatch.config.schema import Config, InstanceSettings
from spotwatch.detection.notices import REBALANCE
from spotwatch.parts.awsapi.bounded import within
from spotwatch.parts.awsapi.clients import AwsClients
from spotwatch.parts.instance import (
    ALLOWED,
    DENIED,
    UNKNOWN,
    InstanceActionStep,
    InstanceResponse,
    check_permission,
    state_name,
    transition,
)
from spotwatch.state.schema import FAILED, OK

IID = "i-0123456789abcdef0"


def launch() -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    instance_id: str = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    return instance_id


def state_of(instance_id: str) -> str:
    ec2 = boto3.client("ec2", region_name=REGION)
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(found["State"]["Name"])


def stubbed(action: str) -> Tuple[InstanceActionStep, Stubber]:
    step = InstanceActionStep(action, AwsClients(region=REGION))
    stubber = Stubber(step.clients.ec2())
    stubber.activate()
    return step, stubber


def change(previous: int, current: int) -> dict[str, Any]:
    return {
        "InstanceId": IID,
        "PreviousState": {"Code": previous, "Name": "?"},
        "CurrentState": {"Code": current, "Name": "?"},
    }


# --------------------------------------------------------------------- state codes


def test_state_codes_are_read_from_their_low_byte() -> None:
    assert state_name({"Code": 16, "Name": "running"}) == "running"
    assert state_name({"Code": 0x100 | 64, "Name": "whatever"}) == "stopping"
    assert state_name({"Code": 0x7F00 | 80}) == "stopped"
    assert state_name({"Name": "pending"}) == "pending"
    assert state_name(None) == "?"
    assert transition(change(16 | 0x200, 32)) == "running → shutting-down"


# --------------------------------------------------------------------- moto over HTTP


@pytest.mark.parametrize(
    ("action", "api", "moved", "final"),
    [
        ("stop", "StopInstances", "running → stopping", ("stopping", "stopped")),
        (
            "terminate",
            "TerminateInstances",
            "running → shutting-down",
            ("shutting-down", "terminated"),
        ),
    ],
)
def test_instance_action_on_moto_logs_the_transition(
    moto: str,
    caplog: pytest.LogCaptureFixture,
    action: str,
    api: str,
    moved: str,
    final: Tuple[str, str],
) -> None:
    instance_id = launch()
    caplog.set_level(logging.INFO, logger="spotwatch")
    step = InstanceActionStep(action, AwsClients(region=REGION))
    outcome = step.run(context(notice_in(120), instance_id=instance_id))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail == f"{api}: {moved}"
    assert f"{api} {instance_id}: {moved}" in caplog.messages
    assert state_of(instance_id) in final


def test_hibernate_on_moto_stops_the_instance(moto: str) -> None:
    instance_id = launch()
    step = InstanceActionStep("hibernate", AwsClients(region=REGION))
    outcome = step.run(context(notice_in(120), instance_id=instance_id))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail == "StopInstances(Hibernate=True): running → stopping"


def test_permission_check_on_moto_is_allowed(moto: str) -> None:
    instance_id = launch()
    ec2 = AwsClients(region=REGION).bounded(within(10))
    for action in ("stop", "hibernate", "terminate"):
        status, detail = check_permission(ec2, action, instance_id)
        assert status == ALLOWED, detail
        assert "DryRunOperation" in detail
    assert state_of(instance_id) == "running"


# --------------------------------------------------------------------- Stubber: exact calls


@pytest.mark.parametrize(
    ("action", "operation", "params", "answer_key"),
    [
        ("stop", "stop_instances", {"InstanceIds": [IID]}, "StoppingInstances"),
        (
            "hibernate",
            "stop_instances",
            {"InstanceIds": [IID], "Hibernate": True},
            "StoppingInstances",
        ),
        ("terminate", "terminate_instances", {"InstanceIds": [IID]}, "TerminatingInstances"),
    ],
)
def test_the_call_is_graceful_never_force_nor_skip_os_shutdown(
    aws_env: Any, action: str, operation: str, params: dict[str, Any], answer_key: str
) -> None:
    step, stubber = stubbed(action)
    # Stubber checks the parameters exactly: any Force or SkipOsShutdown would fail this.
    stubber.add_response(operation, {answer_key: [change(0x100 | 16, 0x100 | 64)]}, params)
    outcome = step.run(context(notice_in(120), instance_id=IID))
    assert outcome.status == OK, outcome.detail
    assert outcome.detail.endswith(": running → stopping")
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("action", "code", "message"),
    [
        (
            "terminate",
            "OperationNotPermitted",
            f"The instance '{IID}' may not be terminated. Modify its 'disableApiTermination' "
            "instance attribute and try again.",
        ),
        (
            "stop",
            "UnsupportedOperation",
            "You can't stop the Spot Instance 'i-0123' because it is associated with a one-time "
            "Spot Instance request. You can only stop Spot Instances associated with a persistent "
            "request.",
        ),
        ("hibernate", "UnsupportedHibernationConfiguration", "Hibernation is not configured."),
    ],
)
def test_errors_are_reported_in_the_api_words(
    aws_env: Any, caplog: pytest.LogCaptureFixture, action: str, code: str, message: str
) -> None:
    step, stubber = stubbed(action)
    operation = "terminate_instances" if action == "terminate" else "stop_instances"
    stubber.add_client_error(operation, code, message, 400)
    outcome = step.run(context(notice_in(120), instance_id=IID))
    assert outcome.status == FAILED
    assert outcome.detail.endswith(f": {code}: {message}")
    assert any(code in m for m in caplog.messages)


def test_dry_run_makes_no_call(aws_env: Any, caplog: pytest.LogCaptureFixture) -> None:
    step, _ = stubbed("terminate")  # nothing queued: any call would raise
    caplog.set_level(logging.INFO, logger="spotwatch")
    outcome = step.run(context(notice_in(120), dry_run=True, instance_id=IID))
    assert (outcome.status, outcome.detail) == (OK, "dry run")
    assert f"would call TerminateInstances on {IID} (graceful OS shutdown)" in caplog.messages


def test_unknown_instance_id_fails_without_calling(aws_env: Any) -> None:
    step, _ = stubbed("stop")
    outcome = step.run(context(notice_in(120), instance_id="unknown"))
    assert outcome.status == FAILED
    assert "id is unknown" in outcome.detail


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("DryRunOperation", ALLOWED),
        ("UnauthorizedOperation", DENIED),
        ("InvalidInstanceID.NotFound", UNKNOWN),
    ],
)
def test_permission_check_by_dry_run(aws_env: Any, code: str, expected: str) -> None:
    step, stubber = stubbed("hibernate")
    stubber.add_client_error(
        "stop_instances",
        code,
        "Request would have succeeded, but DryRun flag is set."
        if code == "DryRunOperation"
        else "You are not authorized to perform this operation.",
        412 if code == "DryRunOperation" else 403,
        expected_params={"InstanceIds": [IID], "DryRun": True, "Hibernate": True},
    )
    status, detail = check_permission(step.clients.bounded(within(10)), "hibernate", IID)
    assert status == expected
    assert code in detail or status == ALLOWED
    stubber.assert_no_pending_responses()


# --------------------------------------------------------------------- which step a notice gets


def test_which_notice_gets_which_instance_step() -> None:
    response = InstanceResponse(AwsClients(region=REGION))
    config = Config(instance=InstanceSettings(after_response="hibernate", after_rebalance="stop"))
    names = {
        action: [s.name for s in response.steps(notice_in(120, action), config)]
        for action in ("terminate", "stop", "hibernate", REBALANCE)
    }
    assert names == {
        "terminate": ["instance:hibernate"],
        "stop": ["instance:hibernate"],
        "hibernate": [],
        REBALANCE: ["instance:stop"],
    }
    assert response.steps(notice_in(120), Config()) == []
