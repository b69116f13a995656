"""Quality guards of task synthesis: contamination, near-duplicates, leaks, difficulty (pure functions, no Ray).

`REJECT_REASONS` lists every reason a guard writes into a RejectRecord, so a manifest can count zeros too.
"""

from engine.synth.guards.contamination import ContaminationIndex, check_contamination, contamination_index_from_hub
from engine.synth.guards.dedup import Deduplicator, task_signature
from engine.synth.guards.difficulty import estimate_difficulty
from engine.synth.guards.leaks import ceiling_check, probe_leaks, score_rejects

REJECT_REASONS: dict[str, tuple[str, ...]] = {
    "guard": ("contaminated_dataset", "contaminated_environment", "contaminated_rows", "contaminated_description",
              "labels_in_workspace", "target_copy", "baseline_at_ceiling", "constant_at_ceiling"),
    "dedup": ("duplicate_signature", "near_duplicate"),
}

__all__ = [
    "REJECT_REASONS", "ContaminationIndex", "Deduplicator", "ceiling_check", "check_contamination",
    "contamination_index_from_hub", "estimate_difficulty", "probe_leaks", "score_rejects", "task_signature",
]
