"""A dataset version is written aside and renamed into place: a cache never holds half a version."""

from __future__ import annotations

import pytest

from pipelines.stages.ingest import written_aside


def test_a_finished_version_is_renamed_into_place(tmp_path):
    root = tmp_path / "cache" / "austen-0123"
    with written_aside(root) as tmp:
        assert tmp.parent == root.parent and tmp != root and not root.exists()
        (tmp / "vocab.json").write_text("{}")
    assert (root / "vocab.json").read_text() == "{}"
    assert [p.name for p in root.parent.iterdir()] == ["austen-0123"]  # nothing left beside it


def test_a_failed_version_leaves_nothing(tmp_path):
    root = tmp_path / "austen-0123"
    with pytest.raises(KeyboardInterrupt):
        with written_aside(root) as tmp:
            (tmp / "train.npy").write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
