"""Lightning checkpoints written atomically: temp file, fsync, rename.

Lightning's own ``TorchCheckpointIO`` opens the target and writes into it, so a
process killed mid-write (``kill -9``, a node lost, a full disk) leaves a truncated
``last.ckpt`` in place of the previous good one, and ``--resume`` then fails on it.
:class:`AtomicCheckpointIO` writes each checkpoint to a hidden temporary sibling
named after its process (``.ckpt-<pid>-<name>.tmp``), flushes it to disk and renames
it over the target: the target is always either the old complete file or the new
one. Temporaries of killed runs are removed when the next run starts
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from .._io import fsync_path, remove_orphans

__all__ = ["TMP_PREFIX", "AtomicCheckpointIO", "remove_stale_temporaries"]

#: Name prefix of a checkpoint being written (followed by the writer's pid).
TMP_PREFIX = ".ckpt-"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are all-or-nothing (temp + fsync + rename).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> AtomicCheckpointIO().save_checkpoint({"step": 3}, d / "last.ckpt")
    >>> AtomicCheckpointIO().load_checkpoint(d / "last.ckpt")["step"], sorted(
    ...     p.name for p in d.iterdir())
    (3, ['last.ckpt'])
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options.")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{target.name}.",
                                    suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())  # the bytes reach the disk before the name does
            os.replace(name, target)
            fsync_path(target.parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name)
            raise


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the half-written checkpoints of killed runs (their pid no longer runs)."""
    return remove_orphans(folder, TMP_PREFIX)
