"""The evaluation stage: reads the suite's task folders (and imports MLGym's into RUN/eval/suite/), runs every method
of `eval.methods` `eval.runs_per_task` times per task through the rollout stage into RUN/eval/runs/<method>/,
then writes RUN/eval/ (scores.parquet, aup.csv with intervals, tables, profile.png, report.html, manifest last).

A method is an endpoint (`model`: an API teacher, a running server, the heuristic policy) or a checkpoint
(`serve`) served for the duration by a `ServerLauncher` (Ray actors on a cluster, processes locally), with
each episode routed to one server (sticky). Where the rollouts run is the caller's `make_pool`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from engine.artifacts import begin_stage, resolve, run_path, write_config, write_manifest
from engine.config import EvalMethod, ModelConfig, RunConfig
from engine.errors import ConfigError, EngineError, TaskError
from engine.evaluate.report import EvalReport, build_report
from engine.evaluate.scores import runs_from_trajectories
from engine.protocols import ChatModel, ServerLauncher
from engine.records import Manifest
from engine.rollout.plan import TaskRef
from engine.rollout.stage import PoolFactory, RolloutStage
from engine.rollout.worker import TaskCache
from engine.serving.launch import ServeConfig
from engine.tasks.folder import load_tasks
from engine.tasks.spec import TaskSpec
from engine.trajectories.store import read_trajectories

log = logging.getLogger(__name__)


class RoutedModelFactory:
    """A rollout worker's model for a served method: one client per server, episodes routed sticky."""

    def __init__(self, model_cfg: ModelConfig, base_urls: list[str]):
        self.model_cfg = model_cfg
        self.base_urls = base_urls

    def __call__(self, cfg: RunConfig, tasks: TaskCache) -> tuple[ChatModel, str]:
        from engine.models.routing import make_routed_model

        return make_routed_model(self.model_cfg, self.base_urls), "mlgym-agent"


def eval_suite(cfg: RunConfig) -> list[TaskSpec]:
    """The evaluation's tasks: `eval.tasks` plus MLGym's tasks imported from `eval.mlgym_dir` into RUN/eval/suite/."""
    tasks = load_tasks(list(cfg.eval.tasks)) if cfg.eval.tasks else []
    if cfg.eval.mlgym_dir is not None:
        from engine.tasks.mlgym import MLGYM_METRICS, available_task_ids, import_mlgym_task

        fs, base = resolve(cfg.run_dir)
        if fs.type_name != "local":
            raise ConfigError(f"eval.mlgym_dir: run_dir {cfg.run_dir} is not local; rollout workers need the imported "
                              "tasks on a shared filesystem: import them with `synthscale task import-mlgym` and "
                              "list the folders in eval.tasks")
        suite = Path(base) / "eval" / "suite"
        # by default MLGym-Bench's 13 tasks, not the variants beside them (the L1 ones, titanic, …)
        wanted = cfg.eval.mlgym_tasks or sorted(t for t in available_task_ids(cfg.eval.mlgym_dir) if t in MLGYM_METRICS)
        for task_id in wanted:
            try:
                tasks.append(import_mlgym_task(cfg.eval.mlgym_dir, task_id, suite))
            except TaskError as e:
                if cfg.eval.mlgym_tasks:
                    raise
                log.warning("eval %s: MLGym task %s left out: %s", cfg.run_id, task_id, e)
    if not tasks:
        raise ConfigError("the evaluation suite is empty: list task folders in eval.tasks, or set eval.mlgym_dir")
    return tasks


def method_run_config(cfg: RunConfig, method: EvalMethod, tasks: list[TaskRef], model: ModelConfig) -> RunConfig:
    """The rollout config of one method's runs: its model, the suite, R runs per task, its own run dir."""
    return cfg.model_copy(update={
        "run_dir": run_path(cfg.run_dir, "eval", "runs", method.name),
        "run_id": f"{cfg.run_id}-eval-{method.name}",
        "model": model,
        "episodes": cfg.episodes.model_copy(update={
            "tasks": [Path(t.root) for t in tasks], "episodes_per_task": cfg.eval.runs_per_task,
            "seed": cfg.eval.seed}),
    })


def served_model(method: EvalMethod, serve: ServeConfig, base_url: str) -> ModelConfig:
    """The client settings of a served method, pointed at one of its servers."""
    base = method.client or ModelConfig(provider="openai", name=serve.name, unknown_price="zero", max_retries=2)
    return base.model_copy(update={"provider": "openai", "name": serve.name, "base_url": base_url})


def run_method(cfg: RunConfig, method: EvalMethod, tasks: list[TaskRef], *, make_pool: PoolFactory,
               servers: ServerLauncher, start_over: bool) -> RunConfig:
    """All runs of one method (served for the duration if it is a checkpoint); returns its rollout config."""
    if method.model is not None:
        mcfg = method_run_config(cfg, method, tasks, method.model)
        manifest = RolloutStage(mcfg, tasks, make_pool(mcfg, tasks, None)).run(start_over=start_over)
    else:
        serve = method.serve_config(servers.gpus())
        try:
            urls = servers.start(serve, method.servers)
            model = served_model(method, serve, urls[0])
            mcfg = method_run_config(cfg, method, tasks, model)
            pool = make_pool(mcfg, tasks, RoutedModelFactory(model, urls))
            manifest = RolloutStage(mcfg, tasks, pool).run(start_over=start_over)
        finally:
            servers.stop()
    if manifest is None:
        raise EngineError(f"eval method {method.name}: its rollouts stopped early (budget or cancel); "
                          "re-run `synthscale eval` to resume")
    return mcfg


def run_eval(cfg: RunConfig, tasks: list[TaskSpec], *, make_pool: PoolFactory, servers: ServerLauncher,
             start_over: bool = False) -> tuple[Manifest, EvalReport]:
    """Every method's runs, then the report. Methods already run are resumed (their stored runs are kept)."""
    if not cfg.eval.methods:
        raise ConfigError("eval.methods is empty; list the models to compare (see `synthscale config`)")
    started = time.time()
    stage_dir = run_path(cfg.run_dir, "eval")
    begin_stage(stage_dir, "eval", cfg.stage_hash("eval"), start_over=start_over, inputs=cfg.stage_inputs("eval"))
    write_config(stage_dir, cfg)
    refs = [TaskRef.of(t) for t in tasks]
    baselines = {t.id: t.baseline_test[t.config.metric] for t in tasks
                 if t.config.grading != "mlgym" and t.config.metric in t.baseline_test}
    frames, cost = [], 0.0
    for method in cfg.eval.methods:
        log.info("eval %s: method %s", cfg.run_id, method.name)
        mcfg = run_method(cfg, method, refs, make_pool=make_pool, servers=servers, start_over=start_over)
        records = read_trajectories(mcfg.run_dir)
        cost += sum(r.cost_usd for r in records)
        frames.append(runs_from_trajectories(records, method_of=lambda r, n=method.name: n, baselines=baselines))
    import pandas as pd

    runs = pd.concat(frames, ignore_index=True)
    report = build_report(runs, stage_dir, baseline=cfg.eval.baseline, n_resamples=cfg.eval.bootstrap_resamples,
                          seed=cfg.eval.seed, submission=cfg.eval.best_submission)
    manifest = Manifest(stage="eval", run_id=cfg.run_id, config_hash=cfg.stage_hash("eval"),
                        wall_time_s=time.time() - started, cost_usd=cost,
                        counts={"methods": len(cfg.eval.methods), "tasks": len(tasks), "runs": int(len(runs))})
    write_manifest(stage_dir, manifest)
    return manifest, report
