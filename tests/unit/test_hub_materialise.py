"""Pure helpers of materialisation: file selection, splits, ids, licence and feature guards, the CSV layout."""

from __future__ import annotations

import pandas as pd
import pytest

from engine.errors import DatasetRejectedError
from engine.synth.materialise import (
    check_licence,
    id_column_for,
    select_files,
    split_of,
    split_rows,
    unsupported,
    write_task_data,
)


def test_split_of_hub_layouts():
    assert split_of("data/train-00000-of-00002.parquet") == "train"
    assert split_of("data/validation-00000-of-00001.parquet") == "validation"
    assert split_of("cola/test-00000-of-00001.parquet") == "test"
    assert split_of("dev.csv") == "validation"
    assert split_of("plain/valid/0000.parquet") == "validation"
    assert split_of("iris.csv") == "train"


def test_select_files_by_config():
    paths = ["README.md", "data/train-0.parquet", "data/train-1.parquet", "data/test-0.parquet",
             "cola/train-0.parquet", "cola/validation-0.parquet", "sst2/train-0.parquet", "extra.csv"]
    assert select_files(paths, None) == {"test": ["data/test-0.parquet"],
                                         "train": ["data/train-0.parquet", "data/train-1.parquet", "extra.csv"]}
    assert select_files(paths, "default") == select_files(paths, None)
    assert select_files(paths, "cola") == {"train": ["cola/train-0.parquet"],
                                           "validation": ["cola/validation-0.parquet"]}
    assert select_files(paths, "mnli") == {}


def _frame(n: int, offset: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"x": range(offset, offset + n), "y": [i % 2 for i in range(n)]})


def test_split_rows_holds_out_fifteen_percent_each():
    splits, sources = split_rows({"train": _frame(100)}, "train", "y", seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 70, "validation": 15, "test": 15}
    assert sorted(pd.concat(splits.values())["x"]) == list(range(100))
    assert sources == {"train": "train", "validation": "train (held out)", "test": "train (held out)"}


def test_split_rows_is_seeded():
    a, _ = split_rows({"train": _frame(40)}, "train", "y", seed=5)
    b, _ = split_rows({"train": _frame(40)}, "train", "y", seed=5)
    c, _ = split_rows({"train": _frame(40)}, "train", "y", seed=6)
    assert list(a["test"]["x"]) == list(b["test"]["x"])
    assert list(a["test"]["x"]) != list(c["test"]["x"])


def test_split_rows_uses_labelled_splits_and_ignores_unlabelled_test():
    unlabelled = pd.DataFrame({"x": [1, 2, 3], "y": [-1, -1, -1]})
    frames = {"train": _frame(20), "validation": _frame(6, 100), "test": unlabelled}
    splits, sources = split_rows(frames, "train", "y", seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 17, "validation": 6, "test": 3}
    assert sources == {"train": "train", "validation": "validation", "test": "train (held out)"}
    assert sorted(splits["validation"]["x"]) == list(range(100, 106))
    assert set(splits["test"]["x"]) < set(range(20))


def test_split_rows_rejects_too_few_rows():
    with pytest.raises(DatasetRejectedError) as err:
        split_rows({"train": _frame(5)}, "train", "y", seed=0)
    assert err.value.reason == "too_small"


def test_id_column_avoids_data_columns():
    assert id_column_for(["x", "y"]) == "id"
    assert id_column_for(["id", "y"]) == "row_id"
    with pytest.raises(DatasetRejectedError):
        id_column_for(["id", "row_id", "_id"])


def test_licence_allow_list():
    assert check_licence("MIT", ["mit"]) == "mit"
    assert check_licence(None, ["unknown"]) == "unknown"
    with pytest.raises(DatasetRejectedError) as err:
        check_licence("cc-by-nc-4.0", ["mit"])
    assert err.value.reason == "licence"
    assert err.value.detail == ("licence 'cc-by-nc-4.0' is not in synth.hub.licence_allow ['mit']; "
                                "add it there if its terms allow this use")


def test_unsupported_detects_images_bytes_and_lists():
    frame = pd.DataFrame({"img": [{"bytes": b"x", "path": "p"}], "raw": [b"\x00"], "seq": [[1, 2]],
                          "text": ["ok"], "n": [1]})
    assert unsupported(frame) == ["img", "raw", "seq"]


def test_write_task_data_layout(tmp_path):
    splits = {"train": pd.DataFrame({"x": [1, 2], "y": [0, 1]}), "validation": pd.DataFrame({"x": [3], "y": [1]}),
              "test": pd.DataFrame({"x": [4, 5], "y": [0, 0]})}
    files, id_col = write_task_data(splits, ["x"], "y", tmp_path)
    assert id_col == "id"
    read = lambda key: (tmp_path / files[key]).read_text()  # noqa: E731
    assert read("train") == "x,y\n1,0\n2,1\n"
    assert read("validation") == "id,x\n0,3\n"
    assert read("test") == "id,x\n1,4\n2,5\n"
    assert read("labels_validation") == "id,y\n0,1\n"
    assert read("labels_test") == "id,y\n1,0\n2,0\n"


def test_docstring_examples():
    import doctest

    import engine.synth.hub
    import engine.synth.materialise

    for module in (engine.synth.hub, engine.synth.materialise):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__
