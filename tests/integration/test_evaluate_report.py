"""The evaluation report end to end: files written (locally and on S3 through a loopback moto server), the
numbers in aup.csv recomputed from scores.parquet, the HTML self-contained, and the `aup` / `eval-report`
commands with the errors bad input gets."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import boto3
import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from engine.cli import app
from engine.evaluate.aup import compute_aup, compute_aup_pair
from engine.evaluate.report import build_report, read_scores
from engine.evaluate.scores import best_attempt, best_submission, directions_of

BUCKET = "synthscale-eval"


def _runs() -> pd.DataFrame:
    """Three methods on four tasks (two max, two min), 5 runs each, one infra error, one missing cell."""
    rng = np.random.default_rng(0)
    tasks = {"acc": ("max", 0.6, 0.8), "f1": ("max", 0.4, 0.7), "rmse": ("min", 3.0, 2.0), "loss": ("min", 1.5, 1.0)}
    quality = {"base": 0.0, "sft": 0.6, "teacher": 1.0}
    rows = []
    for method, q in quality.items():
        for task, (direction, baseline, best) in tasks.items():
            if method == "base" and task == "f1":
                continue  # never ran: a missing cell
            for run in range(5):
                level = baseline + q * (best - baseline)
                scores = [float(level + rng.normal(0, 0.05 * abs(level))) for _ in range(3)]
                if run == 1:
                    scores[0] = float("nan")  # a failed validate
                infra = "sandbox lost" if (method, task, run) == ("sft", "acc", 4) else None
                rows.append({"method": method, "task_id": task, "run": run, "direction": direction,
                             "baseline_score": baseline, "scores": scores,
                             "final_score": scores[-1] if run != 2 else float("nan"),
                             "exit_status": "" if infra else
                             ("submitted" if run != 2 else "autosubmission (exit_format)"),
                             "infra_error": infra, "seed": run})
    return pd.DataFrame(rows)


def test_report_files_and_aup_recomputed_from_scores_parquet(tmp_path: Path) -> None:
    eval_dir = tmp_path / "run" / "eval"
    report = build_report(_runs(), str(eval_dir), n_resamples=200, seed=0)
    for name in ("scores.parquet", "aup.csv", "per_task.csv", "best_attempt.csv", "best_submission.csv",
                 "win_matrix.csv", "exit_status.csv", "relative_change.csv", "profile.png", "report.html"):
        assert (eval_dir / name).is_file(), name

    runs = read_scores(str(eval_dir))
    assert len(runs) == 55 and runs["seed"].tolist() == _runs()["seed"].tolist()  # extra columns survive
    assert math.isnan(runs["scores"].iloc[1][0]) and len(runs["scores"].iloc[1]) == 3  # NaN stays NaN
    pair = compute_aup_pair(best_attempt(runs), best_submission(runs), directions_of(runs), "baseline")
    aup = pd.read_csv(eval_dir / "aup.csv", index_col="method")
    assert list(aup.index) == ["base", "sft", "teacher", "baseline"]
    assert aup["method_set"].unique().tolist() == ["base, sft, teacher, baseline"]
    for kind in ("best_attempt", "best_submission"):
        assert aup[kind].to_dict() == pytest.approx(pair.table()[kind].to_dict(), abs=1e-9)
        assert (aup[f"{kind}_low"] <= aup[f"{kind}_high"]).all()
        # and on its own axis end (written beside it) the plain compute_aup gives the same numbers
        alone = compute_aup(best_attempt(runs) if kind == "best_attempt" else best_submission(runs),
                            directions_of(runs), "baseline", tau_max=float(aup["tau_max"].iloc[0]))
        assert aup[kind].to_dict() == pytest.approx(alone.to_dict(), abs=1e-9)
    assert aup.loc["teacher", "best_attempt"] > aup.loc["sft", "best_attempt"] > aup.loc["base", "best_attempt"]

    per_task = pd.read_csv(eval_dir / "per_task.csv")
    assert len(per_task) == 4 * 4 and per_task["best_attempt_feasible"].dtype == bool
    assert math.isnan(per_task.query("method == 'base' and task_id == 'f1'")["best_attempt"].iloc[0])
    status = pd.read_csv(eval_dir / "exit_status.csv", index_col="method")
    assert status.loc["sft", "infra_error"] == 1 and status.loc["sft", "submitted"] == 15
    assert status.loc["base", "autosubmission (exit_format)"] == 3
    rel = pd.read_csv(eval_dir / "relative_change.csv")
    assert set(zip(rel["method_a"], rel["method_b"])) == {("base", "sft"), ("base", "teacher")}

    page = (eval_dir / "report.html").read_text(encoding="utf-8")
    png = (eval_dir / "profile.png").read_bytes()
    assert png.startswith(b"\x89PNG") and base64.b64encode(png).decode() in page
    assert "<title>synthscale evaluation: base, sft, teacher, baseline</title>" in page
    assert "src=\"http" not in page and "<link" not in page  # self-contained
    assert report._repr_html_().startswith("<h1>synthscale evaluation: base, sft, teacher, baseline</h1>")


def test_report_on_s3_through_a_loopback_server(tmp_path: Path) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        boto3.client("s3", endpoint_url=f"http://{host}:{port}", aws_access_key_id="testing",
                     aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        fs = pafs.S3FileSystem(access_key="testing", secret_key="testing", endpoint_override=f"{host}:{port}",
                               scheme="http", region="us-east-1")
        uri = f"s3://{BUCKET}/run/eval"
        report = build_report(_runs(), uri, n_resamples=0, filesystem=fs)
        assert report.paths["html"] == f"{BUCKET}/run/eval/report.html"
        assert fs.get_file_info(f"{BUCKET}/run/eval/aup.csv").size > 0
        runs = read_scores(uri, filesystem=fs)
        pair = compute_aup_pair(best_attempt(runs), best_submission(runs), directions_of(runs), "baseline")
        assert report.aup["best_attempt"].to_dict() == pytest.approx(pair.table()["best_attempt"].to_dict())
        assert "best_attempt_low" not in report.aup.columns and report.relative == []
    finally:
        server.stop()


def _cli(*args: object):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_aup_command(tmp_path: Path) -> None:
    # t1 (max): A 2, baseline 1 → baseline ratio 2, cap 3; t2 (min): A 3, baseline 5 → ratio 5/3, cap 2.
    # Axis 0.5, h = 0.5/499: baseline k = ceil(0.30103/h) = 301 and ceil(0.221849/h) = 222,
    # AUP = (198 + 277)/2 · h = 0.2380; A = 0.5.
    scores = tmp_path / "scores.csv"
    scores.write_text("method,t1,t2\nA,2,3\nbaseline,1,5\n")
    directions = tmp_path / "directions.json"
    directions.write_text(json.dumps({"t1": "max", "t2": "min"}))
    code, text = _cli("aup", scores, "--directions", directions, "--baseline", "baseline")
    assert code == 0, text
    assert "AUP over 2 methods: A, baseline" in text
    assert "A         0.5000" in text and f"baseline  {475 / 2 * 0.5 / 499:.4f}" in text
    code, text = _cli("aup", scores, "--directions", directions, "--baseline", "baseline", "--tau-max", "1")
    assert code == 0 and "τ axis 0 to 1" in text and "A         1.0000" in text

    code, text = _cli("aup", scores, "--directions", directions, "--baseline", "ref")
    assert code == 2 and "baseline 'ref' is not a row" in text
    code, text = _cli("aup", tmp_path / "nope.csv", "--directions", directions, "--baseline", "baseline")
    assert code == 2 and "no such score table" in text
    directions.write_text("{not json")
    code, text = _cli("aup", scores, "--directions", directions, "--baseline", "baseline")
    assert code == 2 and "not valid JSON" in text
    directions.write_text(json.dumps({"t1": "max"}))
    code, text = _cli("aup", scores, "--directions", directions, "--baseline", "baseline")
    assert code == 2 and "no direction for tasks ['t2']" in text


def test_eval_report_command_rebuilds_from_scores_parquet(tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    build_report(_runs(), str(eval_dir), n_resamples=0)
    (eval_dir / "report.html").unlink()
    code, text = _cli("eval-report", eval_dir, "--resamples", "50")
    assert code == 0, text
    assert (eval_dir / "report.html").is_file() and "sft vs base (best_attempt)" in text
    code, text = _cli("eval-report", tmp_path / "empty")
    assert code == 2 and "scores.parquet: missing" in text
