"""The records the rollout stage and its workers exchange: leases, what a worker reports of them, and the workers.

Plain pydantic records, so that they cross process and Ray boundaries unchanged and mean the same to the
in-process pool, the Ray pool and the simulator (`engine.protocols.WorkerPool`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Lease(BaseModel):
    """Episodes of one task handed to one worker; re-issued unchanged when lost."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    lease_id: str
    task_id: str
    seeds: list[int]


class EpisodeOutcome(BaseModel):
    """What the scheduler needs to know about one finished episode."""

    model_config = ConfigDict(extra="forbid")
    seed: int
    episode_id: str = ""
    exit_status: str = ""
    infra_error: str | None = None
    cost_usd: float = 0.0
    wall_time_s: float = 0.0


class LeaseResult(BaseModel):
    """A worker's acknowledgement of a lease: its episodes' outcomes and the shard that holds them."""

    model_config = ConfigDict(extra="forbid")
    lease_id: str
    worker_id: str = ""
    outcomes: list[EpisodeOutcome] = Field(default_factory=list)
    replayed: int = Field(0, ge=0, description="Episodes of the lease found already stored (not played again).")
    budget_exhausted: bool = Field(False, description="The stage's budget ran out during the lease.")



class WorkerSpec(BaseModel):
    """One rollout worker the stage asks a pool to start."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    worker_id: str
    gpu: bool = Field(description="A GPU worker (owns `rollout.gpus_per_worker` GPUs) or a CPU worker.")
    slots: int = Field(gt=0, description="Leases it plays at once (each in its own sandbox).")


class WorkerInfo(BaseModel):
    """What a started worker reports: who plays (all workers of a stage must agree) and on what."""

    model_config = ConfigDict(extra="forbid")
    worker_id: str
    model: str
    policy: str
    gpu_ids: list[str] = Field(default_factory=list)
    node: str = ""


class LeaseDone(BaseModel):
    """A lease handed to a pool came back: acknowledged with a result, or lost with the reason."""

    model_config = ConfigDict(extra="forbid")
    ticket: int = Field(description="The number the stage gave the lease when it handed it out.")
    result: LeaseResult | None = None
    error: str | None = Field(None, description="Why the lease was lost (result is None).")
    worker_lost: bool = Field(False, description="The worker itself died (it restarts; give it time to).")
