"""Atomic writes: a reader sees the old file or the new one, never half of one, and no temporary is left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from srgan_deploy.files import atomic_write_bytes, atomic_write_text, partial_path


def test_atomic_writes_replace_whole_files_and_leave_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    assert atomic_write_text(target, "old") == target
    atomic_write_bytes(target, b"new", durable=True)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "record.json"
    atomic_write_text(target, "old")

    def no_rename(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert not partial_path(target).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]
