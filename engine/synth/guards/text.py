"""Text helpers of the guards (reads and writes nothing): name normalisation, alias matching, word shingles, Jaccard."""

from __future__ import annotations

import re


_NON_ALNUM = re.compile(r"[^0-9a-z]+")
_WORD = re.compile(r"[0-9a-z]+")
MAX_ALIAS_TOKENS = 6


def squash(text: str) -> str:
    """Lower case with every non-alphanumeric character removed: the form aliases are compared in.

    >>> squash("Fashion_MNIST"), squash("CIFAR-10"), squash("glue / mnli")
    ('fashionmnist', 'cifar10', 'gluemnli')
    """
    return _NON_ALNUM.sub("", text.lower())


def words(text: str) -> list[str]:
    """Lower-case alphanumeric runs; an apostrophe splits ("prisoner's" gives "prisoner", "s").

    >>> words("Prisoner's Dilemma, v2")
    ['prisoner', 's', 'dilemma', 'v2']
    """
    return _WORD.findall(text.lower())


def alias_spans(text: str, max_tokens: int = MAX_ALIAS_TOKENS) -> set[str]:
    """Every run of up to `max_tokens` consecutive words, joined without separators.

    Matching aliases against these spans respects word boundaries: "cifar-10-lt" yields "cifar10" but
    "cifar100" does not, and "Mountain Car Continuous" yields "mountaincarcontinuous".

    >>> sorted(alias_spans("cifar-10 lt", max_tokens=2))
    ['10', '10lt', 'cifar', 'cifar10', 'lt']
    """
    toks = words(text)
    return {"".join(toks[i:j]) for i in range(len(toks)) for j in range(i + 1, min(i + max_tokens, len(toks)) + 1)}


def shingles(text: str, n: int) -> set[str]:
    """Word n-grams of `text` (the whole text when it has fewer than n words; empty for no words).

    >>> sorted(shingles("a b c", 2))
    ['a b', 'b c']
    """
    toks = words(text)
    if len(toks) < n:
        return {" ".join(toks)} if toks else set()
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """|a ∩ b| / |a ∪ b|; 0.0 when both are empty."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0
