"""Atomic writes: all or nothing, no temp files left, ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from model.fileio import atomic_path, atomic_write, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "labels.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["labels.csv"]


@pytest.mark.parametrize("fsync", [False, True])  # checkpoints are written with fsync
def test_new_files_get_the_umask_permissions_not_owner_only(tmp_path, fsync):
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "sub" / "team.pth", fsync=fsync) as tmp:
            tmp.write_bytes(b"model")
    finally:
        os.umask(old)
    written = tmp_path / "sub" / "team.pth"
    assert written.read_bytes() == b"model"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644


def test_write_text_and_binary_mode(tmp_path):
    assert write_text(tmp_path / "a.md", "é\n").read_text(encoding="utf-8") == "é\n"
    with atomic_write(tmp_path / "b.bin", "wb", fsync=True) as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="whole files"):
        atomic_write(tmp_path / "c", "a").__enter__()
