"""Fixtures the unit tests share."""

from __future__ import annotations

import pytest

from engine.curate.config import StudentTokenizerConfig
from engine.curate.tokenizer import load_student_tokenizer
from engine.errors import ArtifactError


@pytest.fixture(scope="module")
def student():
    """Qwen3's real tokenizer and chat template (offline: `make tokenizer`); the test is skipped without it."""
    try:
        return load_student_tokenizer(StudentTokenizerConfig())
    except ArtifactError as e:
        pytest.skip(f"offline Qwen3 tokenizer absent ({e})")
