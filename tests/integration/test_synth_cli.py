"""`synthscale synth` offline: procedural tasks verified into RUN/synth/, resumable, with a yield manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from engine.cli import app
from engine.tasks.folder import load_task

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


def test_synth_procedural_then_resume_then_refuse_another_config(tmp_path: Path) -> None:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"synth": {"source": "procedural", "families": ["tabular_regression", "digits_classification"],
                                             "n_tasks": 2, "concurrency": 2}}))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["synth", "--config", str(cfg), "--run", str(run)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "synth" / "manifest.json").read_text())
    tasks = sorted((run / "synth" / "tasks").iterdir())
    assert manifest["counts"]["verified"] == len(tasks) >= 1
    assert f"{len(tasks)} verified of 2 proposals" in result.output
    for task in tasks:
        spec = load_task(task)
        assert spec.baseline and spec.baseline_test  # measured by verification
        prov = json.loads((task / "provenance.json").read_text())
        assert prov["source"] == "procedural" and prov["verification"]["verified"]
    assert len(pq.read_table(run / "synth" / "proposals.parquet")) == 2

    again = CliRunner().invoke(app, ["synth", "--config", str(cfg), "--run", str(run)])
    assert again.exit_code == 0 and f"{len(tasks)} verified" in again.output
    assert sorted((run / "synth" / "tasks").iterdir()) == tasks

    other = CliRunner().invoke(app, ["synth", "--config", str(cfg), "--run", str(run), "-n", "3"])
    assert other.exit_code == 2 and "--start-over" in other.output


def test_synth_rejects_an_object_store_run_dir(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["synth", "--run", "s3://bucket/run"])
    assert result.exit_code == 2 and "shared-filesystem path" in result.output
