"""Guards against real processes and servers: a row-hash index filled from a loopback dataset viewer, and a buggy
grader, run as a process, that scores a constant submission at the ceiling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from engine.synth.guards.contamination import ContaminationIndex, check_contamination, contamination_index_from_hub
from engine.synth.guards.leaks import probe_leaks, score_rejects
from engine.synth.records import DatasetProposal, ProposalRecord
from engine.tasks.artefact import grade_output, grader_command
from engine.tasks.check import constant_csv
from engine.tasks.folder import TaskParts, save_task
from engine.tasks.spec import DatasetConfig, TaskConfig, TaskSpec

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

# ---------------------------------------------------------------- a loopback dataset viewer

HOUSES = [{"Id": i, "LotArea": 8000 + 37 * i, "Neighborhood": ["NAmes", "CollgCr", "OldTown"][i % 3],
           "YearBuilt": 1950 + i, "SalePrice": 120000 + 1111 * i} for i in range(250)]


def viewer_rows(request: Request) -> Response:
    """The dataset viewer's /rows: pages of at most 100 rows, each as {"row_idx", "row", "truncated_cells"}."""
    args = request.args
    if (args["dataset"], args["config"], args["split"]) != ("kaggle/house-prices", "default", "train"):
        return Response(json.dumps({"error": "not found"}), status=404, content_type="application/json")
    offset, length = int(args["offset"]), int(args["length"])
    assert length <= 100
    rows = [{"row_idx": i, "row": HOUSES[i], "truncated_cells": []}
            for i in range(offset, min(offset + length, len(HOUSES)))]
    return Response(json.dumps({"features": [], "rows": rows, "num_rows_total": len(HOUSES), "partial": False}),
                    content_type="application/json")


def test_index_from_the_viewer_rejects_a_renamed_reupload(httpserver: HTTPServer, tmp_path):
    httpserver.expect_request("/rows").respond_with_handler(viewer_rows)
    with requests.Session() as session:
        index = contamination_index_from_hub(session, {"house_prices": ("kaggle/house-prices", None, "train")}, 150,
                                             viewer_url=httpserver.url_for("/"))
    assert len(httpserver.log) == 2  # 100 rows, then 50
    path = tmp_path / "contamination.json"
    index.save(path)
    index = ContaminationIndex.load(path)
    # A re-upload under another name: columns renamed and reordered, the id dropped, prices as text.
    reupload = [{"price": str(h["SalePrice"]), "built": h["YearBuilt"], "area_sqft": float(h["LotArea"]),
                 "district": h["Neighborhood"].lower()} for h in HOUSES[100:105]]
    p = ProposalRecord(proposal_id="p7", topic_id="t", topic="real estate", domain="tabular", name="Home values",
                       description="Estimate the value of homes from their lot, district and construction year.",
                       task_type="regression", metric="rmse", direction="min",
                       dataset=DatasetProposal(hf_id="someone/home-values", input_columns=["area_sqft"],
                                               target_column="price"))
    reject = check_contamination(p, reupload, index, description_overlap_max=0.6)
    assert reject is not None and reject.reason == "contaminated_rows"
    assert reject.detail == "5 of 5 sampled rows are rows of benchmark dataset house_prices"
    other = [{"price": str(1000 + h["SalePrice"]), "built": h["YearBuilt"] + 1, "area_sqft": 1.5 * h["LotArea"],
              "district": "riverside"} for h in HOUSES[100:105]]
    assert check_contamination(p, other, index, description_overlap_max=0.6) is None


# ---------------------------------------------------------------- a grader that cannot tell predictions apart

GOOD_GRADER = """import argparse, json
import pandas as pd
p = argparse.ArgumentParser(); p.add_argument("--submission_file"); a = p.parse_args()
sub = pd.read_csv(a.submission_file)
out = {}
for split in ("validation", "test"):
    m = pd.read_csv(f"labels_{split}.csv").merge(sub, on="id", how="left")
    out[split] = {"accuracy": float((m["label_x"] == m["label_y"]).mean())}
print(json.dumps(out))
"""
# The bug: the prediction is compared with itself, so every submission, a constant one too, scores 1.0.
BAD_GRADER = GOOD_GRADER.replace('m["label_x"] == m["label_y"]', 'm["label_y"] == m["label_y"]')
BASELINE = """import pandas as pd
train = pd.read_csv("data/train.csv")
rows = pd.concat([pd.read_csv("data/validation.csv"), pd.read_csv("data/test.csv")])
cut = train["x"].median()
pd.DataFrame({"id": rows["id"], "label": (rows["x"] > cut).astype(int)}).to_csv("submission.csv", index=False)
"""


def binary_task(root: Path, grader: str) -> TaskSpec:
    rng = np.random.default_rng(1)
    x = rng.normal(size=160).round(5)
    y = (x + rng.normal(scale=0.7, size=160) > 0).astype(int)
    train = pd.DataFrame({"x": x[:100], "label": y[:100]})
    held = pd.DataFrame({"id": range(60), "x": x[100:], "label": y[100:]})
    cfg = TaskConfig(id="binary", name="Binary", description="Predict label from x.", dataset_configs=["dataset.yaml"],
                     baseline_paths=["baseline.py"], metric="accuracy", direction="max",
                     submission_path="submission.csv")
    ds = DatasetConfig(name="binary", data_path="workspace/data",
                       splits={"train": "train.csv", "validation": "validation.csv", "test": "test.csv"})
    workspace = {"baseline.py": BASELINE, "data/train.csv": train.to_csv(index=False),
                 "data/validation.csv": held[:30][["id", "x"]].to_csv(index=False),
                 "data/test.csv": held[30:][["id", "x"]].to_csv(index=False)}
    labels = {"labels_validation.csv": held[:30][["id", "label"]].to_csv(index=False),
              "labels_test.csv": held[30:][["id", "label"]].to_csv(index=False)}
    parts = TaskParts(config=cfg, datasets=[ds], workspace=workspace, grader={"evaluate.py": grader, **labels})
    return save_task(parts, root)


def run(command: str, cwd: Path) -> str:
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=120)
    assert result.returncode == 0, result.stdout
    return result.stdout


def baseline_and_constant(spec: TaskSpec, tmp: Path) -> tuple[dict[str, float], dict[str, float]]:
    """Run the baseline, grade its submission and a constant one in a copy of grader/; returns both test metrics."""
    ws, grader = tmp / "ws", tmp / "grader"
    shutil.copytree(spec.workspace_dir, ws)
    shutil.copytree(spec.grader_dir, grader)
    run("python baseline.py", ws)
    (grader / "submission.csv").write_bytes((ws / "submission.csv").read_bytes())
    _, baseline = grade_output(spec, run(grader_command(spec, "submission.csv"), grader))
    (grader / "constant.csv").write_bytes(constant_csv((ws / "submission.csv").read_bytes()))
    _, constant = grade_output(spec, run(grader_command(spec, "constant.csv"), grader))
    return baseline, constant


def test_a_grader_that_scores_a_constant_submission_at_the_ceiling_is_rejected(tmp_path):
    spec = binary_task(tmp_path / "bad", BAD_GRADER)
    baseline, constant = baseline_and_constant(spec, tmp_path / "run-bad")
    assert baseline == constant == {"accuracy": 1.0}
    assert [r.reason for r in probe_leaks(spec, constant_scores=constant)] == ["constant_at_ceiling"]
    records = score_rejects(spec.id, "accuracy", "max", baseline={"test": baseline}, constant=constant)
    assert [r.reason for r in records] == ["baseline_at_ceiling", "constant_at_ceiling"]


def test_a_sound_grader_passes(tmp_path):
    spec = binary_task(tmp_path / "good", GOOD_GRADER)
    baseline, constant = baseline_and_constant(spec, tmp_path / "run-good")
    assert 0.5 < baseline["accuracy"] < 1.0 and constant["accuracy"] < baseline["accuracy"]
    assert probe_leaks(spec, constant_scores=constant) == []
    assert score_rejects(spec.id, "accuracy", "max", baseline={"test": baseline}, constant=constant) == []
