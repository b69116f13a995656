"""Grafana dashboard checks: reads a dashboard JSON (``cluster/grafana/*.json``) and returns the metric
names its PromQL queries use, so a test can hold them against what a live metrics endpoint serves."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

from engine.errors import ArtifactError

# PromQL words that look like identifiers but are not metric names.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or",
             "unless", "inf", "nan", "atan2"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", re.S)
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(\s*\()?")


def expr_metric_names(expr: str) -> set[str]:
    """Metric names in one PromQL expression (functions, labels, keywords and durations left out).

    >>> sorted(expr_metric_names('sum by (le) (rate(ray_x_bucket{run_id=~"$run_id"}[5m])) / on() ray_y'))
    ['ray_x_bucket', 'ray_y']
    """
    text = _STRING.sub('""', expr)
    if m := _LABEL_VALUES.search(text):  # a template variable query: label_values(<selector>, <label>)
        text = m.group(1)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        word, is_call = m.group(1), m.group(2)
        if is_call or word.lower() in _KEYWORDS or word.startswith("$"):
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict) -> Iterator[str]:
    """Every PromQL expression of a dashboard: panel targets (rows' nested panels too) and query variables."""
    def panels(items: list) -> Iterator[dict]:
        for p in items:
            yield p
            yield from panels(p.get("panels") or [])

    for panel in panels(dashboard.get("panels") or []):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield target["expr"]
    for var in (dashboard.get("templating") or {}).get("list") or []:
        if var.get("type") == "query":
            query = var.get("query")
            yield query.get("query", "") if isinstance(query, dict) else str(query or "")


def load_dashboard(path: str | os.PathLike) -> dict:
    """The dashboard JSON as a dict; a missing or malformed file is an ArtifactError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ArtifactError(f"{os.fspath(path)}: no such dashboard file") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{os.fspath(path)}: not valid JSON ({e}); fix the dashboard file") from None
    if not isinstance(data, dict) or not isinstance(data.get("panels"), list):
        raise ArtifactError(f"{os.fspath(path)}: not a Grafana dashboard (no 'panels' list)")
    return data


def dashboard_metric_names(path: str | os.PathLike) -> set[str]:
    """Every metric name the dashboard's queries read (e.g. ``ray_synthscale_trajectories_total``)."""
    return {name for expr in dashboard_exprs(load_dashboard(path)) for name in expr_metric_names(expr)}
