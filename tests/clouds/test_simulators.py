"""The stand-ins keep the real services' rules, so a client that passes against them speaks
as the real ones want (requests straight over HTTP here, no spotwatch client in between)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Optional

import requests

from spotwatch.clouds.azure.simulator import AzureMetadataSimulator
from spotwatch.clouds.gcp.simulator import PREEMPTED, PREFIX, GcpMetadataSimulator

GOOGLE = {"Metadata-Flavor": "Google"}
AZURE = {"Metadata": "true"}
EVENTS = "/metadata/scheduledevents?api-version=2020-07-01"


def gcp_get(
    sim: GcpMetadataSimulator, path: str, headers: Optional[Dict[str, str]] = None, **query: Any
) -> requests.Response:
    return requests.get(
        sim.endpoint + PREFIX + path,
        headers=GOOGLE if headers is None else headers,
        params=query,
        timeout=10,
    )


def test_google_refuses_requests_without_the_flavor_and_answers_with_it(
    gcp: GcpMetadataSimulator,
) -> None:
    """No `Metadata-Flavor: Google`, or an `X-Forwarded-For`: 403. Answers (refusals too)
    carry `Metadata-Flavor: Google` and values their ETag."""
    refused = gcp_get(gcp, PREEMPTED, headers={})
    assert refused.status_code == 403 and refused.headers["Metadata-Flavor"] == "Google"
    proxied = gcp_get(gcp, PREEMPTED, headers={**GOOGLE, "X-Forwarded-For": "10.0.0.1"})
    assert proxied.status_code == 403
    answer = gcp_get(gcp, PREEMPTED)
    assert answer.status_code == 200 and answer.text == "FALSE"
    assert answer.headers["Metadata-Flavor"] == "Google" and answer.headers["ETag"]
    assert gcp_get(gcp, "instance/").text.splitlines()[:2] == ["hostname", "id"]


def test_google_wait_for_change_follows_the_etag(gcp: GcpMetadataSimulator) -> None:
    """With `last_etag` older than the value's: answered at once. With the current one: held
    until the value changes (then the new value and ETag), or `timeout_sec` (then the same)."""
    first = gcp_get(gcp, PREEMPTED)
    etag = first.headers["ETag"]
    began = time.monotonic()
    same = gcp_get(gcp, PREEMPTED, wait_for_change="true", last_etag=etag, timeout_sec="1")
    assert 0.9 <= time.monotonic() - began < 3 and same.headers["ETag"] == etag
    stale = gcp_get(gcp, PREEMPTED, wait_for_change="true", last_etag="0" * 16, timeout_sec="5")
    assert stale.text == "FALSE"
    threading.Timer(0.3, gcp.preempt).start()
    began = time.monotonic()
    changed = gcp_get(gcp, PREEMPTED, wait_for_change="true", last_etag=etag, timeout_sec="5")
    assert changed.text == "TRUE" and changed.headers["ETag"] != etag
    assert time.monotonic() - began < 2


def test_google_wait_without_an_etag_misses_a_change_already_made(
    gcp: GcpMetadataSimulator,
) -> None:
    """Without `last_etag` the wait is for the next change: one made just before the request
    is not answered (why spotwatch always sends the ETag it has)."""
    gcp.preempt()
    began = time.monotonic()
    answer = gcp_get(gcp, PREEMPTED, wait_for_change="true", timeout_sec="1")
    assert answer.text == "TRUE" and time.monotonic() - began >= 0.9


def azure_get(
    sim: AzureMetadataSimulator, path: str, headers: Optional[Dict[str, str]] = None
) -> requests.Response:
    return requests.get(
        sim.endpoint + path, headers=AZURE if headers is None else headers, timeout=10
    )


def test_azure_refuses_requests_without_metadata_true_or_an_api_version(
    azure: AzureMetadataSimulator,
) -> None:
    """No `Metadata: true`, no or an unknown api-version, an `X-Forwarded-For`: 400 with
    Azure's JSON error."""
    for path, headers in (
        (EVENTS, {}),
        ("/metadata/scheduledevents", AZURE),
        ("/metadata/scheduledevents?api-version=1999-01-01", AZURE),
        (EVENTS, {**AZURE, "X-Forwarded-For": "10.0.0.1"}),
    ):
        answer = azure_get(azure, path, headers)
        assert answer.status_code == 400 and "error" in answer.json(), path
    name = azure_get(azure, "/metadata/instance/compute/name?api-version=2021-02-01&format=text")
    assert name.text == azure.vm_name


def test_azure_documents_count_their_incarnations_and_start_requests_start_events(
    azure: AzureMetadataSimulator,
) -> None:
    """The document is {DocumentIncarnation, Events}; each change raises the incarnation.
    A POST of StartRequests starts the event (EventStatus Started, NotBefore blank); an event
    whose NotBefore passes starts by itself."""
    empty = azure_get(azure, EVENTS).json()
    assert empty["Events"] == []
    not_before = datetime.now(timezone.utc) + timedelta(minutes=15)
    event_id = azure.add_event("Freeze", not_before)
    listed = azure_get(azure, EVENTS).json()
    assert listed["DocumentIncarnation"] == empty["DocumentIncarnation"] + 1
    (event,) = listed["Events"]
    assert event["EventStatus"] == "Scheduled" and event["EventType"] == "Freeze"
    assert event["Resources"] == [azure.vm_name] and event["NotBefore"].endswith(" GMT")
    body = json.dumps({"StartRequests": [{"EventId": event_id}]})
    posted = requests.post(azure.endpoint + EVENTS, data=body, headers=AZURE, timeout=10)
    assert posted.status_code == 200
    (started,) = azure_get(azure, EVENTS).json()["Events"]
    assert started["EventStatus"] == "Started" and started["NotBefore"] == ""
    due = azure.add_event("Reboot", datetime.now(timezone.utc) - timedelta(seconds=1))
    assert {e["EventId"]: e["EventStatus"] for e in azure.events()}[due] == "Started"


def test_azure_first_answer_may_be_slow() -> None:
    """The first scheduledevents request takes `first_answer_delay`; later ones do not."""
    with AzureMetadataSimulator(first_answer_delay=1.0) as azure:
        began = time.monotonic()
        azure_get(azure, EVENTS)
        assert time.monotonic() - began >= 1.0
        began = time.monotonic()
        azure_get(azure, EVENTS)
        assert time.monotonic() - began < 0.5
