"""Live rollout series through `ray.util.metrics` (scraped from each node's metrics export port; Ray adds the
`ray_` prefix and `_total` to counters). `cluster/grafana/synthscale-rollouts.json` charts them."""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

from engine.records import StepRecord, TrajectoryRecord

DURATION_BOUNDARIES_S = [1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400]
STEP_BOUNDARIES_S = [0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800]


class RayRolloutMetrics:
    """The `RolloutObserver` of a rollout worker: counters, gauges and histograms tagged with the run id."""

    def __init__(self, run_id: str, model: str, worker_id: str):
        self.tags = {"run_id": run_id}
        self.model_tags = {"run_id": run_id, "model": model}
        self.trajectories = Counter("synthscale_trajectories", "Finished trajectories by exit status.",
                                    tag_keys=("run_id", "model", "exit_status"))
        self.infra = Counter("synthscale_infra_errors", "Episode tries that failed for the cluster's reasons.",
                             tag_keys=("run_id", "kind"))
        self.steps = Counter("synthscale_steps", "Agent steps taken.", tag_keys=("run_id", "model"))
        self.tokens = Counter("synthscale_model_tokens", "Model tokens, in (prompt) and out (completion).",
                              tag_keys=("run_id", "model", "direction"))
        self.cost = Counter("synthscale_cost_usd", "Model cost in USD.", tag_keys=("run_id", "model"))
        self.active = Gauge("synthscale_active_containers", "Task containers a worker holds.",
                            tag_keys=("run_id", "worker"))
        self.episode_s = Histogram("synthscale_episode_duration_s", "Episode wall time.",
                                   boundaries=DURATION_BOUNDARIES_S, tag_keys=("run_id",))
        self.step_s = Histogram("synthscale_step_duration_s", "Step time: model call or command execution.",
                                boundaries=STEP_BOUNDARIES_S, tag_keys=("run_id", "phase"))
        self.gpu_held = Counter("synthscale_gpu_seconds_held", "GPU-seconds held by task containers.",
                                tag_keys=("run_id",))
        self.gpu_busy = Counter("synthscale_gpu_seconds_busy",
                                "GPU-seconds of containers running commands (not waiting for the model).",
                                tag_keys=("run_id",))
        self.worker_tags = {"run_id": run_id, "worker": worker_id}
        self.active.set(0, tags=self.worker_tags)

    def step(self, step: StepRecord) -> None:
        self.steps.inc(1, tags=self.model_tags)
        self.tokens.inc(step.prompt_tokens, tags={**self.model_tags, "direction": "in"})
        self.tokens.inc(step.completion_tokens, tags={**self.model_tags, "direction": "out"})
        if step.cost_usd:
            self.cost.inc(step.cost_usd, tags=self.model_tags)
        self.step_s.observe(step.model_latency_s, tags={**self.tags, "phase": "model"})
        self.step_s.observe(step.execution_time_s, tags={**self.tags, "phase": "exec"})

    def episode(self, rec: TrajectoryRecord) -> None:
        self.trajectories.inc(1, tags={**self.model_tags, "exit_status": rec.exit_status or "unknown"})
        self.episode_s.observe(rec.wall_time_s, tags=self.tags)

    def infra_error(self, kind: str) -> None:
        self.infra.inc(1, tags={**self.tags, "kind": kind})

    def containers(self, active: int) -> None:
        self.active.set(active, tags=self.worker_tags)

    def gpu_seconds(self, held_s: float, busy_s: float) -> None:
        if held_s > 0:
            self.gpu_held.inc(held_s, tags=self.tags)
        if busy_s > 0:
            self.gpu_busy.inc(busy_s, tags=self.tags)


class DriverMetrics:
    """The stage's series, exported from the driver: a `StageObserver` of `RolloutStage`."""

    def __init__(self, run_id: str):
        self.tags = {"run_id": run_id}
        self.queued_gauge = Gauge("synthscale_queued_episodes", "Episodes not yet handed to a worker.",
                                  tag_keys=("run_id",))

    def queued(self, episodes: int) -> None:
        self.queued_gauge.set(episodes, tags=self.tags)

    def acknowledged(self, scheduler, result) -> None:
        pass
