"""`events.sns_topic_arn` and `events.eventbridge_bus`: the fleet hears of each event.

- SNS: Publish of the JSON event, with MessageAttributes `event` and `action` (String) so a
  subscription's filter policy can pick, say, only notices. A FIFO topic (`.fifo`) gets the
  instance ID as MessageGroupId (one instance's events stay in order) and a deduplication
  ID from the event's content.
- EventBridge: PutEvents with Source `spotwatch`, DetailType the event name, Detail the
  JSON event and, when known, Resources [the instance's ARN]. An entry EventBridge refused
  (`FailedEntryCount`) is a failure like any other, and retried.

Clients are botocore's, made like every other AWS client of spotwatch (`AwsClients`:
default credential chain, standard retries, short timeouts, `AWS_ENDPOINT_URL_SNS` /
`AWS_ENDPOINT_URL_EVENTBRIDGE`). The region is the topic's or the bus's when an ARN names
it (the call must go there), else the SDK's/IMDS's region as for ECS.

The instance ARN is built from IMDS's instance identity document (region and account of
the instance itself; a bus or topic may live in another account, so their ARNs are not
used for it). When IMDS cannot say, the event goes out without Resources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from spotwatch.clouds.aws.imds import ImdsClient, ImdsError
from spotwatch.config.schema import Config
from spotwatch.parts.awsapi.clients import (
    AwsClients,
    api_errors,
    describe_error,
    error_code,
    region_from_arn,
)
from spotwatch.telemetry.delivery import Attempt, Sink

log = logging.getLogger("spotwatch.events")

IDENTITY_PATH = "dynamic/instance-identity/document"
SOURCE = "spotwatch"

# Answers no retry will change.
FINAL_ERRORS = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthorizationError",
        "AuthorizationErrorException",
        "InvalidParameter",
        "InvalidParameterException",
        "InvalidParameterValue",
        "NotFound",
        "NotFoundException",
        "ResourceNotFoundException",
        "ValidationException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
    }
)


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    if region.startswith("us-iso-"):
        return "aws-iso"
    if region.startswith("us-isob-"):
        return "aws-iso-b"
    return "aws"


class _AwsSink(Sink):
    """A sink whose attempt is one AWS call; `arn()` is the configured topic or bus."""

    service = ""

    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        self._clients: Optional[AwsClients] = None
        self._clients_key: Tuple[Any, ...] = ()

    def arn(self) -> Optional[str]:
        raise NotImplementedError

    def configured(self) -> bool:
        return bool(self.arn())

    def where(self) -> str:
        return str(self.arn())

    def retries(self) -> int:
        return self._config().webhook.retries

    def client(self) -> Any:
        config = self._config()
        target = self.arn() or ""
        region = region_from_arn(target) if target.startswith("arn:") else None
        key = (region, config.imds.endpoint, config.imds.timeout, config.imds.allow_imdsv1)
        if self._clients is None or key != self._clients_key:
            self._clients = AwsClients(
                region=region,
                imds_endpoint=config.imds.endpoint,
                imds_timeout=config.imds.timeout,
                allow_imdsv1=config.imds.allow_imdsv1,
            )
            self._clients_key = key
        return self._clients.client(self.service)

    def attempt(self, event: Dict[str, Any]) -> Attempt:
        try:
            return self.call(self.client(), event)
        except api_errors() as failure:
            return describe_error(failure), error_code(failure) not in FINAL_ERRORS

    def call(self, client: Any, event: Dict[str, Any]) -> Attempt:
        raise NotImplementedError


def event_json(event: Dict[str, Any]) -> str:
    return json.dumps(event, default=str, sort_keys=True)


class SnsSink(_AwsSink):
    name = "sns"
    service = "sns"

    def arn(self) -> Optional[str]:
        return self._config().events.sns_topic_arn

    def call(self, client: Any, event: Dict[str, Any]) -> Attempt:
        message = event_json(event)
        attributes = {
            key: {"DataType": "String", "StringValue": str(event[key])}
            for key in ("event", "action")
            if event.get(key)  # SNS refuses an empty attribute value
        }
        request: Dict[str, Any] = {
            "TopicArn": self.arn(),
            "Message": message,
            "MessageAttributes": attributes,
        }
        if str(self.arn()).endswith(".fifo"):
            request["MessageGroupId"] = str(event.get("instance_id") or SOURCE)
            request["MessageDeduplicationId"] = hashlib.sha256(message.encode()).hexdigest()
        client.publish(**request)
        return None


class EventBridgeSink(_AwsSink):
    name = "eventbridge"
    service = "events"

    def __init__(self, config: Callable[[], Config]) -> None:
        super().__init__(config)
        self._instance_arn: Optional[str] = None
        self._looked_up = False
        self._lock = threading.Lock()

    def arn(self) -> Optional[str]:
        return self._config().events.eventbridge_bus

    def call(self, client: Any, event: Dict[str, Any]) -> Attempt:
        entry: Dict[str, Any] = {
            "Source": SOURCE,
            "DetailType": str(event.get("event") or "event"),
            "Detail": event_json(event),
            "EventBusName": self.arn(),
        }
        resources = self.resources(event)
        if resources:
            entry["Resources"] = resources
        answer = client.put_events(Entries=[entry])
        if not answer.get("FailedEntryCount"):
            return None
        failed = (answer.get("Entries") or [{}])[0]
        code = failed.get("ErrorCode") or "FailedEntry"
        return f"{code}: {failed.get('ErrorMessage') or 'entry not accepted'}", True

    def resources(self, event: Dict[str, Any]) -> List[str]:
        instance_id = event.get("instance_id")
        if not instance_id:
            return []
        with self._lock:
            if not self._looked_up:
                self._instance_arn = self._lookup_instance_arn()
                self._looked_up = True
            arn = self._instance_arn
        if arn is None or not arn.endswith("/" + str(instance_id)):
            return []
        return [arn]

    def _lookup_instance_arn(self) -> Optional[str]:
        client = ImdsClient.for_a_few_reads(self._config().imds)
        try:
            reply = client.get(IDENTITY_PATH)
            document = json.loads(reply.body) if reply.status == 200 else {}
        except (ImdsError, ValueError) as failure:
            log.debug("no instance identity document for EventBridge Resources: %s", failure)
            return None
        finally:
            client.close()
        if not isinstance(document, dict):
            return None
        region, account = document.get("region"), document.get("accountId")
        instance_id = document.get("instanceId")
        if not (region and account and instance_id):
            return None
        return f"arn:{partition_of(region)}:ec2:{region}:{account}:instance/{instance_id}"
