"""Unit tests for the rollout Grafana dashboard (cluster/grafana/synthscale-rollouts.json) and its PromQL parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import ArtifactError
from engine.rollout.grafana import dashboard_exprs, dashboard_metric_names, expr_metric_names, load_dashboard

DASHBOARD = Path(__file__).resolve().parents[2] / "cluster" / "grafana" / "synthscale-rollouts.json"

# What the rollout workers and driver export (ray.util.metrics; Ray adds `ray_`).
COUNTERS = ["synthscale_trajectories", "synthscale_infra_errors", "synthscale_steps", "synthscale_model_tokens",
            "synthscale_gpu_seconds_held", "synthscale_gpu_seconds_busy", "synthscale_cost_usd"]
GAUGES = ["synthscale_active_containers", "synthscale_queued_episodes"]
HISTOGRAMS = ["synthscale_episode_duration_s", "synthscale_step_duration_s"]
EXPORTED = ({f"ray_{c}_total" for c in COUNTERS} | {f"ray_{g}" for g in GAUGES}
            | {f"ray_{h}{s}" for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")})


def test_dashboard_is_grafana_json_with_panels_and_queries():
    data = json.loads(DASHBOARD.read_text())
    assert data["title"] and data["uid"] == "synthscale-rollouts"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["run_id"]["type"] == "query" and variables["run_id"]["datasource"] == "${datasource}"
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids)) == 10
    for panel in data["panels"]:
        assert panel["title"] and panel["type"] == "timeseries" and panel["datasource"] == "${datasource}"
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == "${datasource}"
            assert 'run_id=~"$run_id"' in target["expr"], (panel["title"], target["expr"])
            assert expr_metric_names(target["expr"]), target["expr"]


def test_every_queried_name_is_exported_and_every_series_is_shown():
    names = dashboard_metric_names(DASHBOARD)
    assert names <= EXPORTED, sorted(names - EXPORTED)
    families = {n.removeprefix("ray_").removesuffix("_total") for n in names}
    families = {f.rsplit("_", 1)[0] if f.endswith(("_bucket", "_sum", "_count")) else f for f in families}
    assert families == set(COUNTERS) | set(GAUGES) | set(HISTOGRAMS)


def test_required_panels_are_there():
    data = load_dashboard(DASHBOARD)
    by_title = {p["title"]: [t["expr"] for t in p["targets"]] for p in data["panels"]}
    quantiles = " ".join(by_title["Episode duration p50 / p90"])
    assert "histogram_quantile(0.5," in quantiles and "histogram_quantile(0.9," in quantiles
    assert "phase" in by_title["Step duration by phase"][0]
    busy = by_title["GPU busy fraction"][0]
    assert busy.index("gpu_seconds_busy") < busy.index("/") < busy.index("gpu_seconds_held")
    assert "exit_status" in by_title["Trajectories / min by exit status"][0]
    assert "direction" in by_title["Model tokens / s (in / out)"][0]


@pytest.mark.parametrize("expr, names", [
    ('sum by (exit_status) (rate(ray_a_total{run_id=~"$run_id", x="by(y)"}[5m])) * 60', {"ray_a_total"}),
    ("histogram_quantile(0.9, sum by (le, phase) (rate(ray_h_bucket[$__rate_interval])))", {"ray_h_bucket"}),
    ("sum(rate(ray_b_total[1m])) / on() group_left clamp_min(sum(rate(ray_c_total[1m])), 1e-9)",
     {"ray_b_total", "ray_c_total"}),
    ("ray_g offset 5m > bool 3", {"ray_g"}),
    ("label_values(ray_t_total{job=\"x\"}, run_id)", {"ray_t_total"}),
    ("vector(1)", set()),
])
def test_expr_metric_names(expr, names):
    assert expr_metric_names(expr) == names


def test_exprs_of_rows_and_variables(tmp_path):
    dash = {"panels": [{"type": "row", "panels": [{"targets": [{"expr": "ray_x"}]}]},
                       {"targets": [{"expr": "rate(ray_y_total[1m])"}, {"refId": "B"}]}],
            "templating": {"list": [{"type": "query", "query": "label_values(ray_z, run_id)"},
                                    {"type": "datasource", "query": "prometheus"}]}}
    assert list(dashboard_exprs(dash)) == ["ray_x", "rate(ray_y_total[1m])", "label_values(ray_z, run_id)"]
    path = tmp_path / "d.json"
    path.write_text(json.dumps(dash))
    assert dashboard_metric_names(path) == {"ray_x", "ray_y_total", "ray_z"}


def test_bad_dashboard_files(tmp_path):
    with pytest.raises(ArtifactError, match="no such dashboard"):
        load_dashboard(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_dashboard(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ArtifactError, match="no 'panels' list"):
        load_dashboard(tmp_path / "list.json")
