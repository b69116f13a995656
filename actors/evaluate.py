"""The evaluation stage on Ray: for each method of `eval.methods`, serve it if it is a checkpoint (ModelServer,
episodes routed sticky), run `eval.runs_per_task` rollouts of every suite task through the rollout engine into
`RUN/eval/runs/<method>/`, then score everything into `RUN/eval/` (scores.parquet, aup.csv, tables,
profile.png, report.html, manifest.json last)."""

from __future__ import annotations

import logging
import time

from actors.model_server import start_model_servers, stop_model_servers
from actors.rollout import RolloutDriver
from engine.artifacts import begin_stage, write_config, write_manifest
from engine.config import EvalMethod, ModelConfig, RunConfig
from engine.errors import ConfigError, EngineError
from engine.evaluate.report import EvalReport, build_report
from engine.evaluate.scores import runs_from_trajectories
from engine.records import Manifest
from engine.tasks.spec import TaskSpec
from engine.trajectories.store import read_trajectories

log = logging.getLogger(__name__)


class RoutedModelFactory:
    """A rollout worker's model for a served method: one client per server, episodes routed sticky."""

    def __init__(self, model_cfg: ModelConfig, base_urls: list[str]):
        self.model_cfg = model_cfg
        self.base_urls = base_urls

    def __call__(self, cfg: RunConfig, tasks: list[TaskSpec]):
        from engine.models.routing import make_routed_model

        return make_routed_model(self.model_cfg, self.base_urls), "mlgym-agent"


def method_run_config(cfg: RunConfig, method: EvalMethod, tasks: list[TaskSpec], model: ModelConfig) -> RunConfig:
    """The rollout config of one method's runs: its model, the suite, R runs per task, its own run dir."""
    return cfg.model_copy(update={
        "run_dir": f"{cfg.run_dir.rstrip('/')}/eval/runs/{method.name}",
        "run_id": f"{cfg.run_id}-eval-{method.name}",
        "model": model,
        "episodes": cfg.episodes.model_copy(update={
            "tasks": [t.root for t in tasks], "episodes_per_task": cfg.eval.runs_per_task, "seed": cfg.eval.seed}),
    })


def _served_model(method: EvalMethod, base_url: str) -> ModelConfig:
    assert method.serve is not None
    base = method.client or ModelConfig(provider="openai", name=method.serve.name, unknown_price="zero",
                                        max_retries=2)
    return base.model_copy(update={"provider": "openai", "name": method.serve.name, "base_url": base_url})


def run_method(cfg: RunConfig, method: EvalMethod, tasks: list[TaskSpec], *, start_over: bool) -> RunConfig:
    """All runs of one method (served for the duration if it is a checkpoint); returns its rollout config."""
    if method.model is not None:
        mcfg = method_run_config(cfg, method, tasks, method.model)
        manifest = RolloutDriver(mcfg, tasks).run(start_over=start_over)
    else:
        assert method.serve is not None
        servers = start_model_servers(method.serve, method.servers)
        try:
            urls = [s.base_url for s in servers]
            model = _served_model(method, urls[0])
            mcfg = method_run_config(cfg, method, tasks, model)
            manifest = RolloutDriver(mcfg, tasks, model_factory=RoutedModelFactory(model, urls)).run(
                start_over=start_over)
        finally:
            stop_model_servers(servers)
    if manifest is None:
        raise EngineError(f"eval method {method.name}: its rollouts stopped early (budget or cancel); "
                          "re-run `synthscale eval` to resume")
    return mcfg


def run_eval(cfg: RunConfig, tasks: list[TaskSpec], *, start_over: bool = False) -> tuple[Manifest, EvalReport]:
    """Every method's runs, then the report. Methods already run are resumed (their stored runs are kept)."""
    if not cfg.eval.methods:
        raise ConfigError("eval.methods is empty; list the models to compare (see `synthscale config`)")
    started = time.time()
    stage_dir = f"{cfg.run_dir.rstrip('/')}/eval"
    begin_stage(stage_dir, "eval", cfg.eval_hash(), start_over=start_over)
    write_config(stage_dir, cfg)
    baselines = {t.id: t.baseline_test[t.config.metric] for t in tasks
                 if t.config.grading != "mlgym" and t.config.metric in t.baseline_test}
    frames, cost = [], 0.0
    for method in cfg.eval.methods:
        log.info("eval %s: method %s", cfg.run_id, method.name)
        mcfg = run_method(cfg, method, tasks, start_over=start_over)
        records = read_trajectories(mcfg.run_dir)
        cost += sum(r.cost_usd for r in records)
        frames.append(runs_from_trajectories(records, method_of=lambda r, n=method.name: n, baselines=baselines))
    import pandas as pd

    runs = pd.concat(frames, ignore_index=True)
    report = build_report(runs, stage_dir, baseline=cfg.eval.baseline, n_resamples=cfg.eval.bootstrap_resamples,
                          seed=cfg.eval.seed)
    manifest = Manifest(stage="eval", run_id=cfg.run_id, config_hash=cfg.eval_hash(), wall_time_s=time.time() - started,
                        cost_usd=cost, counts={"methods": len(cfg.eval.methods), "tasks": len(tasks),
                                              "runs": int(len(runs))})
    write_manifest(stage_dir, manifest)
    return manifest, report
