"""An Auto Scaling world for the tests: a group in moto holding one instance, a terminating
lifecycle hook, and a recording endpoint in front of moto.

moto answers RecordLifecycleActionHeartbeat and CompleteLifecycleAction with HTTP 500, so
the endpoint answers those two itself; every call (moto's or its own) is recorded with its
parameters and the wall time it came (hooks write theirs with date), so tests can say what
was called and when.
"""

from __future__ import annotations

import threading
import time
from typing import Dict, List, Tuple
from urllib.parse import parse_qs

import boto3
import requests
from awshelpers import QuietHandler, serve_in_thread

REGION = "us-east-1"
ANSWERED_HERE = ("RecordLifecycleActionHeartbeat", "CompleteLifecycleAction")
MUTATING = (*ANSWERED_HERE, "DetachInstances")
XMLNS = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

Call = Tuple[float, str, Dict[str, str]]


class RecordingAutoscaling:
    """Auto Scaling's query API: recorded, forwarded to moto but for what moto lacks."""

    def __init__(self, moto_url: str) -> None:
        self.moto_url = moto_url
        self.calls: List[Call] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                params = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                action = params.get("Action", "")
                with endpoint._lock:
                    endpoint.calls.append((time.time(), action, params))
                if action in ANSWERED_HERE:
                    status, data = 200, _empty_answer(action)
                else:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() in ("content-type", "authorization")
                        or k.lower().startswith("x-amz")
                    }
                    answer = requests.post(
                        moto_url + self.path, data=body, headers=headers, timeout=10
                    )
                    status, data = answer.status_code, answer.content
                self.reply(status, data, "text/xml")

        self._server, self.url = serve_in_thread(Handler)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def of(self, action: str) -> List[Call]:
        with self._lock:
            return [c for c in self.calls if c[1] == action]

    def actions(self) -> List[str]:
        with self._lock:
            return [c[1] for c in self.calls]


def _empty_answer(action: str) -> bytes:
    return (
        f'<{action}Response xmlns="{XMLNS}"><{action}Result/>'
        f"<ResponseMetadata><RequestId>recorded</RequestId></ResponseMetadata></{action}Response>"
    ).encode()


def build_group(*, heartbeat_timeout: int = 3, hook: bool = True) -> str:
    """A group `web` of one instance (its id returned), with a terminating hook `drain`."""
    ec2 = boto3.client("ec2", region_name=REGION)
    asg = boto3.client("autoscaling", region_name=REGION)
    ec2.create_launch_template(
        LaunchTemplateName="web",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "t3.micro"},
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web",
        LaunchTemplate={"LaunchTemplateName": "web"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        AvailabilityZones=[REGION + "a"],
    )
    if hook:
        asg.put_lifecycle_hook(
            LifecycleHookName="drain",
            AutoScalingGroupName="web",
            LifecycleTransition="autoscaling:EC2_INSTANCE_TERMINATING",
            HeartbeatTimeout=heartbeat_timeout,
            DefaultResult="CONTINUE",
        )
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]
    return str(group["Instances"][0]["InstanceId"])
