"""The shipped dashboard and alert rules: promtool checks and unit-tests the rules, the files hang together.

Whether every metric they query exists in a running daemon's /metrics is checked against a real
daemon in tests/integration/test_monitoring_metrics.py.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.monitoring_files import (
    ALERT_TESTS,
    ALERTS,
    MONITORING_DOC,
    ROOT,
    alert_rules,
    dashboard,
    dashboard_panels,
    dashboard_sql,
    metric_names,
    queried_metric_names,
)
from tests.system_tools import need_program


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('cost_sync_fleet_monthly_usd{job=~"$job"}', {"cost_sync_fleet_monthly_usd"}),
        (
            "histogram_quantile(0.95, sum by (le) (rate(x_seconds_bucket[$__rate_interval])))",
            {"x_seconds_bucket"},
        ),
        ("time() - a_seconds > 3 * b_seconds", {"a_seconds", "b_seconds"}),
        ('absent(up{job="cost-sync"})', {"up"}),
        ('sum without (instance) (x{k="by (y)"}) / on (job) group_left (z) w offset 5m', {"x", "w"}),
        ("count(a) and bool b or c unless d", {"a", "b", "c", "d"}),
        ("rate(x_total[${__range}]) * 1e3", {"x_total"}),
    ],
)
def test_metric_names_are_read_from_expressions(expr: str, names: set[str]) -> None:
    """Functions, label matchers, grouping labels, ranges, variables and numbers are not metric names."""
    assert metric_names(expr) == names


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    """`promtool check rules` finds every rule well formed; `promtool test rules` passes."""
    promtool = need_program("promtool", package="prometheus")
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=ALERT_TESTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_rule_is_unit_tested_firing_and_labelled() -> None:
    """Each alert appears in the unit tests with an expected firing; page or ticket; summary and runbook."""
    import yaml

    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names))
    for rule in alert_rules():
        name = rule["alert"]
        assert name in fired, f"{name}: no test makes it fire"
        assert name in quiet or name == "CostSyncRunMostlyUnpriced", f"{name}: no test checks it stays quiet"
        assert rule["labels"]["severity"] in {"page", "ticket"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["runbook_url"].startswith("docs/monitoring.md#"), name


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown text."""
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    }


def test_runbooks_and_panels_are_explained_in_the_docs() -> None:
    """Every runbook link names a section of docs/monitoring.md; every panel title is explained there."""
    doc = MONITORING_DOC.read_text()
    anchors = _anchors(doc)
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].partition("#")[2]
        assert anchor in anchors, f"{rule['alert']}: docs/monitoring.md has no section #{anchor}"
    for panel in dashboard_panels():
        if panel["type"] != "row":
            assert panel["title"] in doc, f"panel {panel['title']!r} is not explained in docs/monitoring.md"
    assert "docs/monitoring.md" in (ROOT / "README.md").read_text()


def test_dashboard_names_its_datasources_by_variable() -> None:
    """Current schema; every panel and target uses ${DS_PROMETHEUS} or ${DS_POSTGRES}, never a fixed uid."""
    board = dashboard()
    assert board["schemaVersion"] >= 39
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == variables["DS_POSTGRES"]["type"] == "datasource"
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        if panel["type"] == "row":
            continue
        sources = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
        assert {s["uid"] for s in sources} <= {"${DS_PROMETHEUS}", "${DS_POSTGRES}"}, panel["title"]
        assert len({s["uid"] for s in sources}) == 1, panel["title"]
    assert any("cost_sync_tenant_monthly" in sql for sql in dashboard_sql())


def test_dashboard_covers_what_operators_asked_for() -> None:
    """Fleet cost, runs by outcome, duration, Hostwinds calls, cache, unpriced, held, oldest age, progress."""
    used = queried_metric_names()
    for name in (
        "cost_sync_fleet_monthly_usd",
        "cost_sync_runs_total",
        "cost_sync_run_duration_seconds_bucket",
        "cost_sync_hostwinds_requests_total",
        "cost_sync_price_cache_services_total",
        "cost_sync_price_cache_asks_total",
        "cost_sync_instances_unpriced",
        "cost_sync_changes_held",
        "cost_sync_price_observation_oldest_age_seconds",
        "cost_sync_run_progress_asked",
        "cost_sync_run_progress_to_ask",
    ):
        assert "dashboard" in used.get(name, set()), name
