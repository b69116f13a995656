"""The synthesis record tables round-trip through Parquet, nested records included."""

from pathlib import Path

from engine.synth.records import DatasetProposal, ProposalRecord, RejectRecord
from engine.synth.tables import read_records, write_records


def test_records_round_trip_with_nested_and_missing_values(tmp_path: Path) -> None:
    rows = [
        ProposalRecord(proposal_id="p1", topic_id="t1", topic="rain", domain="tabular", name="Rain",
                       description='Predict {"rain"} — accuracy', task_type="classification", metric="accuracy",
                       direction="max", dataset=DatasetProposal(hf_id="a/b", input_columns=["x", "y"],
                                                                 target_column="rain")),
        ProposalRecord(proposal_id="p2", topic_id="t2", topic="game", domain="game-theory", name="Hunt",
                       description="[play] well", task_type="game", metric="score", direction="max",
                       needs_dataset=False),
    ]
    write_records(tmp_path / "proposals.parquet", rows, ProposalRecord)
    assert read_records(tmp_path / "proposals.parquet", ProposalRecord) == rows
    assert not list(tmp_path.glob(".*tmp*"))
    assert read_records(tmp_path / "missing.parquet", RejectRecord) == []
    write_records(tmp_path / "rejects.parquet", [], RejectRecord)
    assert read_records(tmp_path / "rejects.parquet", RejectRecord) == []
