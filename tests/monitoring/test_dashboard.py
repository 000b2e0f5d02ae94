"""The Grafana dashboard (monitoring/grafana/spotwatch.json, installed as
/usr/share/spotwatch/grafana/spotwatch.json): templated on a Prometheus datasource and an
instance variable, the panels CONTRACT §6 names, every query valid PromQL (promtool parses
it) reading only metric names a real daemon exports."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
import yaml
from monitoring_kit import DASHBOARD, check_exported, promtool
from promql import metric_names, selectors

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
INSTANCES = 'instance=~"$instance"'
# What Grafana puts in place of its variables, for promtool to parse the queries.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "6h", "$__interval": "1m",
                     "$instance": ".*"}  # fmt: skip


@pytest.fixture(scope="module")
def dashboard() -> Dict[str, Any]:
    loaded = json.loads(DASHBOARD.read_text())
    assert isinstance(loaded, dict)
    return loaded


def _panels(dashboard: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries(dashboard: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    return [(p["title"], t["expr"]) for p in _panels(dashboard) for t in p.get("targets", [])]


def _variable(dashboard: Dict[str, Any], name: str) -> Dict[str, Any]:
    found = [v for v in dashboard["templating"]["list"] if v["name"] == name]
    assert len(found) == 1, name
    return dict(found[0])


def test_it_is_templated_on_a_prometheus_datasource_and_an_instance_variable(
    dashboard: Dict[str, Any],
) -> None:
    assert dashboard["uid"] == "spotwatch" and dashboard["schemaVersion"] >= 36
    datasource = _variable(dashboard, "datasource")
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    instance = _variable(dashboard, "instance")
    assert instance["type"] == "query" and instance["datasource"] == DATASOURCE
    assert instance["multi"] and instance["includeAll"] and instance["allValue"] == ".*"
    assert instance["query"]["query"].startswith("label_values(spotwatch_")


def test_every_panel_reads_the_chosen_datasource_and_instances(dashboard: Dict[str, Any]) -> None:
    """No panel hides a fixed datasource, and every series it selects is narrowed to the
    chosen instances."""
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            for name, matchers in selectors(target["expr"]):
                assert INSTANCES in matchers, (panel["title"], name)


def test_it_has_the_panels_the_contract_names(dashboard: Dict[str, Any]) -> None:
    titles = {panel["title"] for panel in _panels(dashboard)}
    for title in ("Polls by result", "Last successful poll age per instance",
                  "Notices by action and source", "Step durations (last run)", "Step failures",
                  "Scheduled events waiting", "Degraded instances"):  # fmt: skip
        assert title in titles
    assert len(titles) == len(list(_panels(dashboard)))  # titles are unique


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: Dict[str, Any]) -> None:
    panels = list(_panels(dashboard))
    assert len({p["id"] for p in panels}) == len(panels)
    taken = set()
    for panel in panels:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(box["x"], box["x"] + box["w"])
                 for y in range(box["y"], box["y"] + box["h"])}  # fmt: skip
        assert not cells & taken, panel["title"]
        taken |= cells


def test_every_query_is_valid_promql(dashboard: Dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each query (Grafana's variables replaced as Grafana would), as the
    expression of a recording rule."""
    rules = []
    for index, (title, expr) in enumerate(_queries(dashboard)):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"panel_{index}", "expr": expr, "labels": {"title": title}})
    rule_file = tmp_path / "panels.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run([promtool(), "check", "rules", str(rule_file)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_metric_a_panel_queries_is_exported(
    dashboard: Dict[str, Any], exported: Dict[str, str]
) -> None:
    queried = {name for _, expr in _queries(dashboard) for name in metric_names(expr)}
    queried.add(_variable(dashboard, "instance")["query"]["query"].split("(")[1].split(",")[0])
    check_exported(queried, exported, "the dashboard")
