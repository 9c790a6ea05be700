"""Safe file writing shared by every writer in the library.

All files are written to a temporary sibling, flushed to disk and renamed into place,
so a crash (even ``kill -9`` or a power cut) never leaves a half-written raster, table
or checkpoint; an existing file is only replaced when the caller asked for it. A set of
files that belongs together (the outputs of one ``locate`` run) is written into a
hidden staging folder and moved into place at the end (:func:`staged_outputs`), and
what an interrupted run left behind is removed by the next one
(:func:`recover_staged`, :func:`remove_orphans`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "atomic_path", "check_safe_checkpoint", "check_writable", "fsync_path", "recover_staged",
    "remove_orphans", "staged_outputs",
]

#: Prefix of the staging folders of :func:`staged_outputs`.
STAGING_PREFIX = ".staging-"


def _check_folder_writable(folder: Path) -> None:
    """Create and delete a probe file: the only test of writability that tells the truth.

    ``os.access`` is fooled by read-only mounts, ACLs and root; a probe is not.
    """
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left in {folder}; free some disk space "
                          "or choose another folder.") from None
        raise PermissionError(
            f"cannot write to folder {folder} ({err.strerror or err}); choose a writable "
            "folder or change its permissions."
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_writable(path: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``path`` as a Path after checking it can be written, before any work is done.

    Raises
    ------
    FileExistsError
        If the file exists and ``overwrite`` is false (the message says how to replace it).
    FileNotFoundError
        If the parent folder does not exist.
    IsADirectoryError
        If ``path`` is an existing folder.
    NotADirectoryError
        If the parent "folder" is a file.
    PermissionError
        If the parent folder cannot be written to (tested by creating a probe file).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_writable(d / "a.tif", overwrite=False).name
    'a.tif'
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name inside it.")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it."
        )
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"{parent} is a file, not a folder; choose another folder.")
    if not parent.exists():
        raise FileNotFoundError(f"folder {parent} does not exist; create it first.")
    _check_folder_writable(parent)
    return path


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file (or a folder's entries) to disk; a no-op where the OS refuses."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() and hasattr(os, "O_DIRECTORY")
                           else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. folders on Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success flush it and rename it onto ``path``.

    The temporary file keeps the target's suffix so format-sniffing writers (GDAL,
    pyogrio) pick the right driver. On error (or an interrupt) the temporary file is
    removed and the target is untouched.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(d / "a.txt") as tmp:
    ...     _ = tmp.write_text("hello")
    >>> (d / "a.txt").read_text()
    'hello'
    """
    target = check_writable(path, overwrite)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=target.suffix + ".tmp" + target.suffix,
        dir=target.parent,
    )
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # writers that refuse existing files (GDAL, pyogrio) create it themselves
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"nothing was written to the temporary file for {target}.")
        if target.exists() and not overwrite:  # appeared meanwhile: still never clobber
            raise FileExistsError(f"{target} appeared while writing; not replacing it.")
        fsync_path(tmp)  # the bytes reach the disk before the name does
        os.replace(tmp, target)
        fsync_path(target.parent)
    finally:
        with contextlib.suppress(OSError):
            if tmp.is_dir():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()


_COMMIT = "COMMIT"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def _publish(stage: Path, root: Path, names: list[str]) -> None:
    for n in names:
        if (stage / n).exists():
            os.replace(stage / n, root / n)
    fsync_path(root)


def _owner_pid(name: str, prefix: str) -> int:
    try:
        return int(name[len(prefix):].split("-", 1)[0])
    except ValueError:
        return -1


def remove_orphans(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Delete ``<prefix><pid>-*`` temporaries in ``folder`` whose process is gone.

    Temporary folders named with their owner's process id (``.train-1234-x8f2``) are
    removed once that process no longer runs (killed, crashed); those of live
    processes, and names without a pid, are left alone.

    Returns
    -------
    list of Path
        What was removed.
    """
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in root.glob(prefix + "*"):
        pid = _owner_pid(p.name, prefix)
        if pid <= 0 or _pid_alive(pid):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed


def recover_staged(out_dir: str | os.PathLike) -> list[str]:
    """Finish or undo the output sets of runs that died in ``out_dir``.

    A staging folder whose run had committed (all files written, ``COMMIT`` recorded)
    is published, so the set is complete; one that had not is deleted. Folders of
    runs still alive (by process id) are left alone.

    Returns
    -------
    list of str
        One line per folder handled (for logs).
    """
    root = Path(out_dir)
    done: list[str] = []
    if not root.is_dir():
        return done
    for stage in sorted(root.glob(STAGING_PREFIX + "*")):
        pid = _owner_pid(stage.name, STAGING_PREFIX)
        if pid > 0 and _pid_alive(pid):
            continue
        commit = stage / _COMMIT
        if commit.is_file():
            names = [n for n in commit.read_text().splitlines() if n and "/" not in n
                     and "\\" not in n and n not in (".", "..")]
            _publish(stage, root, names)
            done.append(f"completed the outputs of an interrupted run ({', '.join(names)})")
        else:
            done.append(f"removed the partial outputs of an interrupted run ({stage.name})")
        shutil.rmtree(stage, ignore_errors=True)
    return done


@contextlib.contextmanager
def staged_outputs(out_dir: str | os.PathLike, names: list[str], *,
                   overwrite: bool = False) -> Iterator[Path]:
    """Write a set of files into a hidden staging folder; move them all into ``out_dir`` at the end.

    Either every file of the set appears in ``out_dir`` or none does: the set is
    committed (its file list recorded in the staging folder) before the first rename,
    so a run killed mid-way is rolled forward by the next one
    (:func:`recover_staged`), and a run killed before the commit leaves only a hidden
    ``.staging-*`` folder that the next run deletes.

    Parameters
    ----------
    out_dir
        The output folder (must exist).
    names
        File names the caller will write into the yielded folder.
    overwrite
        Replace existing files of the same names.

    Yields
    ------
    Path
        The staging folder (inside ``out_dir``, so the final renames never cross disks).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> with staged_outputs(d, ["a.txt", "b.txt"]) as stage:
    ...     _ = (stage / "a.txt").write_text("1")
    ...     _ = (stage / "b.txt").write_text("2")
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt', 'b.txt']
    """
    root = Path(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root))
    try:
        yield stage
        missing = [n for n in names if not (stage / n).exists()]
        if missing:
            raise RuntimeError(f"outputs {missing} were not written; nothing was published.")
        if not overwrite:
            clash = [str(root / n) for n in names if (root / n).exists()]
            if clash:
                raise FileExistsError(f"{', '.join(clash)} appeared while writing; not "
                                      "replacing them (pass overwrite=True).")
        for n in names:
            fsync_path(stage / n)
        commit = stage / _COMMIT
        with open(commit.with_suffix(".tmp"), "w") as f:
            f.write("\n".join(names) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(commit.with_suffix(".tmp"), commit)
        fsync_path(stage)
        _publish(stage, root, names)
    finally:
        if (stage / _COMMIT).is_file():  # interrupted while publishing: finish, never half
            _publish(stage, root, names)
        shutil.rmtree(stage, ignore_errors=True)


def check_safe_checkpoint(path: str | os.PathLike) -> None:
    """Refuse a PyTorch checkpoint that cannot be read without running code from it.

    Loads it with ``torch.load(weights_only=True)`` (memory-mapped when possible, so a
    large checkpoint costs little); a pickle that asks for arbitrary objects, or a
    damaged file, becomes a ``ValueError`` that does *not* suggest ``weights_only=False``
    (never safe for a file someone else made).
    """
    import pickle

    import torch

    try:
        with warnings.catch_warnings():  # torch's pickle-protocol chatter is not for users
            warnings.simplefilter("ignore")
            try:
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:  # not a zip checkpoint: no mmap, read it plainly
                if "mmap" not in str(err):
                    raise
                torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch, zipfile and safetensors each raise their own types
        kind = ("holds Python objects beyond plain weights (loading it could run code)"
                if isinstance(err, pickle.UnpicklingError) else
                "is damaged or not a PyTorch checkpoint")
        raise ValueError(f"checkpoint {os.fspath(path)} {kind}; refusing it. Resume only from "
                         "checkpoints written by geodiffloc train.") from None
