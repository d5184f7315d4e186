"""drox.atomic.atomic_write_dir: a folder appears whole or not at all."""

from __future__ import annotations

import os

import pytest

from drox.atomic import atomic_write_dir


def test_folder_is_renamed_into_place_when_whole_and_replaces_an_old_one(tmp_path):
    final = tmp_path / "out" / "model"
    atomic_write_dir(final, lambda d: (d / "a.txt").write_text("one"))
    assert sorted(p.name for p in final.iterdir()) == ["a.txt"]
    atomic_write_dir(final, lambda d: (d / "b.txt").write_text("two"))  # replaced whole: a.txt is gone
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["model"]  # no temp folder left
    umask = os.umask(0)
    os.umask(umask)
    assert final.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder, not mkdtemp's 0700


def test_a_failing_write_leaves_neither_folder_nor_temp(tmp_path):
    final = tmp_path / "step-000003"

    def write(d):
        (d / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write_dir(final, write, tmp_prefix=".tmp-step-000003-")
    assert list(tmp_path.iterdir()) == []
