"""The keys for the other ways an instance is taken away, and for fleet-wide events:
rebalance.poll_interval, ecs.reactivate, autoscaling.*, scheduled_events.*, load_balancer.*,
webhook.format/template, events.* and the new hook actions — typed, defaulted, layered
like every other key, and each mistake named by its key path (exit 78 from the CLI)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from spotwatch.config.errors import ConfigError
from spotwatch.config.load import config_to_dict, load_config
from spotwatch.config.schema import (
    AutoscalingSettings,
    Config,
    EcsSettings,
    EventsSettings,
    LoadBalancerSettings,
    RebalanceSettings,
    ScheduledEventsSettings,
    WebhookSettings,
)
from spotwatch.exits import EX_CONFIG

TG_A = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef"
TG_B = (
    "arn:aws-us-gov:elasticloadbalancing:us-gov-west-1:123456789012"
    ":targetgroup/api-2/73e2d6bc24d8a067"
)
TOPIC = "arn:aws:sns:eu-west-1:123456789012:spot-fleet"
BUS = "arn:aws:events:eu-west-1:123456789012:event-bus/fleet"

FLEET_CONFIG = f"""
rebalance:
  poll_interval: 500ms
ecs:
  reactivate: false
autoscaling:
  enabled: true
  lifecycle_hook: drain-on-terminate
  budget: 15m
  complete: false
  detach: true
scheduled_events:
  enabled: false
  poll_interval: 30s
  lead: 1h
load_balancer:
  enabled: true
  target_groups: ["{TG_A}", "{TG_B}"]
  classic: [legacy-web]
  wait: 45s
webhook:
  url: https://hooks.slack.com/services/T/B/X
  format: slack
  template: ":warning: ${{instance_id}} ${{event}} ${{action}} ${{step}} ${{result}}"
events:
  sns_topic_arn: "{TOPIC}"
  eventbridge_bus: "{BUS}"
hooks:
  - name: every-signal
    command: [/bin/true]
    actions: [terminate, reboot, maintenance, start, cancel]
"""


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config(str(path), env={}, check_permissions=False)


def _problems(tmp_path: Path, text: str) -> List[str]:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return caught.value.problems


def test_every_new_key_arrives_typed(tmp_path: Path) -> None:
    """Durations in seconds, ARN lists as tuples, the template as written."""
    config = _load(tmp_path, FLEET_CONFIG)
    assert config.rebalance == RebalanceSettings(enabled=True, poll_interval=0.5)
    assert config.ecs == EcsSettings(reactivate=False)
    assert config.autoscaling == AutoscalingSettings(
        enabled=True, lifecycle_hook="drain-on-terminate", budget=900.0, complete=False, detach=True
    )
    assert config.scheduled_events == ScheduledEventsSettings(
        enabled=False, poll_interval=30.0, lead=3600.0
    )
    assert config.load_balancer == LoadBalancerSettings(
        enabled=True, target_groups=(TG_A, TG_B), classic=("legacy-web",), wait=45.0
    )
    assert config.webhook == WebhookSettings(
        url="https://hooks.slack.com/services/T/B/X",
        format="slack",
        template=":warning: ${instance_id} ${event} ${action} ${step} ${result}",
    )
    assert config.events == EventsSettings(sns_topic_arn=TOPIC, eventbridge_bus=BUS)
    assert config.hooks[0].actions == ("terminate", "reboot", "maintenance", "start", "cancel")
    assert [h.name for h in config.hooks_for("cancel")] == ["every-signal"]


def test_defaults_of_the_new_keys() -> None:
    """What an operator gets without writing any of them."""
    config = Config()
    assert config.rebalance.poll_interval == 1.0 and config.ecs.reactivate is True
    assert config.autoscaling == AutoscalingSettings("auto", None, 600.0, True, False)
    assert config.scheduled_events == ScheduledEventsSettings(True, 60.0, 600.0)
    assert config.load_balancer == LoadBalancerSettings("auto", (), (), 30.0)
    assert (config.webhook.format, config.webhook.template) == ("json", None)
    assert config.events == EventsSettings(None, None)


def test_a_later_layer_replaces_the_target_group_list_and_merges_the_rest(
    tmp_path: Path,
) -> None:
    """Lists replace (like hooks), mappings merge per key — across conf.d as everywhere."""
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "10-lb.yaml").write_text(
        f'load_balancer: {{target_groups: ["{TG_B}"]}}\nevents: {{eventbridge_bus: default}}\n'
    )
    config = _load(tmp_path, FLEET_CONFIG)
    assert config.load_balancer.target_groups == (TG_B,)
    assert config.load_balancer.classic == ("legacy-web",)
    assert config.events == EventsSettings(sns_topic_arn=TOPIC, eventbridge_bus="default")


def test_the_effective_config_shown_by_check_is_itself_valid(tmp_path: Path) -> None:
    """config_to_dict gives lists for tuples, so `check`'s dump loads back to the same."""
    config = _load(tmp_path, FLEET_CONFIG)
    data = config_to_dict(config)
    assert data["load_balancer"]["target_groups"] == [TG_A, TG_B]
    data["webhook"]["headers"] = {}
    again = _load(tmp_path, yaml.safe_dump(data))
    assert again.load_balancer == config.load_balancer and again.events == config.events


@pytest.mark.parametrize(
    "template",
    [
        "{0.__class__} ${action}",
        "$action {action} {action:>10} ${action:>10} ${a.b} ${ action } %(action)s",
        "${event}${detail}$${step}",
    ],
)
def test_anything_but_a_known_placeholder_is_accepted_as_literal_text(
    tmp_path: Path, template: str
) -> None:
    """Format-string and attribute syntax is not a placeholder: it loads (and renders as is)."""
    config = _load(tmp_path, f"webhook: {{format: text, template: '{template}'}}\n")
    assert config.webhook.template == template


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("rebalance: {poll_interval: 0}", "rebalance.poll_interval", "> 0"),
        ("ecs: {reactivate: sometimes}", "ecs.reactivate", "true or false"),
        ("autoscaling: {enabled: maybe}", "autoscaling.enabled", "auto"),
        ("autoscaling: {lifecycle_hook: 'a hook'}", "autoscaling.lifecycle_hook", "lifecycle"),
        ("autoscaling: {budget: soon}", "autoscaling.budget", "duration"),
        ("autoscaling: {budget: 0}", "autoscaling.budget", "> 0"),
        ("autoscaling: {budget: 49h}", "autoscaling.budget", "at most 48h"),
        ("autoscaling: {complete: 1}", "autoscaling.complete", "true or false"),
        ("autoscaling: {detach: 'no'}", "autoscaling.detach", "true or false"),
        ("autoscaling: {heartbeat: 1m}", "autoscaling.heartbeat", "unknown key"),
        ("scheduled_events: {enabled: auto}", "scheduled_events.enabled", "true or false"),
        ("scheduled_events: {poll_interval: 0s}", "scheduled_events.poll_interval", "> 0"),
        ("scheduled_events: {lead: -1m}", "scheduled_events.lead", "non-negative"),
        ("load_balancer: {enabled: yes please}", "load_balancer.enabled", "auto"),
        ("load_balancer: {target_groups: web}", "load_balancer.target_groups", "a list"),
        (
            "load_balancer: {target_groups: [arn:aws:elasticloadbalancing:eu-west-1:1:x]}",
            "load_balancer.target_groups[0]",
            "targetgroup/NAME/ID",
        ),
        (
            f"load_balancer: {{target_groups: ['{TG_A}', '{TG_A}']}}",
            "load_balancer.target_groups[1]",
            "listed twice",
        ),
        ("load_balancer: {classic: [-web]}", "load_balancer.classic[0]", "Classic Load Balancer"),
        ("load_balancer: {classic: [[a]]}", "load_balancer.classic[0]", "Classic Load Balancer"),
        ("load_balancer: {wait: forever}", "load_balancer.wait", "duration"),
        ("webhook: {format: markdown}", "webhook.format", "json | slack | text"),
        ("webhook: {template: ''}", "webhook.template", "non-empty"),
        ("webhook: {template: 'x ${__import__}'}", "webhook.template", "${__import__}"),
        ("webhook: {template: '${intsance_id}'}", "webhook.template", "unknown placeholder"),
        ("webhook: {template: [a]}", "webhook.template", "non-empty string"),
        ("events: {sns_topic_arn: spot-fleet}", "events.sns_topic_arn", "SNS topic ARN"),
        (
            "events: {sns_topic_arn: 'arn:aws:sqs:eu-west-1:123456789012:q'}",
            "events.sns_topic_arn",
            "SNS topic ARN",
        ),
        ("events: {eventbridge_bus: 'my bus'}", "events.eventbridge_bus", "event bus name"),
        (
            "events: {eventbridge_bus: 'arn:aws:events:eu-west-1:123456789012:rule/x'}",
            "events.eventbridge_bus",
            "event-bus/NAME",
        ),
        ("events: {sqs_queue_url: x}", "events.sqs_queue_url", "unknown key"),
    ],
)
def test_each_bad_value_names_its_key_path(
    tmp_path: Path, text: str, path: str, message: str
) -> None:
    """One problem, reading `<file>: <key.path>: <message>`."""
    problems = _problems(tmp_path, text)
    assert len(problems) == 1, problems
    prefix = f"{tmp_path / 'config.yaml'}: {path}: "
    assert problems[0].startswith(prefix), problems
    assert message in problems[0][len(prefix) :]


def test_hook_actions_name_every_choice(tmp_path: Path) -> None:
    """A wrong action lists all nine the hook may subscribe to."""
    (problem,) = _problems(tmp_path, "hooks: [{name: x, command: x, actions: [restart]}]")
    for action in ("reboot", "maintenance", "start", "cancel", "resume", "rebalance"):
        assert action in problem


def test_an_unknown_placeholder_is_exit_78_naming_webhook_template(tmp_path: Path) -> None:
    """From the command line: one line naming the key path, status 78, no traceback."""
    path = tmp_path / "config.yaml"
    path.write_text("webhook:\n  format: slack\n  template: 'instance ${instance} is ${action}'\n")
    path.chmod(0o600)
    result = subprocess.run(
        [sys.executable, "-m", "spotwatch", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EX_CONFIG, result.stderr
    assert f"{path}: webhook.template: unknown placeholder ${{instance}}" in result.stderr
    assert "Traceback" not in result.stderr


REPO = Path(__file__).parents[2]


def _without_sample_hook(document: Dict[str, Any]) -> Dict[str, Any]:
    assert document.pop("hooks")[0]["name"] == "checkpoint"
    return document


def test_the_readme_block_spells_out_every_default(tmp_path: Path) -> None:
    """The README's configuration block lists every key with its built-in value."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Configuration", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    document = _without_sample_hook(yaml.safe_load(block))
    config = _load(tmp_path, yaml.safe_dump(document))
    assert config == Config(sources=config.sources)
    assert set(document) == {f.name for f in fields(Config)} - {"hooks", "sources"}


def test_the_packaged_example_config_uncommented_is_the_defaults(tmp_path: Path) -> None:
    """/etc/spotwatch/config.yaml as shipped: every key, commented out, at its default."""
    shipped = (REPO / "packaging" / "files" / "config.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(shipped) if line.startswith("# poll_interval:"))
    document = _without_sample_hook(yaml.safe_load("\n".join(s[2:] for s in shipped[start:])))
    config = _load(tmp_path, yaml.safe_dump(document))
    assert config == Config(sources=config.sources)
    assert set(document) == {f.name for f in fields(Config)} - {"hooks", "sources"}
