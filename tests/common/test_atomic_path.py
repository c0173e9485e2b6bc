"""`atomic_path`: the temp-and-rename for writers that need a file name of their own."""
from __future__ import annotations

import os

import pytest

from common.atomic import atomic_path


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_file_appears_only_when_the_block_ends(tmp_path):
    target = tmp_path / "sub" / "lib.so"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        assert not target.exists() and tmp.parent == target.parent
    assert target.read_bytes() == b"half" and _temps(target.parent) == []
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_an_exception_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new, half written")
            raise RuntimeError("compiler failed")
    assert target.read_text() == "old" and _temps(tmp_path) == []


def test_a_folder_published_first_by_another_process_is_kept(tmp_path):
    target = tmp_path / "cache-entry"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "labels.csv").write_text("ours")
        target.mkdir()
        (target / "labels.csv").write_text("theirs")
    assert (target / "labels.csv").read_text() == "theirs" and _temps(tmp_path) == []


def test_a_dead_writers_temp_folder_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "cache-entry"
    dead = tmp_path / f".{target.name}.999999999.abc.tmp"  # no such pid
    (dead / "images").mkdir(parents=True)
    with atomic_path(target, directory=True) as tmp:
        (tmp / "labels.csv").write_text("x")
    assert not dead.exists() and (target / "labels.csv").exists()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
