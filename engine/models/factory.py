"""Builds the model a rollout worker plays with, and names the policy recorded on its trajectories."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.config import RunConfig
from engine.models import make_model
from engine.protocols import ChatModel

if TYPE_CHECKING:
    from engine.rollout.worker import TaskCache


def make_policy_model(cfg: RunConfig, tasks: TaskCache) -> tuple[ChatModel, str]:
    """`cfg.model` as (model, policy): an OpenAI-compatible endpoint plays as "mlgym-agent"; the offline heuristic
    policy ("heuristic") needs every task's improvement moves, so it loads them all from `tasks`."""
    if cfg.model.provider == "heuristic":
        from engine.agent.heuristic import HeuristicModel

        return HeuristicModel(tasks.all()), "heuristic"
    return make_model(cfg.model), "mlgym-agent"
