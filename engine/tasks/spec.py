"""Task records: `task.yaml` (MLGym TaskConfig fields plus ours) and `dataset.yaml`, and the loaded `TaskSpec`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

TaskEntrypoint = Literal["CSVSubmissionTasks", "ModelSubmissionTasks", "LMSubmissionTasks", "PythonSubmissionTasks"]
Direction = Literal["max", "min"]


_FILE_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)
"""Models read from a task folder's files: unknown fields and non-finite floats (`.inf`, `.nan` in YAML: a baseline
no submission can beat or match) are errors naming the field."""


class DatasetSplit(BaseModel):
    model_config = _FILE_CONFIG
    name: str
    file_regex: str | None = None


class DatasetConfig(BaseModel):
    """`dataset.yaml`: MLGym's dataset config fields plus the pinned revision and our split table."""

    model_config = _FILE_CONFIG
    name: str
    description: str = ""
    data_path: str = Field(description="Hugging Face id, or a path relative to the task folder.")
    is_local: bool = True
    revision: str | None = Field(None, description="Pinned commit sha of a Hub dataset.")
    splits: dict[str, str] = Field(default_factory=dict, description="Split name → file under workspace/data/.")
    train_split: DatasetSplit | None = None
    valid_split: DatasetSplit | None = None
    test_split: DatasetSplit | None = None


class TaskConfig(BaseModel):
    """`task.yaml`. MLGym's TaskConfig fields, then synthscale's: metric, direction, requirements, gpus, …"""

    model_config = _FILE_CONFIG
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    name: str
    description: str = Field(description="Shown to the agent; `{dataset_docs}` is filled from the datasets.")
    dataset_configs: list[str] = Field(default_factory=list, description="Dataset YAML files, relative to the task folder.")
    task_entrypoint: TaskEntrypoint = "CSVSubmissionTasks"
    training_timeout: int = Field(1800, gt=0, description="Seconds for commands that run python/training.")
    requirements_path: str | None = None
    use_generic_conda: bool = True
    starter_code: list[str] = Field(default_factory=list, description="Workspace-relative files the agent starts with.")
    baseline_paths: list[str] = Field(default_factory=list)
    baseline_scores: list[dict[str, float]] = Field(default_factory=list, description="First entry is the baseline.")
    baseline_test_scores: list[dict[str, float]] = Field(
        default_factory=list,
        description="separate grading: the baseline's test-split metrics, aligned with baseline_scores (validation).",
    )
    sample_submission: str | None = None
    evaluation_paths: list[str] = Field(default_factory=lambda: ["evaluate.py"])
    evaluation_read_only: bool = True
    read_only_paths: list[str] = Field(
        default_factory=list, description="Workspace-relative paths the sandbox mounts read-only (imported data/)."
    )
    memory_path: str | None = None
    # synthscale's fields
    metric: str = Field(description="Primary metric key in the grader's output.")
    direction: Direction = "max"
    requirements: list[str] = Field(default_factory=list, description="Python packages the task's code imports.")
    gpus: int = Field(0, ge=0)
    submission_path: str | None = Field(
        None, description="Workspace-relative artefact; defaults by entrypoint (submission.csv, *.yaml, the edited .py)."
    )
    grading: Literal["separate", "mlgym"] = Field(
        "separate", description="separate: graded outside the agent's sandbox on held-out labels; mlgym: MLGym's way."
    )
    metric_ranges: dict[str, tuple[float | None, float | None]] = Field(
        default_factory=dict, description="Plausible [low, high] of each metric (null: unbounded on that side); a "
                                          "grader's value outside it is a grading error, never a score.")


class TaskSpec(BaseModel):
    """A loaded task folder."""

    model_config = ConfigDict(extra="forbid")
    root: Path
    config: TaskConfig
    datasets: list[DatasetConfig] = Field(default_factory=list)
    _content_hash: str | None = PrivateAttr(None)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def workspace_dir(self) -> Path:
        return self.root / "workspace"

    @property
    def grader_dir(self) -> Path:
        return self.root / "grader"

    @property
    def read_only_paths(self) -> list[str]:
        """Workspace paths the agent may not change: config.read_only_paths (an imported task's data/), then
        MLGym's evaluation files when marked read-only."""
        paths = list(self.config.read_only_paths)
        if self.config.grading == "mlgym" and self.config.evaluation_read_only:
            paths += [p for p in self.config.evaluation_paths if p not in paths]
        return paths

    @property
    def baseline(self) -> dict[str, float]:
        return dict(self.config.baseline_scores[0]) if self.config.baseline_scores else {}

    @property
    def baseline_test(self) -> dict[str, float]:
        """The baseline's test metrics (separate grading); for mlgym grading the one dict is both."""
        if self.config.baseline_test_scores:
            return dict(self.config.baseline_test_scores[0])
        return self.baseline if self.config.grading == "mlgym" else {}

    def content_hash(self) -> str:
        """Hash of everything that defines the task (configs, workspace, grader), for episode ids.

        Read once per loaded task (it reads every byte of the folder) and kept: a task folder is not edited
        while a stage uses it, and a changed folder is a new task (load it again)."""
        if self._content_hash is None:
            self._content_hash = self._hash_folder()
        return self._content_hash

    def _hash_folder(self) -> str:
        h = hashlib.sha256()
        for base in (self.root / "task.yaml", self.workspace_dir, self.grader_dir):
            files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []
            for p in files:
                h.update(str(p.relative_to(self.root)).encode())
                h.update(p.read_bytes())
        return h.hexdigest()[:16]
