"""The shipped Grafana dashboard and Prometheus rules, read for tests: their expressions and metric names."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "cost-sync.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
MONITORING_DOC = ROOT / "docs" / "monitoring.md"

#: Series Prometheus makes itself for every target; they are not in any /metrics.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# PromQL words that look like metric names but are not.
_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
    | {"inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_LABELS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: functions, label matchers, grouping labels,
    ranges, Grafana variables, strings and numbers stripped."""
    text = _VARIABLE.sub(" 1m ", _STRING.sub(" ", expr))
    text = _LABELS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _OFFSET.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    """The dashboard as JSON."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, rows' nested panels included."""
    return list(_panels(dashboard()["panels"]))


def dashboard_expressions() -> list[str]:
    """Every PromQL expression the dashboard runs: panel targets and template-variable queries."""
    exprs = [
        target["expr"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert inner, f"unexpected variable query {query!r}"
            exprs.append(inner.group(1))
    return exprs


def dashboard_sql() -> list[str]:
    """Every SQL statement the dashboard's PostgreSQL panels run."""
    return [
        target["rawSql"]
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if "rawSql" in target
    ]


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of alerts.yml."""
    loaded = yaml.safe_load(ALERTS.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def queried_metric_names() -> dict[str, set[str]]:
    """Metric name -> where it is used ("dashboard", "alerts"), synthetic series left out."""
    used: dict[str, set[str]] = {}
    for where, exprs in (
        ("dashboard", dashboard_expressions()),
        ("alerts", [rule["expr"] for rule in alert_rules()]),
    ):
        for expr in exprs:
            for name in metric_names(expr) - SYNTHETIC:
                used.setdefault(name, set()).add(where)
    return used
