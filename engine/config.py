"""The run configuration: pydantic models composed into one `RunConfig`, loaded from and dumped to YAML."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.curate.config import CurateConfig
from engine.errors import ConfigError
from engine.serving.launch import ServeConfig
from engine.train.config import TRAIN_OPERATIONAL, TrainConfig


class _Config(BaseModel):
    # allow_inf_nan: a float setting of .inf or .nan is a mistake (a timeout that never fires, a limit never hit)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Price(_Config):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)


DEFAULT_PRICES: dict[str, Price] = {
    "gpt-5": Price(input_per_mtok=1.25, output_per_mtok=10.0, cached_input_per_mtok=0.125),
    "gpt-5-mini": Price(input_per_mtok=0.25, output_per_mtok=2.0, cached_input_per_mtok=0.025),
    "gpt-5-nano": Price(input_per_mtok=0.05, output_per_mtok=0.4, cached_input_per_mtok=0.005),
    "gpt-4o": Price(input_per_mtok=2.5, output_per_mtok=10.0, cached_input_per_mtok=1.25),
    "gpt-4o-mini": Price(input_per_mtok=0.15, output_per_mtok=0.6, cached_input_per_mtok=0.075),
    # the offline policy, served over a loopback endpoint: an explicit zero, not an unknown price
    "synthscale-heuristic": Price(input_per_mtok=0.0, output_per_mtok=0.0),
}


class SamplingConfig(_Config):
    """Sampling settings sent with every call; None leaves the server's default (reasoning models need that)."""

    temperature: float | None = Field(1.0, ge=0, description="1.0 so that episodes of one task differ.")
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(4096, gt=0, description="Completion budget per call (max_completion_tokens).")
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


class ModelConfig(_Config):
    """Which model answers and how the client talks to it."""

    provider: Literal["openai", "heuristic"] = Field(
        "heuristic", description="openai: any OpenAI-compatible endpoint; heuristic: the offline scripted policy."
    )
    name: str = Field("heuristic", description="Model name sent to the endpoint, and its price-table key.")
    base_url: str | None = Field(None, description="Endpoint root, e.g. http://vllm:8000/v1; None is OpenAI's.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable that holds the key (never the key).")
    api_key_file: Path | None = Field(
        None, description="A mounted secret holding the key, read when the variable is unset (never the key itself).")
    timeout_s: float = Field(600.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(6, ge=0, description="Retries on 429, 5xx, timeouts and connection errors.")
    backoff_base_s: float = Field(1.0, gt=0, description="First backoff; doubles each retry, with full jitter.")
    backoff_max_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(16, gt=0, description="Calls in flight at once from one client.")
    reasoning_model: bool | None = Field(
        None, description="Drop temperature/top_p (reasoning models reject them); None guesses from the name."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    prices: dict[str, Price] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    unknown_price: Literal["error", "zero"] = Field(
        "error", description="A model missing from `prices`: fail, or account it at an explicit zero."
    )
    cache_dir: Path | None = Field(None, description="Content-addressed response cache; None disables it.")
    replay_only: bool = Field(False, description="Serve only from the cache; a miss is an error (offline replay).")

    @model_validator(mode="after")
    def _check_mode(self) -> ModelConfig:
        if self.provider == "heuristic" and self.base_url is not None:
            raise ConfigError("model.base_url is set but model.provider is 'heuristic'; set provider: openai or drop base_url")
        if self.replay_only and self.cache_dir is None:
            raise ConfigError("model.replay_only needs model.cache_dir: set the cache folder to replay from")
        return self


class SandboxConfig(_Config):
    """Where agent commands run and under which limits."""

    runtime: Literal["local", "docker"] = "local"
    image: str = Field("synthscale-task:latest", description="Task image (docker runtime only).")
    memory_mb: int = Field(4096, gt=0, description="Memory limit of the sandbox's processes.")
    cpus: float = Field(1.0, gt=0, description="CPU quota (docker) / not enforced by bwrap.")
    pids_limit: int = Field(256, gt=0, description="Processes the sandbox user may have at once.")
    workspace_mb: int = Field(512, gt=0, description="Size of the workspace tmpfs.")
    network: bool = Field(False, description="Allow network from inside the sandbox.")
    max_output_bytes: int = Field(1_000_000, gt=0, description="Bytes of command output read before cutting off.")
    allow_unsandboxed: bool = Field(
        False, description="local runtime without bubblewrap: run commands unisolated (never on shared machines)."
    )
    uid: int = Field(1000, ge=1, description="Unprivileged user the sandboxed processes run as.")
    grader_uid: int = Field(
        1001, ge=1, description="Unprivileged user graders run as (their files are unreadable to `uid`); must differ.")
    image_packages: list[str] = Field(
        default_factory=lambda: ["numpy", "pandas", "scikit-learn", "statsmodels", "gymnasium"],
        description="Packages the task image holds (beyond the standard library); generated code may import only these.",
    )

    @model_validator(mode="after")
    def _check_mode(self) -> SandboxConfig:
        if self.runtime == "docker" and self.allow_unsandboxed:
            raise ConfigError("sandbox.allow_unsandboxed applies to the local runtime only; drop it for docker")
        if self.grader_uid == self.uid:
            raise ConfigError(f"sandbox.grader_uid {self.grader_uid} equals sandbox.uid: graders must run as another "
                              "user, so that the agent's processes cannot read their files; pick another uid")
        return self


class AgentConfig(_Config):
    """The research environment the agent acts in (MLGym's defaults)."""

    max_steps: int = Field(50, gt=0)
    keep_last_observations: int = Field(5, ge=1, description="Observations kept verbatim in the prompt.")
    command_timeout_s: float = Field(25.0, gt=0, description="Ordinary commands.")
    training_timeout_s: float | None = Field(None, gt=0, description="Overrides the task's training_timeout.")
    max_observation_chars: int = Field(20_000, gt=200, description="Longer observations keep head and tail.")
    window_lines: int = Field(1000, gt=0, description="Lines shown by open/goto/scroll (MLGym's WINDOW).")
    scroll_overlap: int = Field(2, ge=0, description="Lines kept in view by scroll_up/scroll_down (MLGym's OVERLAP).")
    profile: Literal["mlgym", "synthscale"] = Field(
        "mlgym", description="mlgym: MLGym's observation texts and blocklist (interactive programs re-asked, no "
        "step spent); synthscale: our explanatory refusals and format-error text (see docs/mlgym-compat.md).")
    mlgym_config: Path | None = Field(
        None, description="MLGym agent config YAML (e.g. <checkout>/configs/agents/default.yaml) whose system, task "
        "and format-error prose is used, read at run time; None: our own prose (prompts/agent/).")
    max_format_errors: int = Field(3, gt=0, description="Consecutive bad responses that end the episode.")
    max_context_tokens: int = Field(120_000, gt=0, description="Prompt size (≈chars/4) that auto-submits.")
    cost_limit_usd: float = Field(4.0, gt=0, description="Per-episode model cost that auto-submits.")

    @model_validator(mode="after")
    def _check_window(self) -> AgentConfig:
        if self.scroll_overlap >= self.window_lines:
            raise ConfigError(f"agent.scroll_overlap {self.scroll_overlap} must be below agent.window_lines "
                              f"{self.window_lines}, or scrolling would not move")
        return self


class EpisodeConfig(_Config):
    """Which tasks are rolled out, and how many trajectories each gets."""

    tasks: list[Path] = Field(default_factory=lambda: [Path("examples/tasks")], description="Task folders, or folders of them.")
    episodes_per_task: int = Field(
        256, gt=0, description="Target trajectories per task (the paper's 256); infra errors do not count.")
    seed: int = Field(0, description="Seed of a task's first episode; episode i gets seed + i.")


class HubConfig(_Config):
    """Where datasets are checked and fetched (the Hugging Face Hub, or a loopback hub in tests)."""

    endpoint: str = Field("https://huggingface.co", description="Hub API root (what HF_ENDPOINT would be).")
    viewer_url: str = Field("https://datasets-server.huggingface.co", description="Dataset viewer root (/first-rows).")
    token_env: str = Field("HF_TOKEN", description="Environment variable holding a token for gated datasets.")
    search_limit: int = Field(20, gt=0, description="Candidates read from a search.")
    sample_rows: int = Field(5, gt=0, description="Rows put into the task description.")
    max_dataset_mb: float = Field(200.0, gt=0, description="Largest download materialised into a task.")
    licence_allow: list[str] = Field(
        default_factory=lambda: ["mit", "apache-2.0", "cc0-1.0", "cc-by-4.0", "cc-by-sa-4.0", "bsd-3-clause",
                                 "bsd-2-clause", "odc-by", "pddl", "cdla-permissive-2.0", "openrail", "unknown"],
        description="Licences (Hub ids, lower case) a materialised dataset may carry.",
    )
    timeout_s: float = Field(30.0, gt=0)


class RateLimitConfig(_Config):
    """The shared teacher pool: every worker's calls pass one limiter."""

    requests_per_minute: float | None = Field(None, gt=0, description="None: unlimited.")
    tokens_per_minute: float | None = Field(None, gt=0, description="Prompt + completion tokens; None: unlimited.")
    max_concurrency: int = Field(32, gt=0, description="Teacher calls in flight across the cluster.")


class SynthConfig(_Config):
    """Task synthesis and self-debugging verification (pipeline phases 1 and 2)."""

    source: Literal["teacher", "procedural"] = Field("procedural", description="teacher: an LLM; procedural: offline.")
    teacher: ModelConfig | None = Field(None, description="The teacher's endpoint; None uses `model`.")
    n_topics: int = Field(1000, gt=0, description="Topics to sample (teacher source).")
    topics_per_call: int = Field(25, gt=0, description="Topics asked for in one call.")
    n_tasks: int = Field(24, gt=0, description="Tasks to draw (procedural source).")
    families: list[str] | None = Field(None, description="Procedural families to draw from; None: all.")
    p_debug: float = Field(0.7, ge=0, le=1, description="Chance an error is repaired rather than regenerated.")
    max_iterations: int = Field(4, gt=0, description="k: generation/debug attempts before a task is discarded.")
    seed: int = 0
    budget_usd: float | None = Field(None, gt=0, description="Hard cost cap of the stage; None: no cap.")
    concurrency: int = Field(4, gt=0, description="Tasks verified at once (Ray mode: in flight).")
    verify_episode: bool = Field(True, description="Run one agent episode per task; it must score a submission.")
    verify_policy: Literal["teacher", "heuristic"] = Field(
        "heuristic", description="Who plays the verification episode: the teacher as an agent, or the offline "
        "heuristic policy over the task's improvement moves.")
    verify_max_steps: int = Field(30, gt=0, description="Step limit of the verification episode.")
    grading_timeout_s: float = Field(600.0, gt=0)
    dedup_threshold: float = Field(0.8, gt=0, le=1, description="MinHash Jaccard above which tasks are duplicates.")
    description_overlap_max: float = Field(
        0.6, gt=0, le=1, description="Similarity to a benchmark task's description that counts as contamination.")
    contamination_index: Path | None = Field(
        None, description="Row-hash index of the benchmark's datasets (built once online); None: names only.")
    hub: HubConfig = Field(default_factory=HubConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)

    @model_validator(mode="after")
    def _check_mode(self) -> SynthConfig:
        if self.source == "procedural" and self.teacher is not None:
            raise ConfigError("synth.teacher is set but synth.source is 'procedural'; set source: teacher or drop it")
        return self


class RolloutConfig(_Config):
    """How the rollout stage uses a Ray cluster. Operational only: changing it never invalidates stored work."""

    gpus_per_worker: float = Field(
        1.0, gt=0, description="GPUs a rollout worker (and its task container) owns; 0.5 or 0.25 share a GPU.")
    gpu_workers: int | None = Field(
        None, ge=0, description="GPU workers; None: as many as the cluster's GPUs allow (0 without GPUs).")
    cpu_workers: int | None = Field(
        None, ge=0, description="Workers for CPU-only tasks; None: 1 when the cluster has no GPU workers, else 0.")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs reserved by each worker.")
    episodes_per_cpu_worker: int = Field(2, gt=0, description="Concurrent episodes (own sandboxes) on a CPU worker.")
    lease_size: int = Field(4, gt=0, description="Episodes of one task handed to a worker at once.")
    episode_timeout_s: float = Field(
        4 * 3600.0, gt=0, description="Wall-clock limit of an episode: it is auto-submitted (exit_time) "
                                      "after this; a lease overrunning it by a command and a grading is re-issued.")
    max_infra_retries: int = Field(2, ge=0, description="R: an episode failing for the cluster's reasons is retried R times.")
    max_infra_failures_per_task: int = Field(
        16, ge=0, description="Episodes of a task given up on after R retries before the task is marked failed.")
    max_lease_attempts: int = Field(4, gt=0, description="Times a lease is handed out again after its worker died.")
    max_consecutive_infra_errors: int = Field(
        32, gt=0, description="Episodes in a row given up on for infra errors before the stage stops: something "
                              "systemic (no Docker, a dead endpoint) is wrong.")
    budget_usd: float | None = Field(None, gt=0, description="Hard cost cap of the stage; it stops cleanly there.")
    rate_limit: RateLimitConfig = Field(default_factory=lambda: RateLimitConfig(max_concurrency=256))
    pilot_tasks: int = Field(2, gt=0, description="--dry-run: tasks of the pilot.")
    pilot_episodes: int = Field(2, gt=0, description="--dry-run: episodes per pilot task.")
    progress: bool = Field(True, description="Show a progress bar with trajectories/min.")

    @model_validator(mode="after")
    def _check(self) -> RolloutConfig:
        if self.gpus_per_worker > 1 and self.gpus_per_worker != int(self.gpus_per_worker):
            raise ConfigError(f"rollout.gpus_per_worker={self.gpus_per_worker}: above 1 it must be a whole "
                              "number of GPUs; use 1, 2, … or a fraction such as 0.5")
        return self


class EvalMethod(_Config):
    """One row of the evaluation: a model reached through an endpoint, or a checkpoint served for the stage."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Row label in every table (not 'baseline').")
    model: ModelConfig | None = Field(None, description="An endpoint (API teacher, running server) or the heuristic.")
    serve: ServeConfig | None = Field(None, description="Serve this checkpoint (ModelServer) for the stage.")
    checkpoint: str | None = Field(
        None, min_length=1, description="A Hugging Face checkpoint (`RUN/train/final/`, a Hub id) served with the "
                                        "defaults: one GPU per server with vLLM where the cluster has GPUs, else "
                                        "`transformers serve` on CPU. Set `serve` instead for other settings.")
    servers: int = Field(1, gt=0, description="Servers started for `serve` (episodes are routed sticky).")
    client: ModelConfig | None = Field(
        None, description="Client settings for the served model (sampling, retries); base_url and name are filled in.")

    @model_validator(mode="after")
    def _check(self) -> EvalMethod:
        if sum(x is not None for x in (self.model, self.serve, self.checkpoint)) != 1:
            raise ConfigError(f"eval.methods[{self.name}]: set exactly one of `model` (an endpoint), `checkpoint` "
                              "(a checkpoint's path, served with the defaults) or `serve` (a checkpoint and how to "
                              "serve it)")
        if self.client is not None and self.serve is None and self.checkpoint is None:
            raise ConfigError(f"eval.methods[{self.name}]: `client` applies to served models; put its settings "
                              "in `model`")
        return self

    def serve_config(self, gpus_available: float) -> ServeConfig:
        """How this served method is served: `serve`, or the defaults for `checkpoint` on a cluster with
        `gpus_available` GPUs."""
        if self.serve is not None:
            return self.serve
        if self.checkpoint is None:
            raise ConfigError(f"eval.methods[{self.name}] is an endpoint (`model`); nothing to serve")
        return ServeConfig(model=self.checkpoint, gpus_per_server=1.0 if gpus_available >= 1 else 0.0,
                           cpus_per_server=1.0)


class EvalConfig(_Config):
    """`synthscale eval`: R runs per task of every method on a task suite, then AUP and the report."""

    methods: list[EvalMethod] = Field(default_factory=list, description="The set compared (AUP depends on it).")
    tasks: list[Path] = Field(default_factory=list, description="The suite: task folders, or folders of them "
                                                                "(MLGym's via `synthscale task import-mlgym`).")
    mlgym_dir: Path | None = Field(None, description="A checkout of MLGym whose tasks join the suite (imported "
                                                      "into RUN/eval/suite/ at the stage's start).")
    mlgym_tasks: list[str] = Field(default_factory=list, description="MLGym task ids (or config files) to "
                                     "import; empty with mlgym_dir: MLGym-Bench's 13 tasks, those this image supports.")
    runs_per_task: int = Field(64, gt=0, description="Runs of each method on each task (the paper's 64).")
    baseline: str = Field("baseline", description="Name of the baseline row (the tasks' baseline scores).")
    bootstrap_resamples: int = Field(1000, gt=0, description="Resamples of the confidence intervals.")
    best_submission: Literal["mlgym", "strict"] = Field(
        "mlgym", description="A run's Best Submission score: `mlgym`, the last successful scoring, validate or "
                             "submit (MLGym's, so tables compare with its); `strict`, the submission's own score "
                             "(missing unless the run's last scoring is a successful submit or auto-submission).")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        names = [m.name for m in self.methods]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ConfigError(f"eval.methods: names {dup} appear twice; every row needs its own name")
        if self.baseline in names:
            raise ConfigError(f"eval.methods: {self.baseline!r} is the baseline row's name; rename the method")
        if self.mlgym_tasks and self.mlgym_dir is None:
            raise ConfigError("eval.mlgym_tasks is set but eval.mlgym_dir is not; point it at a checkout of MLGym")
        return self


class RunConfig(_Config):
    """Everything one run needs; every command reads it."""

    run_id: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$")
    run_dir: str = Field("runs/run", description="Local path or pyarrow.fs URI (s3://…).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    episodes: EpisodeConfig = Field(default_factory=EpisodeConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def stage_inputs(self, stage: str) -> dict:
        """The settings that change what `stage` writes (its resume key), as plain JSON data.

        Each stage hashes only its own inputs, so a synthesis setting never stops the rollout stage from
        resuming. Left out everywhere: paths and ids, and operational settings (where an endpoint is, how
        patient its client is, the cluster's shape, budgets, progress bars), which can change between attempts
        of a stage without changing its results. Targets (`episodes_per_task`, `runs_per_task`, the task list)
        are left out too: raising one resumes and adds work; the per-episode ids keep runs apart."""
        if stage == "synth":
            teacher = self.synth.teacher or (self.model if self.synth.source == "teacher" else None)
            return {"synth": self.synth.model_dump(mode="json", exclude=_SYNTH_OPERATIONAL),
                    "teacher": _model_inputs(teacher), "sandbox": self.sandbox.model_dump(mode="json")}
        shared = {"agent": self.agent.model_dump(mode="json"), "sandbox": self.sandbox.model_dump(mode="json"),
                  "episode_timeout_s": self.rollout.episode_timeout_s}
        if stage == "rollouts":
            return {**shared, "model": _model_inputs(self.model), "seed": self.episodes.seed}
        if stage == "curate":  # the stage adds the tokenizer's content hash and the trajectories it reads
            return {"curate": self.curate.model_dump(mode="json", exclude=_CURATE_OPERATIONAL)}
        if stage == "train":  # the stage adds the curated data's config hash and the tokenizer's content hash
            return {"train": self.train.model_dump(mode="json", exclude=TRAIN_OPERATIONAL)}
        if stage == "eval":
            methods = [{**m.model_dump(mode="json", exclude={"model", "client", "servers"}),
                        "model": _model_inputs(m.model), "client": _model_inputs(m.client)} for m in self.eval.methods]
            return {**shared, "eval": {**self.eval.model_dump(mode="json", exclude=_EVAL_TARGETS), "methods": methods}}
        raise ConfigError(f"stage {stage!r} has no resume key; known stages: synth, rollouts, curate, train, eval")

    def stage_hash(self, stage: str) -> str:
        """Stable hash of `stage_inputs(stage)`: a stage refuses to resume into a directory written under another."""
        return config_digest(self.stage_inputs(stage))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        return load_config(Path(path), cls)


# settings that never change a stage's results (see RunConfig.stage_inputs)
_MODEL_OPERATIONAL = {"base_url", "api_key_env", "api_key_file", "timeout_s", "max_retries", "backoff_base_s",
                      "backoff_max_s", "max_concurrency", "cache_dir", "replay_only"}
_SYNTH_OPERATIONAL = {"teacher": True, "concurrency": True, "budget_usd": True, "rate_limit": True,
                      "hub": {"timeout_s", "token_env"}}
_CURATE_OPERATIONAL = {"inputs", "concurrency", "cpus_per_actor"}
_EVAL_TARGETS = {"methods", "tasks", "mlgym_dir", "mlgym_tasks", "runs_per_task", "bootstrap_resamples"}


def _model_inputs(model: ModelConfig | None) -> dict | None:
    return None if model is None else model.model_dump(mode="json", exclude=_MODEL_OPERATIONAL)


def config_digest(data: object) -> str:
    """A short, stable hash of JSON data (sorted keys)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_config(path: Path, model: type[BaseModel] = RunConfig):
    """Load a YAML config; errors name the file and the field (or, for bytes that are not UTF-8, the offset)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file; pass --config with an existing YAML file") from None
    except OSError as e:  # a folder, no permission
        raise ConfigError(f"{path}: cannot read it ({e.strerror}); pass --config with a readable YAML file") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {raw[e.start:e.start + 1]!r}, {e.reason}); "
                          "save the file as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e}); fix the syntax") from None
    if (where := non_finite_float(data)) is not None:  # in every section, also those of models defined elsewhere
        raise ConfigError(f"{path}: field '{where[0]}': {where[1]!r} is not a finite number; give a finite value")
    try:
        return model.model_validate(data or {})
    except ValidationError as e:
        raise ConfigError(f"{path}: {_describe(e)}") from None
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def non_finite_float(data: object, where: str = "") -> tuple[str, float] | None:
    """The first (dotted field, value) in parsed YAML/JSON data holding an infinite or NaN float, else None.

    >>> non_finite_float({"agent": {"command_timeout_s": float("inf")}, "seed": 1})
    ('agent.command_timeout_s', inf)
    >>> non_finite_float({"baseline_scores": [{"accuracy": 0.5}, {"accuracy": float("nan")}]})
    ('baseline_scores.1.accuracy', nan)
    """
    if isinstance(data, float):
        return None if math.isfinite(data) else (where or "(top level)", data)
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        if (found := non_finite_float(value, f"{where}.{key}" if where else str(key))) is not None:
            return found
    return None


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"field '{loc}': {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)
