"""Pure helpers of the Hub dataset check: licence, columns, feature types, config choice, search, samples."""

from __future__ import annotations

from engine.synth.hub import (
    describe_samples,
    extract_licence,
    missing_columns,
    pick_config,
    search_match,
    unsupported_columns,
)
from engine.synth.records import DatasetCheck, DatasetProposal


def _ds(inputs: list[str], target: str) -> DatasetProposal:
    return DatasetProposal(hf_id="a/b", input_columns=inputs, target_column=target)


def test_licence_from_card_string_list_or_tags():
    assert extract_licence({"license": "Apache-2.0"}, ["license:mit"]) == "apache-2.0"
    assert extract_licence({"license": ["cc-by-4.0", "mit"]}, None) == "cc-by-4.0"
    assert extract_licence({"license": []}, ["language:en", "license:MIT"]) == "mit"
    assert extract_licence({}, ["language:en"]) is None
    assert extract_licence(None, None) is None


def test_licence_from_card_data_object():
    class Card:
        license = "odc-by"

    assert extract_licence(Card(), []) == "odc-by"


def test_missing_columns_keep_proposal_order_and_drop_duplicates():
    assert missing_columns(_ds(["a", "z", "b", "z"], "y"), ["a", "b", "c"]) == ["z", "y"]
    assert missing_columns(_ds(["a"], "c"), ["a", "b", "c"]) == []


def test_unsupported_columns_are_non_value_features():
    features = [{"name": "img", "type": {"_type": "Image"}},
                {"name": "x", "type": {"_type": "Value", "dtype": "int64"}},
                {"name": "y", "type": {"_type": "ClassLabel", "names": ["a", "b"]}},
                {"name": "seq", "type": {"_type": "List", "feature": {"_type": "Value", "dtype": "float32"}}}]
    assert unsupported_columns(_ds(["img", "x", "seq"], "y"), features) == ["img", "seq"]
    assert unsupported_columns(_ds(["x"], "y"), features) == []


def test_pick_config_prefers_default_then_one_with_the_split():
    splits = [{"config": "a", "split": "test"}, {"config": "b", "split": "train"}, {"config": "default", "split": "x"}]
    assert pick_config(splits, "train") == "default"
    assert pick_config(splits[:2], "train") == "b"
    assert pick_config(splits[:2], "validation") == "a"
    assert pick_config([], "train") is None


def test_search_match_exact_case_then_same_name_other_owner():
    cands = ["other/iris-extended", "uci/Iris", "mirror/iris"]
    assert search_match("UCI/iris", cands) == "uci/Iris"
    assert search_match("fake/iris", cands) == "uci/Iris"
    assert search_match("iris", cands) == "uci/Iris"
    assert search_match("fake/wine", cands) is None


def test_describe_samples_exact_markdown():
    check = DatasetCheck(ok=True, hf_id="a/b", columns=["text", "n", "label"], sample_rows=[
        {"text": "line one\nline | two", "n": 1.5, "label": None},
        {"text": "x" * 50, "n": 2, "label": "pos"},
        {"text": "third", "n": 3, "label": "neg"},
    ])
    assert describe_samples(check, 2, width=12) == (
        "| text | n | label |\n"
        "|---|---|---|\n"
        "| line one li… | 1.5 |  |\n"
        "| xxxxxxxxxxx… | 2 | pos |"
    )


def test_describe_samples_without_columns_uses_row_keys_and_empty_is_empty():
    check = DatasetCheck(ok=True, hf_id="a/b", sample_rows=[{"a": 1, "b": 2}])
    assert describe_samples(check, 5) == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert describe_samples(DatasetCheck(ok=False, hf_id="a/b"), 5) == ""


def test_describe_samples_picks_columns():
    check = DatasetCheck(ok=True, hf_id="a/b", columns=["a", "b", "c"], sample_rows=[{"a": 1, "b": 2, "c": 3}])
    assert describe_samples(check, 1, columns=["c", "a"]) == "| c | a |\n|---|---|\n| 3 | 1 |"
