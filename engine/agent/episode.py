"""Runs one agent episode: model turns, environment steps and scoring, written up as a `TrajectoryRecord`."""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from engine.agent.environment import AgentEnvironment
from engine.agent.history import build_prompt
from engine.agent.observation import (
    EMPTY_OUTPUT, FORMAT_ERROR, SUBMISSION_NOT_FOUND, SUBMITTED, blocked_program, blocklist_message, render_footer,
    validation_observation,
)
from engine.agent.parser import FormatError, parse_response
from engine.agent.scoring import EpisodeScorer
from engine.config import AgentConfig, SamplingConfig
from engine.errors import BudgetExceededError, GradingError, ModelError, SandboxError, TaskError
from engine.prompting import MLGymPrompts, load_mlgym_prompts, render
from engine.redact import redact
from engine.protocols import ChatModel, Completion, Message, SampleKey, SamplingParams, Sandbox
from engine.records import HistoryConfig, ScoreRecord, StepRecord, TrajectoryRecord
from engine.tasks.artefact import resolve_artefact
from engine.tasks.folder import describe
from engine.tasks.grading import TaskGrader
from engine.tasks.spec import TaskSpec

log = logging.getLogger(__name__)


def episode_id(task_hash: str, model: str, policy: str, seed: int) -> str:
    """Deterministic id of (task content, model/policy, seed): runs of several models never collide."""
    return hashlib.sha256(f"{task_hash}|{model}|{policy}|{seed}".encode()).hexdigest()[:20]


def estimate_tokens(messages: list[Message]) -> int:
    """A cheap prompt-size estimate (≈4 characters a token) for the context budget."""
    return sum(len(m["content"]) for m in messages) // 4 + 4 * len(messages)


@dataclass
class _Totals:
    tokens_sent: int = 0
    tokens_received: int = 0
    api_calls: int = 0
    cost_usd: float = 0.0

    def add(self, c: Completion) -> None:
        self.tokens_sent += c.usage.prompt_tokens
        self.tokens_received += c.usage.completion_tokens
        self.api_calls += 0 if c.cached else 1
        self.cost_usd += c.cost_usd


MLGYM_WORKDIR = "/home/agent/workspace"
"""MLGym's workspace, the directory the step-0 footer names when no sandbox is given."""


def mlgym_prompts(cfg: AgentConfig) -> MLGymPrompts | None:
    """MLGym's prose templates when `cfg.mlgym_config` names an MLGym agent config, else None (our prose)."""
    if cfg.mlgym_config is None:
        return None
    return load_mlgym_prompts(cfg.mlgym_config, {"WINDOW": cfg.window_lines, "OVERLAP": cfg.scroll_overlap})


def initial_messages(task: TaskSpec, cfg: AgentConfig, workdir: str = MLGYM_WORKDIR,
                     prompts: MLGymPrompts | None = None) -> list[Message]:
    """The system message and the task message, which ends with the step-0 footer as MLGym's does. With
    `prompts` (MLGym's own templates) they are filled as MLGym fills them; else from prompts/agent/."""
    prompts = prompts if prompts is not None else mlgym_prompts(cfg)
    if prompts is not None:
        values = {**task.config.model_dump(), "description": describe(task),
                  "training_timeout": int(_training_timeout(task, cfg))}
        state = {"current_step": 0, "remaining_steps": cfg.max_steps, "open_file": "n/a", "working_dir": workdir}
        try:
            return [{"role": "system", "content": prompts.system(values)},
                    {"role": "user", "content": prompts.task({**values, **state})}]
        except (KeyError, IndexError, ValueError) as e:
            raise TaskError(f"{cfg.mlgym_config}: a template placeholder cannot be filled ({e!r}); the MLGym config "
                            "expects a task field this task does not have") from None
    system = render("agent/system.j2", max_steps=cfg.max_steps, command_timeout_s=cfg.command_timeout_s,
                    training_timeout_s=_training_timeout(task, cfg), window_lines=cfg.window_lines,
                    scroll_lines=cfg.window_lines - cfg.scroll_overlap, max_format_errors=cfg.max_format_errors)
    task_text = render("agent/task.j2", task=task.config, description=describe(task),
                       extras=cfg.profile == "synthscale", baseline=task.baseline, artefact=_artefact_hint(task),
                       baseline_code=_baseline_code(task))
    footer = render_footer(step=0, remaining_steps=cfg.max_steps, open_file=None, cwd=workdir)
    return [{"role": "system", "content": system}, {"role": "user", "content": task_text.rstrip("\n") + "\n" + footer}]


class MLGymScoreText:
    """The `Scorer` of the mlgym profile: grades through an `EpisodeScorer` and answers with MLGym's texts
    (validate: artefact, baseline and metrics; submit: "Exited (submit)")."""

    def __init__(self, scorer: EpisodeScorer, workdir: str):
        self.scorer = scorer
        self.workdir = workdir

    def score(self, kind: Literal["validate", "submit"], step: int) -> str:
        record = self.scorer.record(kind, step)
        if kind == "submit":
            return SUBMITTED
        if record.error is None:
            metrics = record.validation if record.validation is not None else record.test
            artefact = posixpath.join(self.workdir, record.artefact) if record.artefact else self.workdir
            return validation_observation(artefact, self.scorer.task.baseline or None, metrics or {})
        if record.error.startswith("submission_not_found"):
            return SUBMISSION_NOT_FOUND
        detail = record.error.removeprefix("evaluation_format_error:").strip()
        return (f"Failed to decode metrics from evaluation script. Output:\n---\n{detail}\n---\n"
                "Please make sure the evaluation script prints the metrics in json format.")


def run_episode(
    task: TaskSpec, model: ChatModel, sandbox: Sandbox, grader: TaskGrader, cfg: AgentConfig, *,
    seed: int, run_id: str, sampling: SamplingConfig, policy: str = "mlgym-agent",
    time_limit_s: float | None = None, on_step: Callable[[StepRecord], None] | None = None,
) -> TrajectoryRecord:
    """Play one episode on a sandbox already holding the starter workspace. Agent failures are data; a
    sandbox or model-endpoint failure sets `infra_error` so the caller retries the episode.

    `time_limit_s` auto-submits (`exit_time`) once the episode has run that long, checked between steps;
    `on_step` sees each step record as it is made (live metrics)."""
    started = time.time()
    task_hash = task.content_hash()
    ep_id = episode_id(task_hash, model.name, policy, seed)
    rec = TrajectoryRecord(
        run_id=run_id, task_id=task.id, task_hash=task_hash, episode_id=ep_id, seed=seed, model=model.name,
        policy=policy, sampling=sampling.model_dump(), baseline=task.baseline, metric=task.config.metric,
        direction=task.config.direction,
        history=HistoryConfig(keep_last_observations=cfg.keep_last_observations,
                              max_observation_chars=cfg.max_observation_chars),
    )
    scorer = EpisodeScorer(task, grader, sandbox)
    shown_scores = MLGymScoreText(scorer, sandbox.workdir) if cfg.profile == "mlgym" else scorer
    env = AgentEnvironment(sandbox, cfg, training_timeout_s=_training_timeout(task, cfg),
                           read_only_paths=task.read_only_paths, scorer=shown_scores)
    prompts = mlgym_prompts(cfg)
    rec.messages = initial_messages(task, cfg, sandbox.workdir, prompts)
    totals = _Totals()
    log.info("run %s task %s episode %s: start (model %s, seed %d)", run_id, task.id, ep_id, model.name, seed)
    try:
        deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        rec.exit_status = _loop(rec, model, env, scorer, cfg, sampling, totals, deadline, on_step, prompts)
    except (SandboxError, ModelError) as e:
        if isinstance(e, BudgetExceededError):
            rec.exit_status = _autosubmit(scorer, len(rec.steps), "exit_cost")
        else:
            rec.infra_error = redact(f"{type(e).__name__}: {e}")  # stored and logged: never a credential
            rec.exit_status = "exit_error"
            log.warning("run %s task %s episode %s: infra error: %s", run_id, task.id, ep_id, rec.infra_error)
    finally:
        env.close()
    rec.scores = list(scorer.scores)
    rec.submission = next((s.artefact for s in reversed(scorer.scores) if s.artefact), None)
    rec.tokens_sent, rec.tokens_received = totals.tokens_sent, totals.tokens_received
    rec.api_calls, rec.cost_usd = totals.api_calls, totals.cost_usd
    rec.wall_time_s = time.time() - started
    log.info("run %s task %s episode %s: %s after %d steps", run_id, task.id, ep_id, rec.exit_status, len(rec.steps))
    return rec


def _loop(rec: TrajectoryRecord, model: ChatModel, env: AgentEnvironment, scorer: EpisodeScorer,
          cfg: AgentConfig, sampling: SamplingConfig, totals: _Totals, deadline: float | None = None,
          on_step: Callable[[StepRecord], None] | None = None, prompts: MLGymPrompts | None = None) -> str:
    for step in range(cfg.max_steps):
        if totals.cost_usd >= cfg.cost_limit_usd:
            return _autosubmit(scorer, step, "exit_cost")
        if deadline is not None and time.monotonic() >= deadline:
            return _autosubmit(scorer, step, "exit_time")
        prompt = build_prompt(rec.messages, cfg.keep_last_observations)
        if estimate_tokens(prompt) > cfg.max_context_tokens:
            return _autosubmit(scorer, step, "exit_context")
        turn = _ask(model, prompt, rec, step, cfg, sampling, totals, prompts)
        if turn is None:
            return _autosubmit(scorer, step, "exit_format")
        completion, parsed, reasks = turn
        t0 = time.monotonic()
        result = env.execute(parsed.action, step)
        observation = _observation_message(result.observation, env, step + 1, cfg.max_steps - step - 1, prompts)
        turn_message: Message = {"role": "assistant", "content": completion.text}
        if completion.reasoning:  # kept in the trajectory; build_prompt never sends it back to the model
            turn_message["reasoning_content"] = completion.reasoning
        rec.messages.append(turn_message)
        rec.messages.append({"role": "user", "content": observation})
        rec.steps.append(StepRecord(
            step=step, response=completion.text, thought=parsed.thought, action=parsed.action,
            observation=result.observation, reasoning=completion.reasoning, open_file=env.open_file,
            working_dir=env.cwd, execution_time_s=time.monotonic() - t0, model_latency_s=completion.latency_s,
            prompt_tokens=completion.usage.prompt_tokens, completion_tokens=completion.usage.completion_tokens,
            cost_usd=completion.cost_usd, format_errors=reasks,
        ))
        if on_step is not None:
            on_step(rec.steps[-1])
        if result.submitted:
            return _status(scorer.scores[-1], "submitted")
    return _autosubmit(scorer, cfg.max_steps, "max_steps")


def _ask(model: ChatModel, prompt: list[Message], rec: TrajectoryRecord, step: int, cfg: AgentConfig,
         sampling: SamplingConfig, totals: _Totals, prompts: MLGymPrompts | None = None):
    """One model turn, re-asking after format errors (and, in the mlgym profile, after a blocked interactive
    program, as MLGym does: no step is spent); None after `max_format_errors` bad responses in a row."""
    reasks: list[str] = []
    extra: list[Message] = []
    for attempt in range(cfg.max_format_errors):
        params = SamplingParams(
            temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
            reasoning_effort=sampling.reasoning_effort, seed=rec.seed,
            sample_key=SampleKey(episode_id=rec.episode_id, step=step, attempt=attempt),
        )
        completion = model.complete(prompt + extra, params)
        totals.add(completion)
        try:
            parsed = parse_response(completion.text)
        except FormatError as e:
            reask = _format_error_text(cfg, prompts, e.reason)
        else:
            blocked = blocked_program(parsed.action) if cfg.profile == "mlgym" else None
            if blocked is None:
                return completion, parsed, reasks
            reask = blocklist_message(blocked)
        reasks.append(completion.text)
        extra = [{"role": "assistant", "content": completion.text}, {"role": "user", "content": reask}]
    rec.steps.append(StepRecord(step=step, response=reasks[-1], thought="", action="", observation="",
                                format_errors=reasks))
    return None


def _autosubmit(scorer: EpisodeScorer, step: int, reason: str) -> str:
    return _status(scorer.record("autosubmit", step), f"autosubmission ({reason})", reason)


def _status(score: ScoreRecord, ok_status: str, reason: str = "submitted") -> str:
    """MLGym's exit statuses: a failed scoring names why."""
    if score.error is None:
        return ok_status
    kind = "submission_not_found" if score.error.startswith("submission_not_found") else "evaluation_format_error"
    return f"{kind} ({reason})"


def _training_timeout(task: TaskSpec, cfg: AgentConfig) -> float:
    return float(cfg.training_timeout_s or task.config.training_timeout)


def _format_error_text(cfg: AgentConfig, prompts: MLGymPrompts | None, reason: str) -> str:
    if prompts is not None and prompts.format_error_template:
        return prompts.format_error_template
    return FORMAT_ERROR if cfg.profile == "mlgym" else render("agent/format_error.j2", reason=reason)


def _observation_message(observation: str, env: AgentEnvironment, step: int, remaining: int,
                         prompts: MLGymPrompts | None) -> str:
    """The user message after a step: the observation and the footer (MLGym's next-step templates if loaded)."""
    if prompts is None:
        return observation + "\n" + env.footer(step, remaining)
    state = {"current_step": step, "remaining_steps": remaining, "open_file": env.open_file or "n/a",
             "working_dir": env.cwd}
    template = prompts.next_step_no_output_template if observation == EMPTY_OUTPUT else prompts.next_step_template
    return template.format(**{**prompts.env_variables, **state, "observation": observation})


def _baseline_code(task: TaskSpec) -> list[str]:
    """The baseline's own code files: baseline_paths less the evaluation script (which MLGym tasks list there)."""
    return [p for p in task.config.baseline_paths if p not in task.config.evaluation_paths]


def _artefact_hint(task: TaskSpec) -> str | None:
    """The file the agent hands in, when that is a file it writes. Not for PythonSubmissionTasks: their
    submission_path is the file the grader reads (MLGym's games read target.py, the opponent), not the one the
    agent edits, so the task description says which file that is."""
    if task.config.task_entrypoint == "PythonSubmissionTasks":
        return None
    try:
        return resolve_artefact(task, [])
    except (TaskError, GradingError):  # ModelSubmission tasks name their artefact only once it exists
        return None
