"""Grounds a proposal in real data: Hub check, contamination guard, materialisation into task files.

Reads the Hub (or a loopback hub); writes `<dest>/workspace/data/*.csv` and `<dest>/grader/labels_*.csv`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from engine.config import RunConfig
from engine.errors import DatasetRejectedError
from engine.synth.codegen import DataFile, DataSummary
from engine.synth.guards.contamination import ContaminationIndex, check_contamination
from engine.synth.hub import HubDatasetValidator, describe_samples
from engine.synth.materialise import materialise
from engine.synth.records import DatasetCheck, ProposalRecord, RejectRecord
from engine.tasks.spec import DatasetConfig


class Grounding(BaseModel):
    """The proposal's data, ready for code generation, or the reject that stopped it."""

    model_config = ConfigDict(extra="forbid")
    check: DatasetCheck | None = None
    reject: RejectRecord | None = None
    summary: DataSummary | None = None
    workspace_files: dict[str, Path] = Field(default_factory=dict, description="data/train.csv → host file")
    grader_files: dict[str, Path] = Field(default_factory=dict, description="labels_test.csv → host file")
    dataset_config: DatasetConfig | None = None
    image_packages: list[str] = Field(default_factory=list)


def ground(proposal: ProposalRecord, cfg: RunConfig, dest: Path, *, seed: int) -> Grounding:
    """Check the dataset on the Hub, guard against contamination, then download and split it into `dest`."""
    synth = cfg.synth
    g = Grounding(image_packages=list(cfg.sandbox.image_packages))
    if not proposal.needs_dataset or proposal.dataset is None:
        g.reject = RejectRecord(stage="dataset", item_id=proposal.proposal_id, reason="unsupported_task_type",
                                detail="tasks without a dataset (games, simulated control) are generated only by "
                                       "the procedural source for now")
        return g
    index = _index(str(synth.contamination_index)) if synth.contamination_index else None
    check = HubDatasetValidator(synth.hub).check(proposal)
    g.check = check
    if not check.ok:
        g.reject = RejectRecord(stage="dataset", item_id=proposal.proposal_id, reason=check.reason or "dataset",
                                detail=check.detail)
        return g
    guard = check_contamination(proposal, check.sample_rows, index,
                                description_overlap_max=synth.description_overlap_max)
    if guard is not None:
        g.reject = guard
        return g
    try:
        data = materialise(check, proposal, synth.hub, dest, seed=seed, cache_dir=dest.parent / "_hf_cache")
    except DatasetRejectedError as e:
        g.reject = RejectRecord(stage="materialise", item_id=proposal.proposal_id, reason=e.reason, detail=e.detail)
        return g
    g.workspace_files = {str(p.relative_to(dest / "workspace")): p for p in sorted((dest / "workspace").rglob("*.csv"))}
    g.grader_files = {str(p.relative_to(dest / "grader")): p for p in sorted((dest / "grader").rglob("*.csv"))}
    g.summary = DataSummary(files=[_describe(dest, loc, rel) for loc, files in
                                   (("workspace", g.workspace_files), ("grader", g.grader_files)) for rel in files],
                            id_column=data.id_column, target_column=data.target)
    g.dataset_config = DatasetConfig(
        name=check.hf_id, data_path=check.hf_id, is_local=False, revision=check.revision,
        description=f"{check.hf_id} (config {check.config or 'default'}, revision {check.revision}, licence "
                    f"{check.licence}). Sample rows:\n{describe_samples(check, synth.hub.sample_rows)}",
        splits={name: f"{name}.csv" for name in ("train", "validation", "test")},
    )
    return g


@functools.lru_cache(maxsize=4)
def _index(path: str) -> ContaminationIndex:
    """The row-hash index, read once per process rather than once per proposal."""
    return ContaminationIndex.load(path)


def _describe(dest: Path, location: str, rel: str) -> DataFile:
    frame = pd.read_csv(dest / location / rel)
    return DataFile(location=location, path=rel, columns=[str(c) for c in frame.columns], rows=len(frame),
                    sample_rows=frame.head(3).to_dict(orient="records"))
