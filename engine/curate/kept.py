"""What a curation filter returns: the items it kept and how many it rejected, by reason (for the manifest).

>>> k = Kept.split(["a", "bb", "c"], lambda s: "too_long" if len(s) > 1 else None)
>>> k.items, k.rejects
(['a', 'c'], {'too_long': 1})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Kept(Generic[T]):
    """Items kept, in their input order, and rejected ones counted by reason."""

    items: list[T]
    rejects: dict[str, int] = field(default_factory=dict)

    @classmethod
    def split(cls, items: Iterable[T], reason: Callable[[T], str | None]) -> Kept[T]:
        """Keep the items whose ``reason`` is None; count the others under their reason."""
        kept: list[T] = []
        rejects: Counter[str] = Counter()
        for item in items:
            why = reason(item)
            if why is None:
                kept.append(item)
            else:
                rejects[why] += 1
        return cls(kept, dict(rejects))


def merge_rejects(*counts: Mapping[str, int]) -> dict[str, int]:
    """Sum reject counts, sorted by reason.

    >>> merge_rejects({"duplicate": 1}, {"duplicate": 2, "infra_error": 1})
    {'duplicate': 3, 'infra_error': 1}
    """
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))
