"""A trivial strategy that shows the submission format: it flips a coin every round."""

import random


def strategy(history: list[tuple[int, int]]) -> int:
    """Return 0 (stag) or 1 (hare) at random."""
    return random.randint(0, 1)
