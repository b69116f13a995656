"""The curation settings: `CurateConfig` and the student tokenizer's `StudentTokenizerConfig`, read by `engine.curate`.

Importing this module imports only pydantic (never transformers), so the run config can compose it cheaply.

>>> cfg = CurateConfig(sample_unit="episode", reasoning="drop", filters={"max_per_task": 4})
>>> cfg.student.tokenizer, cfg.filters.max_tokens_truncate, cfg.pack_tokens
('offline:qwen3', 32768, 32768)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engine.errors import ConfigError

OFFLINE_QWEN3 = "offline:qwen3"
"""The offline default student tokenizer: Qwen3's files in ``$SYNTHSCALE_TOKENIZER_DIR`` (engine.curate.tokenizer)."""

SampleUnit = Literal["episode", "step"]
Reasoning = Literal["keep", "drop"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StudentTokenizerConfig(_Config):
    """Which tokenizer and chat template render the student's training data."""

    tokenizer: str = Field(
        OFFLINE_QWEN3,
        description="A Hugging Face Hub model id (`Qwen/Qwen3-4B`), a local folder holding tokenizer.json and "
                    "tokenizer_config.json, or `offline:qwen3`: Qwen3's own files fetched by "
                    "scripts/fetch_tokenizer.sh into $SYNTHSCALE_TOKENIZER_DIR (default "
                    "~/.cache/synthscale/tokenizers/qwen3), checked by sha256.")
    revision: str | None = Field(
        None, description="Hub revision (branch, tag or commit) of a Hub model id; None is the default branch.")
    end_of_turn: str = Field(
        "<|im_end|>", description="The special token that closes a turn in the chat template; it is supervised "
                                  "at the end of every supervised assistant turn (Qwen3: <|im_end|>).")

    @model_validator(mode="after")
    def _check_source(self) -> StudentTokenizerConfig:
        if self.revision is not None and (self.tokenizer == OFFLINE_QWEN3 or _looks_local(self.tokenizer)):
            raise ConfigError(f"curate.student.revision applies to Hub model ids only, not {self.tokenizer!r}; "
                              "drop revision")
        return self


def _looks_local(name: str) -> bool:
    return name.startswith(("/", ".", "~"))


class FilterConfig(_Config):
    """Which trajectories and samples are kept; each filter can be switched off (`False` or `None`)."""

    require_success: bool = Field(
        True, description="Keep only episodes with at least one scoring that produced a score "
                          "(`TrajectoryRecord.succeeded`, the paper's rule).")
    beat_baseline: bool = Field(
        False, description="Also require the best validation score (the one the agent saw) to be strictly better "
                           "than the task's baseline on its metric, by the task's direction.")
    max_per_task: int | None = Field(
        None, gt=0, description="Keep at most this many episodes per task (the first by episode id); None: all.")
    max_tokens_drop: int | None = Field(
        48 * 1024, gt=0, description="Drop samples longer than this many student tokens; None: keep all.")
    max_tokens_truncate: int | None = Field(
        32 * 1024, gt=0, description="Cut longer samples after the last assistant turn that fits (never mid-message); "
                                     "a sample whose first supervised turn does not fit is dropped. None: no cut.")
    dedup: bool = Field(True, description="Drop exact duplicates (same tokens and loss mask), keeping the first "
                                          "by (episode id, turn).")

    @model_validator(mode="after")
    def _check(self) -> FilterConfig:
        if self.beat_baseline and not self.require_success:
            raise ConfigError("curate.filters.beat_baseline compares a score, so it needs require_success: true")
        if self.max_tokens_drop is not None and self.max_tokens_truncate is not None \
                and self.max_tokens_truncate >= self.max_tokens_drop:
            raise ConfigError(f"curate.filters.max_tokens_truncate ({self.max_tokens_truncate}) must be below "
                              f"max_tokens_drop ({self.max_tokens_drop}): every longer sample is dropped first, "
                              "so the cut would never apply; lower it or set it to null")
        return self


class CurateConfig(_Config):
    """Turns stored trajectories into SFT data for the student (`engine.curate`)."""

    student: StudentTokenizerConfig = Field(default_factory=StudentTokenizerConfig)
    sample_unit: SampleUnit = Field(
        "step", description="step: one sample per assistant turn, its prompt rebuilt exactly as the agent saw it "
                            "(older observations elided), only that turn supervised; episode: the whole message "
                            "list as one sample, every assistant turn supervised.")
    reasoning: Reasoning = Field(
        "keep", description="keep: supervise each assistant turn's reasoning where the chat template renders it "
                            "(Qwen3: <think>…</think> on a last turn only, so `episode` needs `drop`); "
                            "drop: remove it.")
    filters: FilterConfig = Field(default_factory=FilterConfig)
    pack_tokens: int = Field(
        32 * 1024, gt=0, description="Token budget of one packed training row (first-fit decreasing); a sample "
                                     "longer than this is rejected as over_pack_budget.")
    inputs: list[str] = Field(
        default_factory=list, description="Rollout run directories (paths or URIs) whose trajectories are curated "
                                          "together, deduplicated by episode id; empty: this run's own.")
    rows_per_shard: int = Field(256, gt=0, description="Packed rows per output shard (parquet file).")
    concurrency: int | None = Field(
        None, gt=0, description="Ray Data: tokenizing actors (None: one per 2 CPUs of the cluster, at least 1).")
    cpus_per_actor: float = Field(
        0.5, gt=0, description="Ray Data: CPUs each tokenizing actor reserves (fractional, so that on a small "
                               "machine the tasks that feed the actors still get CPUs).")

    @model_validator(mode="after")
    def _check(self) -> CurateConfig:
        longest = self.filters.max_tokens_truncate or self.filters.max_tokens_drop
        if longest is not None and longest > self.pack_tokens:
            name = "max_tokens_truncate" if self.filters.max_tokens_truncate else "max_tokens_drop"
            raise ConfigError(f"curate.filters.{name} ({longest}) exceeds curate.pack_tokens ({self.pack_tokens}): "
                              "samples that long would be rejected at packing; raise pack_tokens or lower the limit")
        return self
