"""`check` for the event sinks, without publishing a real event anywhere.

- webhook: opens a TCP connection to the URL's host and port (no request is sent: a POST
  would be a real message in a chat channel). A proxy from HTTPS_PROXY/HTTP_PROXY is not
  used here, so behind a proxy a refused connection is only a warning.
- SNS: GetTopicAttributes on the topic (it exists, and these credentials may read it;
  sns:Publish itself cannot be tried without publishing).
- EventBridge: DescribeEventBus on the bus (events:PutEvents cannot be tried either).

Every AWS call here is bounded by the clients' short timeouts (`AwsClients`).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Callable, Iterable, Optional
from urllib.parse import urlsplit

from spotwatch.commands.results import ERROR, OK, WARNING, CheckResult
from spotwatch.config.schema import Config
from spotwatch.parts.awsapi.clients import AwsClients, api_errors, describe_error, region_from_arn
from spotwatch.telemetry.webhook import safe_url

CONNECT_TIMEOUT = 3.0


def _proxy_for(scheme: str) -> Optional[str]:
    names = (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def check_webhook(config: Config) -> Iterable[CheckResult]:
    url = config.webhook.url
    if not url:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    where = safe_url(url)
    fmt = f"format {config.webhook.format}"
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as failure:
        took = time.monotonic() - started
        reason = failure.strerror or type(failure).__name__
        if _proxy_for(parts.scheme):
            detail = f"{where}: no direct connection ({reason}); a proxy is set, not checked"
            yield CheckResult("webhook", WARNING, detail, took)
        else:
            yield CheckResult("webhook", ERROR, f"{where}: cannot connect: {reason}", took)
        return
    took = time.monotonic() - started
    detail = f"{where} accepts connections ({fmt}; connection only, nothing posted)"
    yield CheckResult("webhook", OK, detail, took)


def _clients(config: Config, arn: str) -> AwsClients:
    return AwsClients(
        region=region_from_arn(arn) if arn.startswith("arn:") else None,
        imds_endpoint=config.imds.endpoint,
        imds_timeout=config.imds.timeout,
        allow_imdsv1=config.imds.allow_imdsv1,
    )


def _aws_check(
    config: Config, name: str, target: str, call: Callable[[AwsClients], Any], done: str
) -> Iterable[CheckResult]:
    started = time.monotonic()
    try:
        call(_clients(config, target))
    except api_errors() as failure:
        took = time.monotonic() - started
        yield CheckResult(name, ERROR, f"{target}: {describe_error(failure)}", took)
        return
    yield CheckResult(name, OK, f"{target} {done}", time.monotonic() - started)


def check_sns(config: Config) -> Iterable[CheckResult]:
    topic = config.events.sns_topic_arn
    if topic:
        yield from _aws_check(
            config,
            "events:sns",
            topic,
            lambda aws: aws.client("sns").get_topic_attributes(TopicArn=topic),
            "readable (GetTopicAttributes; sns:Publish is not tried)",
        )


def check_eventbridge(config: Config) -> Iterable[CheckResult]:
    bus = config.events.eventbridge_bus
    if bus:
        yield from _aws_check(
            config,
            "events:eventbridge",
            bus,
            lambda aws: aws.client("events").describe_event_bus(Name=bus),
            "found (DescribeEventBus; events:PutEvents is not tried)",
        )


def check_events(config: Config) -> Iterable[CheckResult]:
    """Event sinks: webhook connection, SNS topic, EventBridge bus."""
    yield from check_webhook(config)
    yield from check_sns(config)
    yield from check_eventbridge(config)
