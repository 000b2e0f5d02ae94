"""A recording endpoint in front of moto for Elastic Load Balancing and Auto Scaling, and a
world with target groups, a Classic Load Balancer and an Auto Scaling group.

moto keeps one port per instance in a target group and has no `draining` state, so the
endpoint answers DescribeTargetHealth and DeregisterTargets itself for the target groups
it is given (`own`), with as many ports as the test says and a draining time of its
choosing; every other call goes on to moto. Every call is recorded with its wall time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple
from urllib.parse import parse_qsl

import boto3
import requests
from awshelpers import REGION, QuietHandler, serve_in_thread

from spotwatch.simulator.imds import ImdsSimulator

ELBV2_NS = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"
MUTATING = frozenset(
    {
        "DeregisterTargets",
        "RegisterTargets",
        "DeregisterInstancesFromLoadBalancer",
        "RegisterInstancesWithLoadBalancer",
        "DetachInstances",
    }
)


@dataclass
class Call:
    at: float  # wall time
    action: str
    params: Dict[str, str]


@dataclass
class RecordingProxy:
    moto_url: str
    delay: float = 0.0  # added to every answer (a round trip to a far endpoint)
    drain_seconds: float = 0.2  # how long a deregistered target stays draining
    calls: List[Call] = field(default_factory=list)
    # target group ARN -> (instance, port) -> (state, wall time it went draining)
    owned: Dict[str, Dict[Tuple[str, int], Tuple[str, float]]] = field(default_factory=dict)
    url: str = ""

    def own(self, group: str, instance: str, ports: List[int]) -> None:
        self.owned[group] = {(instance, p): ("healthy", 0.0) for p in ports}

    def actions(self) -> List[str]:
        return [c.action for c in self.calls]

    def of(self, action: str) -> List[Call]:
        return [c for c in self.calls if c.action == action]

    def start(self) -> RecordingProxy:
        proxy = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                params = dict(parse_qsl(body.decode()))
                proxy.calls.append(Call(time.time(), params.get("Action", "?"), params))
                if proxy.delay:
                    time.sleep(proxy.delay)
                answer = proxy.answer(params)
                if answer is None:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    reply = requests.post(proxy.moto_url + self.path, data=body, headers=headers)
                    status, data = reply.status_code, reply.content
                    kind = reply.headers.get("Content-Type", "text/xml")
                else:
                    status, data, kind = 200, answer.encode(), "text/xml"
                self.reply(status, data, kind)

        self._server, self.url = serve_in_thread(Handler)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ----------------------------------------------------------------- owned groups

    def answer(self, params: Dict[str, str]) -> Any:
        group = params.get("TargetGroupArn", "")
        if group not in self.owned:
            return None
        targets = self.owned[group]
        action = params["Action"]
        if action == "DeregisterTargets":
            for n in range(1, 100):
                name = params.get(f"Targets.member.{n}.Id")
                if name is None:
                    break
                key = (name, int(params[f"Targets.member.{n}.Port"]))
                if key in targets:
                    targets[key] = ("draining", time.time())
            return _xml("DeregisterTargets", "")
        if action == "DescribeTargetHealth":
            wanted = params.get("Targets.member.1.Id")
            members = ""
            for (name, port), (state, since) in sorted(targets.items()):
                if wanted and name != wanted:
                    continue
                if state == "draining" and time.time() - since >= self.drain_seconds:
                    state = "unused"
                members += (
                    f"<member><Target><Id>{name}</Id><Port>{port}</Port></Target>"
                    f"<TargetHealth><State>{state}</State></TargetHealth></member>"
                )
            return _xml(
                "DescribeTargetHealth",
                f"<TargetHealthDescriptions>{members}</TargetHealthDescriptions>",
            )
        return None


def _xml(action: str, result: str) -> str:
    return (
        f'<{action}Response xmlns="{ELBV2_NS}"><{action}Result>{result}</{action}Result>'
        f"<ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata></{action}Response>"
    )


@dataclass
class LbWorld:
    instance_id: str
    web: str  # target group ARN (owned by the proxy: two ports)
    api: str  # target group ARN (left to moto: one port)
    classic: str
    group: str
    autoscaling: Any
    elb: Any


def build_lb_world() -> LbWorld:
    """Target groups `web` and `api`, Classic `legacy` and `edge`, group `fleet` (desired 2)
    referencing them; every client points at moto itself, not at the proxy."""
    ec2 = boto3.client("ec2", region_name=REGION)
    elbv2 = boto3.client("elbv2", region_name=REGION)
    elb = boto3.client("elb", region_name=REGION)
    autoscaling = boto3.client("autoscaling", region_name=REGION)
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]

    def group(name: str, port: int) -> str:
        made = elbv2.create_target_group(
            Name=name, Protocol="HTTP", Port=port, VpcId=vpc, TargetType="instance"
        )
        return str(made["TargetGroups"][0]["TargetGroupArn"])

    web, api = group("web", 80), group("api", 8080)
    for name in ("legacy", "edge"):  # legacy is the group's; edge is nobody's
        elb.create_load_balancer(
            LoadBalancerName=name,
            Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}],
            AvailabilityZones=[f"{REGION}a"],
        )
    ec2.create_launch_template(
        LaunchTemplateName="fleet-template",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="fleet",
        LaunchTemplate={"LaunchTemplateName": "fleet-template"},
        MinSize=1,
        MaxSize=4,
        DesiredCapacity=2,
        TargetGroupARNs=[web, api],
        LoadBalancerNames=["legacy"],
        VPCZoneIdentifier=subnet,
    )
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["fleet"])
    instance = found["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
    return LbWorld(instance, web, api, "legacy", "fleet", autoscaling, elb)


LIFECYCLE = "meta-data/autoscaling/target-lifecycle-state"
# The world, the recording endpoint in front of moto, the IMDS simulator (the `lb` fixture).
LbSetup = Tuple[LbWorld, RecordingProxy, ImdsSimulator]
