"""Materialising a checked dataset from a loopback Hub: files, row counts, held-out labels, pinned revision, caps."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.errors import DatasetRejectedError
from engine.synth.hub import HubDatasetValidator
from engine.testing.loopback_hub import LoopbackDataset, parquet_bytes
from engine.synth.materialise import materialise
from engine.synth.records import DatasetCheck, DatasetProposal, ProposalRecord

try:
    from tests.hub_fixtures import OTHER_TOKEN, TOKEN, TOKEN_ENV, by_id, hub_config
except ImportError:  # tests/ is not a package: pytest put that folder on sys.path
    from hub_fixtures import OTHER_TOKEN, TOKEN, TOKEN_ENV, by_id, hub_config

pytestmark = pytest.mark.usefixtures("hub_env")


def _rows(n: int, offset: int = 0) -> dict[str, list]:
    # `serial` is unique per row so the test can follow every row through the split.
    return {"serial": [offset + i for i in range(n)], "f1": [float(i % 7) for i in range(n)],
            "f2": [f"c{i % 3}" for i in range(n)], "label": [i % 2 for i in range(n)]}


@pytest.fixture(scope="module")
def hub_datasets() -> dict[str, LoopbackDataset]:
    """100 rows; own validation/test splits; a non-commercial licence; gated to TOKEN; missing labels; images."""
    with_splits = {
        "data/train-00000-of-00001.parquet": parquet_bytes(_rows(40)),
        "data/validation-00000-of-00001.parquet": parquet_bytes(_rows(12, offset=1000)),
        "data/test-00000-of-00001.parquet": parquet_bytes(_rows(9, offset=2000)),
    }
    nc = {"train.csv": pd.DataFrame(_rows(20)).to_csv(index=False).encode()}
    gaps = _rows(20)
    gaps["label"] = [None if i % 4 == 0 else v for i, v in enumerate(gaps["label"])]
    return by_id(
        LoopbackDataset(id="acme/hundred", files={"data/train-00000-of-00001.parquet": parquet_bytes(_rows(100))}),
        LoopbackDataset(id="acme/with-splits", files=with_splits, licence="apache-2.0"),
        LoopbackDataset(id="acme/noncommercial", files=nc, licence="cc-by-nc-4.0"),
        LoopbackDataset(id="acme/gated", files={"train.csv": nc["train.csv"]}, gated="auto",
                        access_tokens=frozenset({TOKEN})),
        LoopbackDataset(id="acme/gaps", files={"train.jsonl": pd.DataFrame(gaps).to_json(
            orient="records", lines=True).encode()}),
        LoopbackDataset(id="acme/pictures", files={"data/train-0.parquet": parquet_bytes(
            {"image": [{"bytes": b"\x89PNG", "path": "a.png"}] * 10, "label": [0, 1] * 5})}),
    )


@pytest.fixture()
def hub(fresh_hub):
    """A hub per test: one test pushes a new revision, others assert that nothing was downloaded."""
    return fresh_hub


def _proposal(hf_id: str, inputs=("serial", "f1", "f2"), target="label") -> ProposalRecord:
    return ProposalRecord(
        proposal_id="p1", topic_id="t1", topic="toy", domain="tabular", name="Toy", description="Predict label.",
        task_type="classification", metric="accuracy", direction="max",
        dataset=DatasetProposal(hf_id=hf_id, input_columns=list(inputs), target_column=target),
    )


def _checked(hub, hf_id, **kw):
    cfg = hub_config(hub, **kw)
    proposal = _proposal(hf_id)
    check = HubDatasetValidator(cfg).check(proposal)
    assert check.ok, check.detail
    return check, proposal, cfg


def _resolves(hub) -> list[str]:
    return [p for m, p in hub.requests if "/resolve/" in p]


def test_writes_train_inputs_and_grader_labels_with_exact_counts(hub, tmp_path):
    check, proposal, cfg = _checked(hub, "acme/hundred")
    task = tmp_path / "task"
    out = materialise(check, proposal, cfg, task, seed=3, cache_dir=tmp_path / "cache")
    assert out.rows == {"train": 70, "validation": 15, "test": 15}
    assert out.files == {"train": "workspace/data/train.csv", "validation": "workspace/data/validation.csv",
                         "labels_validation": "grader/labels_validation.csv", "test": "workspace/data/test.csv",
                         "labels_test": "grader/labels_test.csv"}
    assert (out.columns, out.target, out.id_column, out.revision) == (["serial", "f1", "f2"], "label", "id",
                                                                       check.revision)
    assert out.sources == {"train": "train", "validation": "train (held out)", "test": "train (held out)"}
    train = pd.read_csv(task / "workspace/data/train.csv")
    val = pd.read_csv(task / "workspace/data/validation.csv")
    test = pd.read_csv(task / "workspace/data/test.csv")
    assert list(train.columns) == ["serial", "f1", "f2", "label"]
    assert list(val.columns) == list(test.columns) == ["id", "serial", "f1", "f2"]
    assert list(val["id"]) == list(range(15)) and list(test["id"]) == list(range(15, 30))
    # Every source row lands in exactly one split, and the labels follow their rows.
    assert sorted([*train["serial"], *val["serial"], *test["serial"]]) == list(range(100))
    for name, frame in (("validation", val), ("test", test)):
        labels = pd.read_csv(task / f"grader/labels_{name}.csv")
        assert list(labels.columns) == ["id", "label"]
        assert list(labels["id"]) == list(frame["id"])
        assert list(labels["label"]) == [s % 2 for s in frame["serial"]]
    # Labels live only under grader/: nothing in workspace/ but the three data files.
    assert sorted(p.relative_to(task).as_posix() for p in task.rglob("*") if p.is_file()) == sorted(out.files.values())


def test_split_is_deterministic_in_the_seed(hub, tmp_path):
    check, proposal, cfg = _checked(hub, "acme/hundred")
    cache = tmp_path / "cache"
    a = materialise(check, proposal, cfg, tmp_path / "a", seed=1, cache_dir=cache)
    b = materialise(check, proposal, cfg, tmp_path / "b", seed=1, cache_dir=cache)
    materialise(check, proposal, cfg, tmp_path / "c", seed=2, cache_dir=cache)
    read = lambda d: (d / "workspace/data/test.csv").read_bytes()  # noqa: E731
    assert a == b and read(tmp_path / "a") == read(tmp_path / "b")
    assert read(tmp_path / "a") != read(tmp_path / "c")


def test_own_validation_and_test_splits_are_used(hub, tmp_path):
    check, proposal, cfg = _checked(hub, "acme/with-splits")
    out = materialise(check, proposal, cfg, tmp_path / "t", seed=0, cache_dir=tmp_path / "cache")
    assert out.rows == {"train": 40, "validation": 12, "test": 9}
    assert out.sources == {"train": "train", "validation": "validation", "test": "test"}
    assert out.licence == "apache-2.0"
    test = pd.read_csv(tmp_path / "t/workspace/data/test.csv")
    assert sorted(test["serial"]) == list(range(2000, 2009))


def test_the_pinned_revision_is_downloaded_after_the_hub_moves_on(hub, tmp_path):
    check, proposal, cfg = _checked(hub, "acme/hundred")
    pinned = check.revision
    newer = hub.push("acme/hundred", {"data/train-00000-of-00001.parquet": parquet_bytes(_rows(100, offset=5000))})
    assert newer != pinned and hub.main_sha("acme/hundred") == newer
    out = materialise(check, proposal, cfg, tmp_path / "old", seed=0, cache_dir=tmp_path / "cache")
    train = pd.read_csv(tmp_path / "old/workspace/data/train.csv")
    assert out.revision == pinned
    assert train["serial"].max() < 100
    assert _resolves(hub) and all(f"/resolve/{pinned}/" in p for p in _resolves(hub))
    recheck, _, _ = _checked(hub, "acme/hundred")
    assert recheck.revision == newer
    materialise(recheck, proposal, cfg, tmp_path / "new", seed=0, cache_dir=tmp_path / "cache")
    assert pd.read_csv(tmp_path / "new/workspace/data/train.csv")["serial"].min() >= 5000


def test_size_cap_rejects_before_downloading(hub, tmp_path):
    check, proposal, cfg = _checked(hub, "acme/hundred", max_dataset_mb=0.0001)
    with pytest.raises(DatasetRejectedError) as err:
        materialise(check, proposal, cfg, tmp_path / "t", seed=0, cache_dir=tmp_path / "cache")
    assert err.value.reason == "too_large"
    assert "synth.hub.max_dataset_mb=0.0001" in err.value.detail
    assert _resolves(hub) == []
    assert not (tmp_path / "t").exists()


def test_licence_outside_the_allow_list_is_rejected(hub, tmp_path):
    check, proposal, cfg = _checked(hub, "acme/noncommercial")
    assert check.licence == "cc-by-nc-4.0"
    with pytest.raises(DatasetRejectedError) as err:
        materialise(check, proposal, cfg, tmp_path / "t", seed=0, cache_dir=tmp_path / "cache")
    assert err.value.reason == "licence"
    assert "'cc-by-nc-4.0'" in err.value.detail and "synth.hub.licence_allow" in err.value.detail
    assert _resolves(hub) == []
    allowed = hub_config(hub, licence_allow=["cc-by-nc-4.0"])
    out = materialise(check, proposal, allowed, tmp_path / "t", seed=0, cache_dir=tmp_path / "cache")
    assert out.rows == {"train": 14, "validation": 3, "test": 3}


def test_gated_download_needs_the_token(hub, tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    check, proposal, cfg = _checked(hub, "acme/gated")
    out = materialise(check, proposal, cfg, tmp_path / "t", seed=0, cache_dir=tmp_path / "cache")
    assert out.rows == {"train": 14, "validation": 3, "test": 3}
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(DatasetRejectedError) as err:
        materialise(check, proposal, cfg, tmp_path / "u", seed=0, cache_dir=tmp_path / "cache2")
    assert err.value.reason == "gated"
    monkeypatch.setenv(TOKEN_ENV, OTHER_TOKEN)  # valid, but not approved for this repo: 403 GatedRepo
    with pytest.raises(DatasetRejectedError) as err:
        materialise(check, proposal, cfg, tmp_path / "v", seed=0, cache_dir=tmp_path / "cache3")
    assert err.value.reason == "gated"
    assert not (tmp_path / "u").exists() and not (tmp_path / "v").exists()


def test_rows_without_a_target_are_dropped(hub, tmp_path):
    check, proposal, cfg = _checked(hub, "acme/gaps")
    out = materialise(check, proposal, cfg, tmp_path / "t", seed=0, cache_dir=tmp_path / "cache")
    assert sum(out.rows.values()) == 15  # 20 rows, every fourth without a label
    assert out.rows == {"train": 11, "validation": 2, "test": 2}
    labels = pd.read_csv(tmp_path / "t/grader/labels_test.csv")
    assert labels["label"].dtype == "int64"
    assert (tmp_path / "t/workspace/data/train.csv").read_text().splitlines()[0] == "serial,f1,f2,label"
    assert {line.rsplit(",", 1)[1] for line in (tmp_path / "t/workspace/data/train.csv").read_text().splitlines()[1:]} \
        == {"0", "1"}


def test_image_columns_are_unsupported(hub, tmp_path):
    # The check rejects these already; materialise guards on its own for checks made elsewhere.
    check = DatasetCheck(ok=True, hf_id="acme/pictures", revision=hub.main_sha("acme/pictures"), config="default",
                         split="train", licence="mit")
    with pytest.raises(DatasetRejectedError) as err:
        materialise(check, _proposal("acme/pictures", inputs=["image"]), hub_config(hub), tmp_path / "t", seed=0,
                    cache_dir=tmp_path / "cache")
    assert err.value.reason == "unsupported_features"
    assert "['image']" in err.value.detail


def test_a_failed_check_is_not_materialised(hub, tmp_path):
    check = DatasetCheck(ok=False, hf_id="x/y", reason="not_found")
    with pytest.raises(DatasetRejectedError) as err:
        materialise(check, _proposal("x/y"), hub_config(hub), tmp_path / "t", seed=0)
    assert err.value.reason == "not_found"
