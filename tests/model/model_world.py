"""The world the real daemon meets in a played sequence: IMDS, AWS and the ECS agent.

- `RecordingImds`: the IMDS simulator, which also notes every answer it gives to the
  signals the daemon polls (time, path, status, body, token), so the model knows exactly
  what each poll could see.
- `AwsEndpoint`: one recording endpoint in front of moto's server for ECS, EC2, Auto
  Scaling and Elastic Load Balancing. It answers what moto lacks (the lifecycle heartbeat
  and completion), throttles an operation when told to, and makes a stopped task take
  `task_stop_delay` seconds to reach `lastStatus` STOPPED, as ECS does (moto stops it at
  once, so "no task left" could not be told from "no task wanted").
- `build_fleet`: in moto, an Auto Scaling group of one instance with a terminating
  lifecycle hook, a target group and a Classic Load Balancer the instance is registered in,
  and an ECS cluster where that instance runs two standalone tasks and one service task.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl

import boto3
import requests
from awshelpers import REGION, QuietHandler, serve_in_thread
from model_trace import AwsCall

from spotwatch.simulator.imds import ImdsSimulator
from spotwatch.simulator.tree import format_time

WATCHED_PATHS = {
    "/latest/meta-data/spot/instance-action": "spot",
    "/latest/meta-data/spot/termination-time": "spot",  # the fallback (§3)
    "/latest/meta-data/events/recommendations/rebalance": "rebalance",
    "/latest/meta-data/autoscaling/target-lifecycle-state": "autoscaling",
    "/latest/meta-data/events/maintenance/scheduled": "scheduled",
    "/latest/meta-data/instance-id": "instance-id",
}
ANSWERED_HERE = ("RecordLifecycleActionHeartbeat", "CompleteLifecycleAction")
# Ending the instance is answered here and goes no further: in this world the instance stays
# as IMDS says it is (a new boot is the driver's event), so moto's copy of it keeps running.
ENDED_HERE = {"StopInstances": (64, "stopping"), "TerminateInstances": (32, "shutting-down")}
HEARTBEAT_TIMEOUT = 6  # the lifecycle hook's, in seconds
QUERY_THROTTLED = (
    b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
    b"<Message>Rate exceeded</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
)
EC2_THROTTLED = (
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit "
    b"exceeded.</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
)
ECS_THROTTLED = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
_SCOPE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request")

Raw = Tuple[float, str, int, bytes, Optional[str]]  # (wall, path, status, body, token)


class RecordingImds(ImdsSimulator):
    """The IMDS simulator, noting each answer to the paths the daemon watches."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: List[Raw] = []
        self._notes = threading.Lock()

    def _answer_get(self, path: str, token: Optional[str]) -> Any:
        answer = super()._answer_get(path, token)
        if path in WATCHED_PATHS:
            with self._notes:
                self.answers.append((time.time(), path, answer[0], answer[1], token))
        return answer

    def raise_spot(self, action: str, lead: float) -> str:
        when = format_time(datetime.fromtimestamp(time.time() + lead, timezone.utc))
        self.set_instance_action(action, when)
        return when


@dataclass
class Fleet:
    instance_id: str
    target_group: str
    classic: str
    group: str
    cluster: str
    container_instance: str
    tasks: List[str]
    moto_url: str

    def ecs_status(self) -> str:
        ecs = _client("ecs", self.moto_url)
        found = ecs.describe_container_instances(
            cluster=self.cluster, containerInstances=[self.container_instance]
        )["containerInstances"]
        return str(found[0]["status"]) if found else "?"

    def registered(self) -> bool:
        elbv2 = _client("elbv2", self.moto_url)
        health = elbv2.describe_target_health(TargetGroupArn=self.target_group)
        return any(
            d["Target"]["Id"] == self.instance_id for d in health["TargetHealthDescriptions"]
        )


def _client(service: str, url: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def stop_in_moto(fleet: Fleet, task: str) -> None:
    """What the ECS agent reports once a task's containers exited: the task is STOPPED."""
    ecs = _client("ecs", fleet.moto_url)
    ecs.stop_task(cluster=fleet.cluster, task=task, reason="its containers exited")


def build_fleet(moto_url: str) -> Fleet:
    """A fresh world in moto (reset first)."""
    requests.post(moto_url + "/moto-api/reset", timeout=10).raise_for_status()
    ec2, asg = _client("ec2", moto_url), _client("autoscaling", moto_url)
    elbv2, elb, ecs = (_client(s, moto_url) for s in ("elbv2", "elb", "ecs"))
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    target_group = elbv2.create_target_group(
        Name="web", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.create_load_balancer(
        LoadBalancerName="legacy",
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}],
        AvailabilityZones=[REGION + "a"],
    )
    ec2.create_launch_template(
        LaunchTemplateName="fleet-template",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName="fleet",
        LaunchTemplate={"LaunchTemplateName": "fleet-template"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        TargetGroupARNs=[target_group],
        LoadBalancerNames=["legacy"],
        VPCZoneIdentifier=subnet,
    )
    asg.put_lifecycle_hook(
        LifecycleHookName="drain",
        AutoScalingGroupName="fleet",
        LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
        HeartbeatTimeout=HEARTBEAT_TIMEOUT,
        DefaultResult="CONTINUE",
    )
    found = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["fleet"])
    instance_id = found["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
    ecs.create_cluster(clusterName="spot")
    document = json.dumps({"instanceId": instance_id, "region": REGION})
    container = ecs.register_container_instance(cluster="spot", instanceIdentityDocument=document)[
        "containerInstance"
    ]["containerInstanceArn"]
    ecs.register_task_definition(
        family="app", containerDefinitions=[{"name": "app", "image": "busybox", "memory": 8}]
    )
    tasks = [
        t["taskArn"] for t in ecs.run_task(cluster="spot", taskDefinition="app", count=2)["tasks"]
    ]
    tasks += [
        t["taskArn"]
        for t in ecs.run_task(cluster="spot", taskDefinition="app", count=1, group="service:web")[
            "tasks"
        ]
    ]
    return Fleet(instance_id, target_group, "legacy", "fleet", "spot", container, tasks, moto_url)


class AwsEndpoint:
    """Every AWS call the daemon makes goes through here (AWS_ENDPOINT_URL)."""

    def __init__(self, moto_url: str, task_stop_delay: float = 1.5) -> None:
        self.moto_url = moto_url
        self.task_stop_delay = task_stop_delay
        self.calls: List[AwsCall] = []
        self.throttle: Dict[str, int] = {}  # operation -> throttled answers still to give
        self.hang: Dict[str, float] = {}  # operation -> until when its calls wait unanswered
        self.stopped_at: Dict[str, float] = {}  # task ARN -> when StopTask came
        self._lock = threading.Lock()
        endpoint = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, data, kind = endpoint.handle(dict(self.headers.items()), self.path, body)
                self.reply(status, data, kind)

        self._server, self.url = serve_in_thread(Handler)

    def reset(self) -> None:
        with self._lock:
            self.calls, self.throttle, self.stopped_at, self.hang = [], {}, {}, {}

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, headers: Dict[str, str], path: str, body: bytes) -> Tuple[int, bytes, str]:
        came = time.time()  # calls are ordered by when they came, not when they were answered
        lowered = {k.lower(): v for k, v in headers.items()}
        scope = _SCOPE.search(lowered.get("authorization", ""))
        service = scope.group(1) if scope else "?"
        target = lowered.get("x-amz-target", "")
        params: Dict[str, Any]
        if target:
            operation = target.rsplit(".", 1)[-1]
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                params = {}
        else:
            params = dict(parse_qsl(body.decode("utf-8", "replace")))
            operation = str(params.get("Action", "?"))
        with self._lock:
            throttled = self.throttle.get(operation, 0) > 0
            if throttled:
                self.throttle[operation] -= 1
            hang = self.hang.get(operation, 0.0) - came
        if hang > 0:
            time.sleep(hang)  # a slow AWS API (the caller's bound may give up first)
        if throttled:
            status, data, kind = _throttled(service, bool(target))
        elif operation in ANSWERED_HERE:
            status, data, kind = 200, _empty_answer(operation), "text/xml"
        elif operation in ENDED_HERE and params.get("DryRun") != "true":
            status, data, kind = 200, _ended(operation, params), "text/xml"
        else:
            status, data, kind = self._forward(lowered, path, body)
            if operation == "StopTask" and status == 200:
                with self._lock:
                    self.stopped_at.setdefault(str(params.get("task")), time.time())
            draining = params.get("status") == "DRAINING" and status == 200
            if operation == "UpdateContainerInstancesState" and draining:
                self._drain_services(params)
            if operation == "DescribeTasks" and status == 200:
                data = self._still_stopping(data)
        with self._lock:
            self.calls.append(AwsCall(came, service, operation, params, throttled, status))
        return status, data, kind

    def _forward(self, headers: Dict[str, str], path: str, body: bytes) -> Tuple[int, bytes, str]:
        sent = {k: v for k, v in headers.items() if k != "host"}
        answer = requests.post(self.moto_url + path, data=body, headers=sent, timeout=30)
        return answer.status_code, answer.content, answer.headers.get("Content-Type", "text/xml")

    def _drain_services(self, params: Dict[str, Any]) -> None:
        """DRAINING: ECS's service scheduler stops the instance's service tasks (they then
        run out their stop timeout, as every stopped task here does)."""
        ecs = _client("ecs", self.moto_url)
        cluster = params.get("cluster")
        for instance in params.get("containerInstances") or []:
            arns = ecs.list_tasks(cluster=cluster, containerInstance=instance)["taskArns"]
            tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"] if arns else []
            for task in tasks:
                if str(task.get("group", "")).startswith("service:"):
                    ecs.stop_task(cluster=cluster, task=task["taskArn"], reason="draining")
                    with self._lock:
                        self.stopped_at.setdefault(task["taskArn"], time.time())

    def _still_stopping(self, data: bytes) -> bytes:
        """A task stopped less than `task_stop_delay` ago still runs (lastStatus RUNNING)."""
        try:
            answer = json.loads(data)
        except ValueError:
            return data
        now = time.time()
        with self._lock:
            for task in answer.get("tasks", []):
                since = self.stopped_at.get(task.get("taskArn", ""))
                if since is not None and now - since < self.task_stop_delay:
                    task["lastStatus"] = "RUNNING"
        return json.dumps(answer).encode()


def _throttled(service: str, json_api: bool) -> Tuple[int, bytes, str]:
    if json_api:
        return 400, ECS_THROTTLED, "application/x-amz-json-1.1"
    if service == "ec2":
        return 503, EC2_THROTTLED, "text/xml"
    return 400, QUERY_THROTTLED, "text/xml"


def _ended(action: str, params: Dict[str, Any]) -> bytes:
    code, name = ENDED_HERE[action]
    item = (
        f"<item><instanceId>{params.get('InstanceId.1', '')}</instanceId>"
        f"<currentState><code>{code}</code><name>{name}</name></currentState>"
        "<previousState><code>16</code><name>running</name></previousState></item>"
    )
    tag = "instancesSet"
    return (
        f'<{action}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<requestId>r-1</requestId><{tag}>{item}</{tag}></{action}Response>"
    ).encode()


def _empty_answer(action: str) -> bytes:
    space = "http://autoscaling.amazonaws.com/doc/2011-01-01/"
    return (
        f'<{action}Response xmlns="{space}"><{action}Result/>'
        f"<ResponseMetadata><RequestId>recorded</RequestId></ResponseMetadata></{action}Response>"
    ).encode()
