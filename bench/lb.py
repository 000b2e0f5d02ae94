"""Benchmark: the load balancer deregistration step for 1, 10 and 50 target groups against
an Elastic Load Balancing endpoint with a 30 ms round trip: its wall time and how many API
calls it makes. Part of `python -m bench`; alone:

    python -m bench.lb [--groups 1,10,50] [--rtt-ms 30]

The endpoint is a local stand-in (moto has no draining state and one port per instance):
each group has this instance on one port, DeregisterTargets makes it draining, and the next
DescribeTargetHealth reports it `unused` (a deregistration delay of ~0). So the figure is
the step's own cost: the calls, their concurrency and the first backoff pause.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Dict, List, Tuple
from urllib.parse import parse_qsl

from bench.loopback import QuietHandler, serve

INSTANCE = "i-0123456789abcdef0"
ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/tg{n}/0123456789abcdef"
NS = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"


class FakeElb:
    """DescribeTargetHealth and DeregisterTargets, each answered after `rtt` seconds."""

    def __init__(self, rtt: float) -> None:
        self.rtt = rtt
        self.calls: Dict[str, int] = {}
        self.deregistered: set = set()
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                params = dict(parse_qsl(self.rfile.read(size).decode()))
                body = fake.answer(params).encode()
                time.sleep(fake.rtt)
                self.reply(200, body, "text/xml")

        self.server, self.url = serve(Handler)

    def answer(self, params: Dict[str, str]) -> str:
        action, group = params.get("Action", ""), params.get("TargetGroupArn", "")
        self.calls[action] = self.calls.get(action, 0) + 1
        result = ""
        if action == "DeregisterTargets":
            self.deregistered.add(group)
        elif action == "DescribeTargetHealth":
            state = "unused" if group in self.deregistered else "healthy"
            result = (
                f"<TargetHealthDescriptions><member><Target><Id>{INSTANCE}</Id><Port>80</Port>"
                f"</Target><TargetHealth><State>{state}</State></TargetHealth></member>"
                "</TargetHealthDescriptions>"
            )
        return (
            f'<{action}Response xmlns="{NS}"><{action}Result>{result}</{action}Result>'
            f"<ResponseMetadata><RequestId>b</RequestId></ResponseMetadata></{action}Response>"
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run(groups: int, rtt: float, state_dir: str) -> Tuple[float, int, str]:
    """(seconds, API calls, the step's detail) for one deregistration of `groups` groups."""
    from spotwatch.config.schema import Config, LoadBalancerSettings
    from spotwatch.detection.notices import Notice, parse_utc_time
    from spotwatch.parts.awsapi.clients import AwsClients
    from spotwatch.parts.lb.discovery import LoadBalancerDiscovery, LoadBalancers
    from spotwatch.parts.lb.steps import DeregisterStep
    from spotwatch.response.deadline import NoticeClock
    from spotwatch.response.plan import StepContext

    fake = FakeElb(rtt)
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
    }
    os.environ.update(
        AWS_ENDPOINT_URL=fake.url,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    try:
        arns = tuple(ARN.format(n=n) for n in range(groups))
        settings = LoadBalancerSettings(target_groups=arns, wait=30.0)
        config = Config(state_dir=state_dir, load_balancer=settings)
        clients = AwsClients(region="us-east-1")
        clients.client("elbv2")  # the client's cost is not the step's (bench/aws_client_cost)
        found = LoadBalancers(INSTANCE, arns, (), None, "configured")
        step = DeregisterStep(
            LoadBalancerDiscovery.known(config, clients, found), clients, settings, state_dir
        )
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
        when = parse_utc_time(moment)
        assert when is not None
        notice = Notice("terminate", when, moment, "rehearsal")
        ctx = StepContext(clock=NoticeClock(notice, 10.0), instance_id=INSTANCE, dry_run=False)
        began = time.monotonic()
        outcome = step.run(ctx)
        took = time.monotonic() - began
        return took, sum(fake.calls.values()), outcome.detail
    finally:
        fake.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def measure(sizes: List[int], rtt: float, reps: int) -> Dict[int, Tuple[List[float], int]]:
    import tempfile

    found: Dict[int, Tuple[List[float], int]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lb-") as folder:
        for size in sizes:
            runs = [run(size, rtt, folder) for _ in range(reps)]
            found[size] = ([r[0] for r in runs], runs[0][1])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", default="1,10,50")
    parser.add_argument("--rtt-ms", type=float, default=30.0)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.groups.split(",")]
    for size, (times, calls) in measure(sizes, args.rtt_ms / 1000, args.reps).items():
        print(f"{size:>3} groups: {min(times):.2f}-{max(times):.2f} s, {calls} API calls")


if __name__ == "__main__":
    main()
