"""On-disk cache of embeddings keyed by the inputs and the encoder that made them.

Benchmarks, tutorials and training jobs often embed the same texts with the same
encoder; the cache turns the second run into a file read. The key hashes the
encoder's ``name`` and the exact inputs, so a different encoder or a changed text
never hits a stale entry.

An entry is two files, each written atomically (temp + fsync + rename): the array
``<key>.npy`` and then its manifest ``<key>.json`` (size and SHA-256 of the array file).
An entry is used only if the manifest exists and the array file matches it in size and
hash, is readable, has the expected shape and is finite; anything else (a run killed
between the two writes, a truncated copy, flipped bits) is recomputed and rewritten.
"""

from __future__ import annotations

import hashlib
import io
import json
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


def _manifest_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_entry(path: Path, shape: tuple[int, int]) -> torch.Tensor | None:
    """A cache entry if it is intact, else ``None`` (and it is recomputed).

    Intact: its manifest exists, the array file has the recorded size and SHA-256, and
    the array is readable, of the right shape and finite. Entries are written
    atomically, so a bad one means a run killed between the array and its manifest, or
    outside damage (a truncated copy, flipped bits); it is rebuilt rather than trusted.
    """
    if not path.exists():
        return None
    try:
        manifest = json.loads(_manifest_path(path).read_text())
        size, digest = int(manifest["size"]), str(manifest["sha256"])
    except FileNotFoundError:
        log.info("embedding cache entry %s has no manifest (an older cache, or a run "
                 "stopped while writing it); recomputing it.", path)
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("embedding cache manifest of %s is unreadable (%s); recomputing the "
                    "entry.", path, err)
        return None
    try:
        if path.stat().st_size != size:
            log.warning("embedding cache entry %s has %d bytes, its manifest says %d; "
                        "recomputing it.", path, path.stat().st_size, size)
            return None
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != digest:
            log.warning("embedding cache entry %s does not match its SHA-256; recomputing it.",
                        path)
            return None
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
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
    buf = io.BytesIO()
    np.save(buf, arr)
    raw = buf.getvalue()
    manifest = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                "shape": list(arr.shape), "dtype": str(arr.dtype)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the array first, then the manifest that vouches for it (the commit point)
        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_bytes(raw)
        with atomic_path(_manifest_path(path), overwrite=True) as tmp:
            tmp.write_text(json.dumps(manifest))
    except FileExistsError:  # another process wrote the same entry meanwhile
        pass
    except OSError as err:
        log.warning("could not write the embedding cache entry %s (%s); continuing without "
                    "caching it.", path, err)
