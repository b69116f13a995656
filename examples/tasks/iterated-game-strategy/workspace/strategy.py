"""Your strategy for the iterated stag hunt. Edit `strategy`; keep its name and signature."""

STAG, HARE = 0, 1


def strategy(history: list[tuple[int, int]]) -> int:
    """Return STAG (0) or HARE (1) for the next round.

    history holds one (my_action, their_action) pair per round played so far in this match, oldest first;
    it is empty in the first round.
    """
    return HARE
