"""Curation: stored trajectories (TrajectoryRecord rows) to the student's SFT data, as pure functions (no Ray here)."""
