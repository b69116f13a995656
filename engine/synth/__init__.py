"""Task synthesis (pipeline phases 1 and 2): topics, proposals, dataset checks, code, verification."""
