"""The worked examples in the guard modules' docstrings hold."""

from __future__ import annotations

import doctest

import pytest

from engine.synth.guards import benchmark, contamination, dedup, difficulty, leaks, text


@pytest.mark.parametrize("module", [text, benchmark, contamination, dedup, leaks, difficulty], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module)
    assert result.failed == 0
    assert result.attempted > 0 or module is benchmark
