"""The file-safety primitives: writability probes, atomic files, output sets, orphans."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from geodiffloc._io import (
    atomic_path,
    check_writable,
    recover_staged,
    remove_orphans,
    staged_outputs,
)


def test_check_writable_probes_the_folder(tmp_path, monkeypatch):
    assert check_writable(tmp_path / "a.tif", overwrite=False) == tmp_path / "a.tif"
    assert list(tmp_path.iterdir()) == []  # the probe is gone

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match="cannot write to folder"):
        check_writable(tmp_path / "a.tif", overwrite=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="writable"):
            check_writable(ro / "a.tif", overwrite=False)
    finally:
        ro.chmod(0o700)


def test_check_writable_names_folder_and_file_mixups(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_writable(f / "a.tif", overwrite=False)
    with pytest.raises(IsADirectoryError):
        check_writable(tmp_path, overwrite=True)
    with pytest.raises(FileExistsError, match="overwrite"):
        check_writable(f, overwrite=False)
    with pytest.raises(FileNotFoundError):
        check_writable(tmp_path / "no" / "a.tif", overwrite=False)


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(tmp_path / "a.txt",
                                                                overwrite=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert (tmp_path / "a.txt").read_text() == "old"


def test_staged_outputs_publish_all_or_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="not written"), staged_outputs(
            tmp_path, ["a", "b"]) as st:
        (st / "a").write_text("1")  # b never written
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt), staged_outputs(tmp_path, ["a", "b"]) as st:
        (st / "a").write_text("1")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with staged_outputs(tmp_path, ["a", "b"]) as st:
        (st / "a").write_text("1")
        (st / "b").write_text("2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def _dead_pid() -> int:
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True, check=True)
    return int(p.stdout)


def test_recover_rolls_committed_sets_forward_and_others_back(tmp_path):
    pid = _dead_pid()
    committed = tmp_path / f".staging-{pid}-aaaa"
    committed.mkdir()
    (committed / "b").write_text("2")  # "a" was already published before the kill
    (tmp_path / "a").write_text("1")
    (committed / "COMMIT").write_text("a\nb\n")
    partial = tmp_path / f".staging-{pid}-bbbb"
    partial.mkdir()
    (partial / "c").write_text("half")
    alive = tmp_path / f".staging-{os.getpid()}-cccc"  # a run in progress: not touched
    alive.mkdir()
    lines = recover_staged(tmp_path)
    assert len(lines) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a", "b", alive.name])
    assert (tmp_path / "b").read_text() == "2"


def test_remove_orphans_only_removes_dead_owners(tmp_path):
    dead = tmp_path / f".train-{_dead_pid()}-x"
    live = tmp_path / f".train-{os.getpid()}-y"
    other = tmp_path / ".train-nopid"
    for d in (dead, live, other):
        d.mkdir()
    assert remove_orphans(tmp_path, ".train-") == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])
