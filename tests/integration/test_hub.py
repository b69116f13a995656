"""The Hub dataset check against a loopback Hub over HTTP, with the production huggingface_hub client unchanged."""

from __future__ import annotations

import socket

import pytest
import requests

from engine.config import HubConfig
from engine.errors import ConfigError, HubError
from engine.synth.hub import HubDatasetValidator, describe_samples
from engine.testing.loopback_hub import LoopbackDataset, parquet_bytes
from engine.synth.records import DatasetProposal, ProposalRecord

try:
    from tests.hub_fixtures import OTHER_TOKEN, TOKEN, TOKEN_ENV, by_id, hub_config
except ImportError:  # tests/ is not a package: pytest put that folder on sys.path
    from hub_fixtures import OTHER_TOKEN, TOKEN, TOKEN_ENV, by_id, hub_config

# Every test reads the one module-scoped `hub` (tests/hub_fixtures.py); none pushes to it.
pytestmark = pytest.mark.usefixtures("hub_env")

IRIS = {
    "sepal_length": [5.1, 4.9, 6.3, 5.8, 7.1, 6.5, 5.0, 6.7],
    "petal_length": [1.4, 1.4, 6.0, 5.1, 5.9, 5.8, 1.5, 4.4],
    "species": ["setosa", "setosa", "virginica", "virginica", "virginica", "virginica", "setosa", "versicolor"],
}


@pytest.fixture(scope="module")
def hub_datasets() -> dict[str, LoopbackDataset]:
    """Iris (plain, gated to TOKEN, private, disabled), an image dataset licensed by tag, one with two configs."""
    iris = parquet_bytes(IRIS)
    images = parquet_bytes({"image": [{"bytes": b"\x89PNG", "path": "a.png"}] * 3, "label": [0, 1, 0]})
    multi = {"small/train-00000-of-00001.parquet": parquet_bytes({"a": [1, 2], "y": [0, 1]}),
             "large/train-00000-of-00001.parquet": parquet_bytes({"b": [1, 2, 3], "y": [0, 1, 1]})}
    return by_id(
        LoopbackDataset(id="acme/toy-iris", files={"data/train-00000-of-00001.parquet": iris, "README.md": b"# iris"}),
        LoopbackDataset(id="acme/gated-iris", files={"train.csv": b"x,y\n1,0\n2,1\n"}, gated="manual",
                        licence="cc-by-4.0", access_tokens=frozenset({TOKEN})),
        LoopbackDataset(id="acme/secret", files={"train.csv": b"x,y\n1,0\n"}, private=True),
        LoopbackDataset(id="acme/gone", files={"train.csv": b"x,y\n1,0\n"}, disabled=True),
        LoopbackDataset(id="acme/pictures", files={"data/train-0.parquet": images}, licence=None,
                        tags=["license:apache-2.0"]),
        LoopbackDataset(id="acme/multi", files=multi),
    )


def _proposal(hf_id: str, inputs: list[str], target: str, config: str | None = None, split: str = "train"):
    return ProposalRecord(
        proposal_id="p1", topic_id="t1", topic="flowers", domain="tabular", name="Iris species",
        description="Classify the species.", task_type="classification", metric="accuracy", direction="max",
        dataset=DatasetProposal(hf_id=hf_id, config=config, split=split, input_columns=inputs, target_column=target),
    )


IRIS_PROPOSAL = (["sepal_length", "petal_length"], "species")


def test_exact_id_is_found_pinned_and_sampled(hub):
    check = HubDatasetValidator(hub_config(hub, sample_rows=3)).check(_proposal("acme/toy-iris", *IRIS_PROPOSAL))
    assert check.ok, check.detail
    assert check.hf_id == "acme/toy-iris"
    assert check.corrected_from is None
    assert check.revision == hub.main_sha("acme/toy-iris")
    assert len(check.revision) == 40
    assert check.licence == "mit"
    assert (check.config, check.split) == ("default", "train")
    assert check.columns == ["sepal_length", "petal_length", "species"]
    assert check.sample_rows == [
        {"sepal_length": 5.1, "petal_length": 1.4, "species": "setosa"},
        {"sepal_length": 4.9, "petal_length": 1.4, "species": "setosa"},
        {"sepal_length": 6.3, "petal_length": 6.0, "species": "virginica"},
    ]
    assert check.size_bytes == len(parquet_bytes(IRIS))
    assert describe_samples(check, 2) == (
        "| sepal_length | petal_length | species |\n"
        "|---|---|---|\n"
        "| 5.1 | 1.4 | setosa |\n"
        "| 4.9 | 1.4 | setosa |"
    )
    assert ("GET", "/first-rows") in hub.requests


def test_hallucinated_id_is_rejected_not_found(hub):
    check = HubDatasetValidator(hub_config(hub)).check(_proposal("someone/no-such-dataset", *IRIS_PROPOSAL))
    assert not check.ok
    assert check.reason == "not_found"
    assert "someone/no-such-dataset" in check.detail


@pytest.mark.parametrize("asked", ["wrongowner/toy-iris", "ACME/Toy-Iris", "toy-iris"])
def test_wrong_owner_or_case_is_corrected_by_search(hub, asked):
    check = HubDatasetValidator(hub_config(hub)).check(_proposal(asked, *IRIS_PROPOSAL))
    assert check.ok, check.detail
    assert check.hf_id == "acme/toy-iris"
    assert check.corrected_from == asked
    assert check.revision == hub.main_sha("acme/toy-iris")


def test_gated_without_token_is_rejected(hub):
    check = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/gated-iris", ["x"], "y"))
    assert (check.ok, check.reason) == (False, "gated")
    assert TOKEN_ENV in check.detail


def test_gated_with_token_is_accepted_and_token_never_logged(hub, monkeypatch, caplog):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    caplog.set_level("DEBUG")
    check = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/gated-iris", ["x"], "y"))
    assert check.ok, check.detail
    assert check.licence == "cc-by-4.0"
    assert check.sample_rows == [{"x": 1, "y": 0}, {"x": 2, "y": 1}]
    assert TOKEN not in caplog.text
    assert TOKEN not in check.model_dump_json()


def test_gated_with_a_token_not_granted_access_is_rejected(hub, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, OTHER_TOKEN)
    check = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/gated-iris", ["x"], "y"))
    assert (check.ok, check.reason) == (False, "gated")
    assert "401 ExternalUnauthenticatedError" in check.detail
    assert OTHER_TOKEN not in check.detail


def test_a_token_the_hub_rejects_is_a_config_error(hub, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, "hf_not_a_valid_token")
    with pytest.raises(ConfigError, match=TOKEN_ENV) as err:
        HubDatasetValidator(hub_config(hub)).check(_proposal("acme/toy-iris", *IRIS_PROPOSAL))
    assert "hf_not_a_valid_token" not in str(err.value)


def test_private_is_not_found_anonymously_and_private_with_token(hub, monkeypatch):
    anonymous = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/secret", ["x"], "y"))
    assert anonymous.reason == "not_found"
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    authed = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/secret", ["x"], "y"))
    assert (authed.ok, authed.reason, authed.hf_id) == (False, "private", "acme/secret")


def test_disabled_is_rejected(hub):
    check = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/gone", ["x"], "y"))
    assert (check.ok, check.reason) == (False, "disabled")


def test_missing_column_is_rejected_naming_it_and_the_available_ones(hub):
    proposal = _proposal("acme/toy-iris", ["sepal_length", "sepal_width"], "kind")
    check = HubDatasetValidator(hub_config(hub)).check(proposal)
    assert (check.ok, check.reason) == (False, "columns")
    assert check.detail == ("missing: ['sepal_width', 'kind']; "
                            "available: ['sepal_length', 'petal_length', 'species']")
    assert check.revision == hub.main_sha("acme/toy-iris")


def test_missing_split_is_rejected(hub):
    check = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/toy-iris", *IRIS_PROPOSAL, split="test"))
    assert (check.ok, check.reason) == (False, "split")
    assert "available: ['train']" in check.detail


def test_image_columns_are_unsupported_and_licence_comes_from_tags(hub):
    check = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/pictures", ["image"], "label"))
    assert (check.ok, check.reason) == (False, "unsupported_features")
    assert "['image']" in check.detail
    assert check.licence == "apache-2.0"


def test_config_named_or_picked_from_the_viewer(hub):
    named = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/multi", ["b"], "y", config="large"))
    assert named.ok, named.detail
    assert (named.config, named.columns) == ("large", ["b", "y"])
    picked = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/multi", ["b"], "y"))
    # No `default` config: the viewer's first config with the split (the loopback lists them sorted).
    assert (picked.config, picked.reason) == ("large", None)


def test_unknown_config_is_a_viewer_reject(hub):
    check = HubDatasetValidator(hub_config(hub)).check(_proposal("acme/multi", ["b"], "y", config="huge"))
    assert (check.ok, check.reason, check.config) == (False, "viewer", "huge")
    assert "404 ResponseNotFound" in check.detail


def test_unreachable_hub_raises_hub_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = HubConfig(endpoint=f"http://127.0.0.1:{port}", viewer_url=f"http://127.0.0.1:{port}",
                    token_env=TOKEN_ENV, timeout_s=5)
    with pytest.raises(HubError, match="unreachable"):
        HubDatasetValidator(cfg).check(_proposal("acme/toy-iris", *IRIS_PROPOSAL))


def test_viewer_rows_pages_through_a_split_like_the_real_viewer(hub):
    r = requests.get(f"{hub.viewer_url}/rows", params={"dataset": "acme/toy-iris", "config": "default",
                                                       "split": "train", "offset": 6, "length": 5}, timeout=10)
    body = r.json()
    assert r.status_code == 200
    assert body["num_rows_total"] == 8
    assert body["rows"] == [
        {"row_idx": 6, "row": {"sepal_length": 5.0, "petal_length": 1.5, "species": "setosa"}, "truncated_cells": []},
        {"row_idx": 7, "row": {"sepal_length": 6.7, "petal_length": 4.4, "species": "versicolor"},
         "truncated_cells": []},
    ]
