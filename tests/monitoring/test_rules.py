"""The Prometheus alerting rules (monitoring/prometheus/spotwatch-rules.yml, installed as
/usr/share/spotwatch/prometheus/spotwatch-rules.yml): `promtool check rules` accepts them,
`promtool test rules` runs their unit tests (tests/monitoring/spotwatch-rules.test.yml), the
alerts CONTRACT §6 names are there, and they and their tests read only metric names a real
daemon exports."""

from __future__ import annotations

import re
import subprocess
from typing import Any, Dict, List

import pytest
import yaml
from monitoring_kit import RULE_TESTS, RULES, check_exported, promtool
from promql import metric_names

CONTRACT_ALERTS = {
    "SpotwatchNoSuccessfulPoll": "critical",  # no successful poll for 3 intervals
    "SpotwatchDegradedPolls": "warning",
    "SpotwatchStepFailed": "warning",  # failed or ran out of time
    "SpotwatchNoticeHandled": "info",
    "SpotwatchScheduledEventWithinADay": "warning",
}


@pytest.fixture(scope="module")
def rules() -> List[Dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)


def test_promtool_check_rules_accepts_them() -> None:
    done = _promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(CONTRACT_ALERTS)} rules found" in done.stdout


def test_promtool_test_rules_passes_their_unit_tests() -> None:
    done = _promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_alerts_the_contract_names_with_their_severity(rules: List[Dict[str, Any]]) -> None:
    assert {r["alert"]: r["labels"]["severity"] for r in rules} == CONTRACT_ALERTS
    for rule in rules:
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_every_alert_has_a_unit_test_that_fires_it(rules: List[Dict[str, Any]]) -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
             if case["exp_alerts"]}  # fmt: skip
    assert fired == {rule["alert"] for rule in rules}


def test_every_metric_an_alert_queries_is_exported(
    rules: List[Dict[str, Any]], exported: Dict[str, str]
) -> None:
    queried = {name for rule in rules for name in metric_names(rule["expr"])}
    check_exported(queried, exported, "the alerting rules")


def test_the_unit_tests_feed_only_exported_names(exported: Dict[str, str]) -> None:
    """A unit test of a name the daemon does not export would prove nothing."""
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fed = {re.match(r"\s*([A-Za-z_:][\w:]*)", series["series"]).group(1)  # type: ignore[union-attr]
           for test in tests for series in test["input_series"]}  # fmt: skip
    check_exported(fed, exported, "the rules' unit tests")
