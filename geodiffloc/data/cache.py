"""On-disk cache of embeddings keyed by the inputs and the encoder that made them.

Benchmarks, tutorials and training jobs often embed the same texts with the same
encoder; the cache turns the second run into a file read. The key hashes the
encoder's ``name`` and the exact inputs, so a different encoder or a changed text
never hits a stale entry.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .._fingerprint import fingerprint
from .._io import atomic_path

__all__ = ["cached_encode", "default_cache_dir", "embedding_cache_key"]

log = logging.getLogger("geodiffloc.data")


def default_cache_dir() -> Path:
    """Folder for cached embeddings.

    ``$GEODIFFLOC_CACHE_DIR`` if set, else the platform's user cache folder
    (``platformdirs.user_cache_dir("geodiffloc")``, e.g. ``~/.cache/geodiffloc``).

    Returns
    -------
    Path
        The folder (not created).

    Examples
    --------
    >>> isinstance(default_cache_dir(), Path)
    True
    """
    env = os.environ.get("GEODIFFLOC_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("geodiffloc"))


def embedding_cache_key(encoder_name: str, texts: Sequence[str]) -> str:
    """SHA-256 hex digest of an encoder name and a list of texts.

    Examples
    --------
    >>> embedding_cache_key("a", ["x", "y"]) == embedding_cache_key("a", ["x", "y"])
    True
    >>> embedding_cache_key("a", ["x", "y"]) == embedding_cache_key("b", ["x", "y"])
    False
    """
    return fingerprint(encoder_name, list(texts))


def cached_encode(
    encoder: Any,
    texts: Sequence[str],
    *,
    cache_dir: str | os.PathLike | Literal[False] | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    """``encoder.encode(texts)`` (no augmentation), read from / written to a disk cache.

    Parameters
    ----------
    encoder
        Any object with ``name``, ``dim`` and ``encode`` (the Encoder protocol).
    texts
        Inputs to embed (strings; their exact content is part of the key).
    cache_dir
        Cache folder; ``None`` for :func:`default_cache_dir`, ``False`` to disable.
    batch_size, progress
        Passed to ``encoder.encode`` on a cache miss.

    Returns
    -------
    torch.Tensor
        ``(n, dim)`` float32.

    Raises
    ------
    ValueError
        If the encoder returns the wrong shape.

    Examples
    --------
    >>> import tempfile
    >>> class Len:
    ...     name, dim = "len", 1
    ...     def encode(self, xs, **kw):
    ...         return torch.tensor([[float(len(x))] for x in xs])
    >>> cached_encode(Len(), ["ab", "c"], cache_dir=tempfile.mkdtemp()).tolist()
    [[2.0], [1.0]]
    """
    texts = list(texts)
    path = None
    if cache_dir is not False:
        folder = Path(default_cache_dir() if cache_dir is None else cache_dir) / "embeddings"
        path = folder / f"{embedding_cache_key(encoder.name, texts)[:40]}.npy"
        hit = _read_entry(path, (len(texts), encoder.dim))
        if hit is not None:
            return hit
    emb = encoder.encode(texts, batch_size=batch_size, augment=False, progress=progress)
    emb = torch.as_tensor(emb, dtype=torch.float32).cpu()
    if emb.shape != (len(texts), encoder.dim):
        raise ValueError(
            f"encoder {encoder.name!r} returned shape {tuple(emb.shape)} for {len(texts)} "
            f"inputs; expected ({len(texts)}, {encoder.dim})."
        )
    if path is not None and bool(torch.isfinite(emb).all()):
        _write_entry(path, emb.numpy())
    return emb


def _read_entry(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    """A cache entry if it is intact (readable, right shape, finite), else ``None``.

    Entries are written atomically, so a bad one means outside damage (a truncated copy,
    a full disk elsewhere); it is rebuilt rather than trusted.
    """
    if not path.exists():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        log.warning("embedding cache entry %s is unreadable (%s); recomputing it.", path, err)
        return None
    if arr.shape != shape or not np.issubdtype(arr.dtype, np.floating) \
            or not np.isfinite(arr).all():
        log.warning("embedding cache entry %s has shape %s / dtype %s or non-finite values; "
                    "recomputing it.", path, arr.shape, arr.dtype)
        return None
    return torch.from_numpy(np.asarray(arr, dtype=np.float32))


def _write_entry(path: Path, arr: np.ndarray) -> None:
    """Store an entry; the cache is optional, so a full disk or a read-only folder only warns."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, overwrite=path.exists()) as tmp:
            np.save(tmp, arr)
    except FileExistsError:  # another process wrote the same entry meanwhile
        pass
    except OSError as err:
        log.warning("could not write the embedding cache entry %s (%s); continuing without "
                    "caching it.", path, err)
