"""Quality guards of task synthesis: contamination, near-duplicates, leaks, difficulty (pure functions, no Ray)."""
