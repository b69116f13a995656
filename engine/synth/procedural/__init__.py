"""The offline procedural task catalogue: draws parameterised tasks from six families built on bundled data.

No model and no network: the data ship inside scikit-learn and statsmodels, the environments inside gymnasium,
the games are sampled. Each family samples parameters (`space`), builds a task folder's parts (`build`) with a
working baseline, a grader and improvement moves for the heuristic policy, and estimates how many distinct
parameterisations it has (`count`). A build that cannot make a sound task (the baseline cannot be improved twice,
or a constant submission would beat it) raises TaskError and the draw takes other parameters.
"""

from __future__ import annotations

import hashlib
import logging
import random
import textwrap
from typing import Any

from pydantic import BaseModel, ConfigDict

from engine.config import SynthConfig
from engine.errors import ConfigError, TaskError
from engine.synth.procedural import (control, digits_classification, matrix_games, tabular_supervised,
                                     timeseries_forecasting)
from engine.synth.procedural.common import Family, Params, check_mlgym_free, params_key
from engine.synth.records import ProposalRecord, Provenance, TopicRecord
from engine.tasks.folder import TaskParts

log = logging.getLogger(__name__)

FAMILIES: dict[str, Family] = {f.name: f for f in (
    tabular_supervised.CLASSIFICATION_FAMILY, tabular_supervised.REGRESSION_FAMILY, timeseries_forecasting.FAMILY,
    digits_classification.FAMILY, control.FAMILY, matrix_games.FAMILY)}
MAX_TRIES_PER_TASK = 60

__all__ = ["FAMILIES", "Family", "ProceduralSource", "ProceduralTask", "build_task", "select_families"]


class ProceduralTask(BaseModel):
    """One drawn task: the proposal row, the folder's parts ready for `save_task`, and the family parameters."""

    model_config = ConfigDict(extra="forbid")
    family: str
    params: dict[str, Any]
    proposal: ProposalRecord
    parts: TaskParts


def select_families(names: list[str] | None) -> list[str]:
    """The families to draw from, in catalogue order; ConfigError for an unknown name."""
    if names is None:
        return list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise ConfigError(f"synth.families: unknown procedural famil{'y' if len(unknown) == 1 else 'ies'} "
                          f"{unknown}; known: {sorted(FAMILIES)}")
    if not names:
        raise ConfigError(f"synth.families is empty; list some of {sorted(FAMILIES)} or set it to null for all")
    return [n for n in FAMILIES if n in set(names)]


def topic_of(family: Family) -> TopicRecord:
    return TopicRecord(topic_id=f"procedural-{family.name}", topic=family.topic, domain=family.domain)


def build_task(family_name: str, params: Params) -> ProceduralTask:
    """Build one task of a family from its parameters (raises TaskError when they make no sound task)."""
    family = FAMILIES[family_name]
    parts = family.build(params)
    check_mlgym_free(parts.config.description + parts.config.name)
    _headline(parts)
    topic = topic_of(family)
    proposal = ProposalRecord(
        proposal_id=params_key(family.name, params), topic_id=topic.topic_id, topic=topic.topic, domain=topic.domain,
        name=parts.config.name, description=parts.config.description, task_type=family.task_type,
        metric=parts.config.metric, direction=parts.config.direction, needs_dataset=False)
    parts.provenance = Provenance(source="procedural", topic=topic, proposal=proposal,
                                  params={"family": family.name, **params}).model_dump(mode="json")
    return ProceduralTask(family=family.name, params=params, proposal=proposal, parts=parts)


def _wrap(text: str, width: int) -> str:
    out = []
    for line in text.split("\n"):
        indent = "  " if line.startswith("- ") else ""
        out.extend(textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False) or [""])
    return "\n".join(out)


def _headline(parts: TaskParts) -> None:
    """Open the description with a line naming the task, and wrap every other line (dataset docs too) shorter.

    The heuristic policy recognises a task by the longest of the first lines of its text, so that line must be
    the one that names this task alone.
    """
    cfg = parts.config
    head = f"Task {cfg.id}: {cfg.name}."
    width = max(40, len(head) - 1)
    parts.config = cfg.model_copy(update={"description": f"{head}\n{_wrap(cfg.description, width)}"})
    parts.datasets = [d.model_copy(update={"description": _wrap(d.description, width)}) for d in parts.datasets]


def _family_rng(seed: int, family: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{seed}|{family}".encode()).hexdigest()[:16], 16))


class ProceduralSource:
    """The procedural catalogue as a source of proposals: deterministic, distinct draws, round-robin across families."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.families = select_families(cfg.families)

    def draw(self, n: int, seed: int) -> list[ProceduralTask]:
        """`n` tasks, family by family in turn; equal (n, seed) give equal tasks, and no two share parameters."""
        if n < 0:
            raise ConfigError(f"cannot draw {n} tasks; ask for zero or more")
        rngs = {f: _family_rng(seed, f) for f in self.families}
        seen: set[str] = set()
        tasks: list[ProceduralTask] = []
        for i in range(n):
            name = self.families[i % len(self.families)]
            tasks.append(self._draw_one(name, rngs[name], seen))
        return tasks

    def _draw_one(self, name: str, rng: random.Random, seen: set[str]) -> ProceduralTask:
        family = FAMILIES[name]
        for _ in range(MAX_TRIES_PER_TASK):
            params = family.space(rng)
            key = params_key(name, params)
            if key in seen:
                continue
            seen.add(key)
            try:
                return build_task(name, params)
            except TaskError as e:
                log.info("procedural %s: skipped parameters %s: %s", name, params, e)
        raise TaskError(f"procedural family {name}: no new sound task after {MAX_TRIES_PER_TASK} tries; "
                        "draw fewer tasks or add parameters to the family")

    def proposals(self, n: int) -> list[ProposalRecord]:
        """The proposals of `draw(n, cfg.seed)`."""
        return [t.proposal for t in self.draw(n, self.cfg.seed)]
