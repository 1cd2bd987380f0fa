"""The PrometheusRule and the dashboard, checked by the real promtool: every expression parses,
every alert fires in a unit test exactly when it should, and each has a runbook entry.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingest.outcomes import Outcome
from tests.deploy.support import (
    DEFAULTS,
    REPO,
    dashboard,
    dashboard_queries,
    metric_names,
    rule_groups,
    run,
    tool,
    write_rule_file,
)

UNIT_TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
RUNBOOK = REPO / "docs" / "runbook.md"


def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


@pytest.mark.parametrize("scenario", [DEFAULTS, "strimzi-mtls-values"])
def test_promtool_accepts_the_rules(scenario: str, tmp_path: Path) -> None:
    """Prometheus loads the rendered rules: every expression and template parses."""
    rules = write_rule_file(tmp_path / "rules.yaml", rule_groups(scenario))

    result = run(tool("promtool"), "check", "rules", str(rules))

    assert "SUCCESS" in result.stdout


def test_every_alert_fires_in_its_unit_test(tmp_path: Path) -> None:
    """promtool's unit tests show each alert silent before, and firing with its text after."""
    groups = rule_groups()
    write_rule_file(tmp_path / "rules.yaml", groups)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    tested = {
        case["alertname"]
        for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }

    result = run(tool("promtool"), "test", "rules", UNIT_TESTS.name, cwd=tmp_path, check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert {rule["alert"] for rule in alerts(groups)} == tested


def test_promtool_unit_tests_can_fail(tmp_path: Path) -> None:
    """The unit tests bite: with a threshold moved, an expected alert no longer matches."""
    groups = rule_groups()
    for rule in alerts(groups):
        if rule["alert"] == "PostbackEdgeKafkaOutage":
            rule["expr"] = rule["expr"].replace("> 120", "> 600")
    write_rule_file(tmp_path / "rules.yaml", groups)
    unit_tests = yaml.safe_load(UNIT_TESTS.read_text())
    unit_tests["tests"] = [t for t in unit_tests["tests"] if "Kafka" in t["name"]]
    (tmp_path / UNIT_TESTS.name).write_text(yaml.safe_dump(unit_tests))

    result = run(tool("promtool"), "test", "rules", UNIT_TESTS.name, cwd=tmp_path, check=False)

    assert result.returncode != 0
    assert "PostbackEdgeKafkaOutage" in result.stdout + result.stderr


def test_every_alert_can_be_routed_and_acted_on() -> None:
    """Each alert has a severity, a summary, a description, and a section in the runbook."""
    runbook = RUNBOOK.read_text()
    headings = set(re.findall(r"^### (\w+)$", runbook, flags=re.MULTILINE))

    for rule in alerts(rule_groups()):
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
        assert name in headings, f"docs/runbook.md has no '### {name}' section"
        section = runbook.split(f"### {name}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Meaning**", "**Diagnosis**", "**Action**"):
            assert part in section, f"{name}: runbook section lacks {part}"


def test_alerts_link_their_runbook_section() -> None:
    """With runbookUrl set, each alert's runbook_url opens its own section of docs/runbook.md."""
    url = "https://git.example.com/postback-pipeline/blob/main/docs/runbook.md"
    headings = re.findall(r"^### (\w+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    anchors = {heading.lower() for heading in headings}  # how Markdown renderers anchor them

    for rule in alerts(
        rule_groups(DEFAULTS, "--set", f"monitoring.prometheusRule.runbookUrl={url}")
    ):
        link = rule["annotations"]["runbook_url"]
        assert link == f"{url}#{rule['alert'].lower()}"
        assert link.rsplit("#", 1)[1] in anchors


def test_alert_labels_from_values_reach_every_alert() -> None:
    """Routing labels set once in values (team: messaging) are on every alert."""
    for rule in alerts(rule_groups("strimzi-mtls-values")):
        assert rule["labels"]["team"] == "messaging", rule["alert"]


def alerted_reasons(rule: dict[str, Any]) -> set[str]:
    """The refusal reasons an alert's expression selects (`reason=~"a|b"`)."""
    (reasons,) = re.findall(r'reason=~"([a-z_|]+)"', rule["expr"])
    return set(reasons.split("|"))


def runbook_section(heading: str) -> str:
    return RUNBOOK.read_text().split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]


def test_every_refusal_reason_is_alerted_on_or_documented_as_not() -> None:
    """A refusal reason added to the edge is either in an alert (5xx: PostbackEdgeFailing; the
    sender's side: PostbackEdgeRefusing, whose runbook section explains it) or named in the
    runbook's "Refusals no alert names", never silently in neither."""
    rules = {rule["alert"]: rule for rule in alerts(rule_groups())}
    failing = alerted_reasons(rules["PostbackEdgeFailing"])
    refusing = alerted_reasons(rules["PostbackEdgeRefusing"])
    bullets = re.findall(r"^- (.*?):", runbook_section("Refusals no alert names"), re.MULTILINE)
    unalerted = {reason for bullet in bullets for reason in re.findall(r"`(\w+)`", bullet)}

    assert failing == {o.reason for o in Outcome if o.status == 503}
    assert refusing == {o.reason for o in Outcome if 400 <= o.status < 500} - unalerted
    assert failing | refusing | unalerted == {o.reason for o in Outcome if o.refused}
    assert not (failing | refusing) & unalerted
    for reason in refusing:
        assert f"`{reason}`" in runbook_section("PostbackEdgeRefusing"), reason


def test_retry_budget_alert_leaves_time_to_act() -> None:
    """The budget alert fires while at least a third of the provider's retry horizon is left."""
    (rule,) = [r for r in alerts(rule_groups()) if r["alert"] == "PostbackRetryBudgetLow"]
    threshold = float(re.search(r"< (\d+)", rule["expr"]).group(1))  # type: ignore[union-attr]
    horizon = 1500  # EDGE_PROVIDER_RETRY_HORIZON_SECONDS default

    assert "postback_edge_provider_retry_budget_seconds" in rule["expr"]
    assert horizon / 3 <= threshold < horizon


def test_recorded_series_keep_namespace_and_job() -> None:
    """Two releases' recording rules never write the same series."""
    for group in rule_groups():
        for rule in group["rules"]:
            if "record" in rule and "avg_over_time" not in rule["expr"]:
                assert re.search(r"by \(namespace, job", rule["expr"]), rule["record"]


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    """Each panel's PromQL (and each variable's selector) is valid, as Prometheus parses it."""
    queries = dashboard_queries()
    rules = [
        {"record": f"dashboard:query_{n}", "expr": expr} for n, (_where, expr) in enumerate(queries)
    ]
    path = write_rule_file(tmp_path / "dashboard.yaml", [{"name": "dashboard", "rules": rules}])

    result = run(tool("promtool"), "check", "rules", str(path), check=False)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_dashboard_is_a_grafana_model_with_a_data_source_variable() -> None:
    """The sidecar imports it as is: unique panel ids, every query on the chosen data source."""
    board = dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    ids = [panel["id"] for panel in board["panels"]]

    assert board["uid"] == "postback-pipeline"
    assert variables["datasource"]["type"] == "datasource"
    assert {"namespace", "release"} <= variables.keys()
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["description"], panel["title"]


def test_metric_name_scanner_sees_names_not_functions_or_labels() -> None:
    """The cross-check against /metrics reads the right names out of PromQL."""
    expr = (
        'sum by (le, job) (rate(a_bucket{job="x", le=~"0.5|1"}[$__rate_interval] offset 1h))'
        " / on (job) group_left (operator_name) b_info * 1e+06 > bool c:recorded"
        ' or vector(0) and time() - d_seconds{q="unless e"}'
    )

    assert metric_names(expr) == {"a_bucket", "b_info", "c:recorded", "d_seconds"}
