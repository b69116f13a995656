"""The loopback hub's pure pieces: content revisions, git blob ids and its viewer layout rule."""

from __future__ import annotations

from engine.testing.loopback_hub import content_sha, git_blob_oid, viewer_layout


def test_git_blob_oid_matches_git():
    # `printf 'hello\n' | git hash-object --stdin`
    assert git_blob_oid(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_content_sha_depends_on_content_only():
    a = content_sha({"a.csv": b"1", "b.csv": b"2"})
    assert a == content_sha({"b.csv": b"2", "a.csv": b"1"})
    assert a != content_sha({"a.csv": b"1", "b.csv": b"3"})
    assert len(a) == 40


def test_viewer_layout():
    files = {"README.md": b"", "data/train-0.parquet": b"", "data/test-0.parquet": b"", "cfg/validation.csv": b"",
             "notes.json": b""}
    assert viewer_layout(files) == {("cfg", "validation"): ["cfg/validation.csv"],
                                    ("default", "test"): ["data/test-0.parquet"],
                                    ("default", "train"): ["data/train-0.parquet", "notes.json"]}
