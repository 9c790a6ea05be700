"""A resumable on-disk store of precomputed embeddings (optionally several views per item).

Encoding millions of photos takes hours, so embeddings are computed once, in chunks,
and training reads them memory-mapped. Layout of a store folder::

    store.json                 encoder name/dim, views, chunk size, segments
    chunks/000000.emb.npy      (k, views, dim) float32
    chunks/000000.latlon.npy   (k, 2) float64 (lat, lon)
    chunks/000000.json         written last: marks the chunk as finished
    index.parquet              one row per item: chunk, row, key, lat, lon

Every file goes through :func:`geodiffloc._io.atomic_path`, and a chunk counts as done
only once its ``.json`` exists, so an interrupted run (crash, Ctrl-C, preemption) is
resumed by calling the same function again: finished chunks are not recomputed.
View 0 is the clean embedding (``augment=False``); views 1.. are augmented, seeded per
chunk, so a resumed store is identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .._fingerprint import fingerprint
from .._io import atomic_path

__all__ = ["FeatureStore"]

_FORMAT = "geodiffloc-feature-store"
_VERSION = 1


def _fingerprint(items: Sequence[Any], latlon: np.ndarray) -> str:
    """The resume check's key: the inputs (paths as text, arrays/images by content)."""
    # a path given as str or as Path is the same input
    keys = [os.fspath(x) if isinstance(x, os.PathLike) else x for x in items]
    return fingerprint(keys, np.asarray(latlon, dtype=np.float64))


def _write_json(path: Path, data: dict[str, Any], overwrite: bool = True) -> None:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=1))


def _save_npy(path: Path, arr: np.ndarray) -> None:
    # a leftover from an interrupted run (no chunk .json yet) is replaced
    with atomic_path(path, overwrite=True) as tmp:
        np.save(tmp, arr)


def _split_inputs(inputs: Any, latlon: Any) -> tuple[list[Any], np.ndarray]:
    if latlon is None:
        if hasattr(inputs, "paths") and hasattr(inputs, "latlon"):  # GeotaggedDataset
            return list(inputs.paths), np.asarray(inputs.latlon, np.float64)
        raise ValueError(
            "latlon is required unless inputs is a GeotaggedDataset; pass latlon=(n, 2)."
        )
    from ..sphere import as_latlon

    arr = np.asarray(latlon.detach().cpu() if isinstance(latlon, torch.Tensor) else latlon,
                     dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"latlon must have shape (n, 2) (lat, lon); got {arr.shape}.")
    items = list(inputs)
    if len(items) != len(arr):
        raise ValueError(f"{len(items)} inputs but {len(arr)} coordinates.")
    lat, lon = as_latlon(lat=arr[:, 0], lon=arr[:, 1]) if len(arr) else (arr[:, 0], arr[:, 1])
    return items, np.stack([lat, lon], axis=1)


class FeatureStore(torch.utils.data.Dataset):
    """Embeddings on disk, read memory-mapped as a torch Dataset of ``(views, latlon)``.

    Open an existing store with ``FeatureStore(root)``; create or resume one with
    :meth:`build`; add items with :meth:`append`.

    Parameters
    ----------
    root
        Store folder.
    view
        What ``__getitem__`` returns as embedding: ``None`` (default) all views
        ``(views, dim)``; an int, that view ``(dim,)``; ``"random"``, one view drawn
        at random per access (torch's RNG), ``(dim,)``.

    Raises
    ------
    ValueError
        If ``root`` is not a feature store or ``view`` is invalid.

    Examples
    --------
    >>> import tempfile
    >>> from geodiffloc.encoders import PrecomputedEmbeddings
    >>> root = tempfile.mkdtemp() + "/store"
    >>> st = FeatureStore.build(root, [[1.0, 2.0]], [[10.0, 20.0]], PrecomputedEmbeddings(2),
    ...                         progress=False)
    >>> emb, ll = st[0]
    >>> emb.shape, ll.tolist()
    (torch.Size([1, 2]), [10.0, 20.0])
    """

    def __init__(self, root: str | os.PathLike, *, view: int | str | None = None) -> None:
        self.root = Path(root)
        meta_path = self.root / "store.json"
        if not meta_path.exists():
            raise ValueError(
                f"{self.root} is not a feature store (no store.json); create one with "
                "FeatureStore.build(root, inputs, latlon, encoder)."
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != _FORMAT:
            raise ValueError(f"{meta_path} is not a geodiffloc feature store.")
        if not (view is None or view == "random" or
                (isinstance(view, int) and 0 <= view < self.views)):
            raise ValueError(f"view must be None, 'random' or 0..{self.views - 1}; got {view!r}.")
        self.view = view
        self._mmaps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._load_chunks()

    # ---- metadata -------------------------------------------------------------------
    @property
    def encoder_name(self) -> str:
        """Name of the encoder that made the embeddings."""
        return str(self.meta["encoder"]["name"])

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.meta["encoder"]["dim"])

    @property
    def views(self) -> int:
        """Views per item (view 0 clean, the others augmented)."""
        return int(self.meta["views"])

    @property
    def complete(self) -> bool:
        """Whether every segment written into the store has finished."""
        return all(s["complete"] for s in self.meta["segments"])

    def _load_chunks(self) -> None:
        chunks: list[tuple[int, int]] = []  # (chunk id, n rows)
        for seg in self.meta["segments"]:
            if not seg["complete"]:
                warnings.warn(
                    f"{self.root} has an unfinished segment ({seg['n_items']} items); "
                    "call build/append again with the same inputs to finish it. Reading "
                    "only finished segments.", stacklevel=3,
                )
                continue
            for c in range(seg["first_chunk"], seg["first_chunk"] + seg["n_chunks"]):
                info = json.loads((self._chunk_path(c, ".json")).read_text())
                chunks.append((c, int(info["n"])))
        self._chunk_ids = [c for c, _ in chunks]
        self._offsets = np.concatenate([[0], np.cumsum([n for _, n in chunks])]).astype(np.int64)

    def _chunk_path(self, c: int, suffix: str) -> Path:
        return self.root / "chunks" / f"{c:06d}{suffix}"

    def _chunk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k not in self._mmaps:
            c = self._chunk_ids[k]
            self._mmaps[k] = (
                np.load(self._chunk_path(c, ".emb.npy"), mmap_mode="r"),
                np.load(self._chunk_path(c, ".latlon.npy"), mmap_mode="r"),
            )
        return self._mmaps[k]

    # ---- Dataset ----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a store of {n} items.")
        i %= n
        k = int(np.searchsorted(self._offsets, i, side="right")) - 1
        emb, ll = self._chunk(k)
        row = i - int(self._offsets[k])
        e = emb[row]
        if self.view == "random":
            e = e[int(torch.randint(self.views, ()))]
        elif self.view is not None:
            e = e[self.view]
        # copy out of the read-only memory map
        return torch.from_numpy(np.array(e, dtype=np.float32)), torch.from_numpy(np.array(ll[row]))

    def embeddings(self, view: int = 0) -> torch.Tensor:
        """All items' embeddings of one view as an ``(n, dim)`` float32 tensor (in memory)."""
        if not 0 <= view < self.views:
            raise ValueError(f"view must be in 0..{self.views - 1}; got {view}.")
        parts = [np.asarray(self._chunk(k)[0][:, view]) for k in range(len(self._chunk_ids))]
        out = np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))

    @property
    def latlon(self) -> torch.Tensor:
        """``(n, 2)`` float64 ``(lat, lon)`` of all items."""
        parts = [np.asarray(self._chunk(k)[1]) for k in range(len(self._chunk_ids))]
        out = np.concatenate(parts) if parts else np.empty((0, 2))
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float64))

    def index(self) -> pd.DataFrame:
        """One row per item: ``chunk, row, key, lat, lon`` (from ``index.parquet``)."""
        return pd.read_parquet(self.root / "index.parquet")

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.root)!r}, {len(self)} items x {self.views} view(s) x "
                f"{self.dim}-d, encoder={self.encoder_name!r})")

    # ---- writing ----------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        root: str | os.PathLike,
        inputs: Any,
        latlon: Any = None,
        encoder: Any = None,
        *,
        views: int = 1,
        chunk_size: int = 1024,
        batch_size: int = 64,
        seed: int = 0,
        progress: bool = True,
    ) -> FeatureStore:
        """Encode ``inputs`` into a new store at ``root``, or resume an interrupted build.

        Parameters
        ----------
        root
            Store folder (created; its parent must exist).
        inputs
            Sequence of encoder inputs (paths, texts, tensors...), or a
            :class:`~geodiffloc.data.sources.GeotaggedDataset` (then ``latlon`` is
            taken from it).
        latlon
            ``(n, 2)`` ``(lat, lon)`` degrees.
        encoder
            Encoder protocol object (``name``, ``dim``, ``encode``).
        views
            Embeddings per item: view 0 clean, views 1.. with ``augment=True``.
        chunk_size
            Items per chunk (the unit of resumption).
        batch_size
            Passed to ``encoder.encode``.
        seed
            Seed of the augmented views (chunk ``c`` uses ``seed`` and ``c``).
        progress
            tqdm bar with items/s.

        Returns
        -------
        FeatureStore

        Raises
        ------
        ValueError
            If ``root`` holds a store from another encoder, other settings or other
            inputs, or on bad arguments.

        Examples
        --------
        >>> import tempfile
        >>> from geodiffloc.encoders import PrecomputedEmbeddings
        >>> root = tempfile.mkdtemp() + "/s"
        >>> x = np.eye(3, dtype=np.float32)
        >>> st = FeatureStore.build(root, x, np.zeros((3, 2)), PrecomputedEmbeddings(3),
        ...                         chunk_size=2, progress=False)
        >>> len(st), st.embeddings().tolist() == x.tolist()
        (3, True)
        """
        if encoder is None:
            raise ValueError("pass the encoder that embeds the inputs (encoder=...).")
        root = Path(root)
        items, ll = _split_inputs(inputs, latlon)
        if (root / "store.json").exists():
            with warnings.catch_warnings():  # the unfinished segment is what we resume
                warnings.simplefilter("ignore")
                store = cls(root)
            store._check_compatible(encoder, views, chunk_size)
            if store.meta["segments"]:
                first = store.meta["segments"][0]
                if first["fingerprint"] != _fingerprint(items, ll):
                    raise ValueError(
                        f"{root} already holds a store built from other inputs; use "
                        "FeatureStore(root).append(...) to add items, or a new folder."
                    )
                if first["complete"]:
                    return store
        else:
            cls._create(root, encoder, views, chunk_size, seed)
            store = cls(root)
        store._run_segment(items, ll, encoder, batch_size=batch_size, progress=progress)
        return cls(root)

    def append(
        self,
        inputs: Any,
        latlon: Any = None,
        encoder: Any = None,
        *,
        batch_size: int = 64,
        progress: bool = True,
    ) -> FeatureStore:
        """Encode more items into this store (resumes an interrupted append of the same inputs).

        Parameters
        ----------
        inputs, latlon, encoder, batch_size, progress
            As in :meth:`build`; the encoder must be the one the store was built with.

        Returns
        -------
        FeatureStore
            ``self``, re-read.

        Raises
        ------
        ValueError
            If the encoder differs from the store's, or an earlier append of other
            inputs is unfinished.
        """
        if encoder is None:
            raise ValueError("pass the encoder the store was built with (encoder=...).")
        self._check_compatible(encoder, self.views, int(self.meta["chunk_size"]))
        items, ll = _split_inputs(inputs, latlon)
        self._run_segment(items, ll, encoder, batch_size=batch_size, progress=progress)
        self.meta = json.loads((self.root / "store.json").read_text())
        self._mmaps.clear()
        self._load_chunks()
        return self

    @staticmethod
    def _create(root: Path, encoder: Any, views: int, chunk_size: int, seed: int) -> None:
        if views < 1 or chunk_size < 1:
            raise ValueError(f"views and chunk_size must be >= 1; got {views}, {chunk_size}.")
        if root.exists() and any(root.iterdir()):
            raise ValueError(f"{root} exists and is not empty; give a new or empty folder.")
        (root / "chunks").mkdir(parents=True, exist_ok=True)
        _write_json(root / "store.json", {
            "format": _FORMAT, "version": _VERSION,
            "encoder": {"name": encoder.name, "dim": int(encoder.dim),
                        "modality": getattr(encoder, "modality", None)},
            "views": int(views), "chunk_size": int(chunk_size), "seed": int(seed),
            "dtype": "float32", "segments": [],
        })

    def _check_compatible(self, encoder: Any, views: int, chunk_size: int) -> None:
        if encoder.name != self.encoder_name or int(encoder.dim) != self.dim:
            raise ValueError(
                f"{self.root} holds {self.dim}-d embeddings from {self.encoder_name!r}; "
                f"refusing to add embeddings from {encoder.name!r} ({encoder.dim}-d). Use "
                "the same encoder or a new store folder."
            )
        if views != self.views or chunk_size != int(self.meta["chunk_size"]):
            raise ValueError(
                f"{self.root} was built with views={self.views}, chunk_size="
                f"{self.meta['chunk_size']}; got views={views}, chunk_size={chunk_size}."
            )

    def _save_meta(self) -> None:
        _write_json(self.root / "store.json", self.meta)

    def _run_segment(
        self, items: list[Any], ll: np.ndarray, encoder: Any, *, batch_size: int, progress: bool
    ) -> None:
        fp = _fingerprint(items, ll)
        segs = self.meta["segments"]
        size = int(self.meta["chunk_size"])
        if segs and not segs[-1]["complete"]:
            if segs[-1]["fingerprint"] != fp:
                raise ValueError(
                    f"{self.root} has an unfinished segment from other inputs; finish it by "
                    "calling build/append again with those inputs, or use a new folder."
                )
            seg = segs[-1]
        else:
            first = segs[-1]["first_chunk"] + segs[-1]["n_chunks"] if segs else 0
            seg = {"first_chunk": first, "n_chunks": math.ceil(len(items) / size),
                   "n_items": len(items), "fingerprint": fp, "complete": False}
            segs.append(seg)
            self._save_meta()
        todo = [j for j in range(seg["n_chunks"])
                if not self._chunk_path(seg["first_chunk"] + j, ".json").exists()]
        n_todo = sum(min(size, len(items) - j * size) for j in todo)
        t0, done = time.perf_counter(), 0
        with tqdm(total=len(items), initial=len(items) - n_todo, unit="item",
                  disable=not progress, desc=f"encoding ({encoder.name})") as bar:
            for j in todo:
                lo, hi = j * size, min(len(items), (j + 1) * size)
                self._write_chunk(seg["first_chunk"] + j, items[lo:hi], ll[lo:hi], encoder,
                                  batch_size)
                done += hi - lo
                bar.update(hi - lo)
        seconds = time.perf_counter() - t0
        seg["complete"] = True
        self.meta["last_run"] = {
            "items": done, "views": self.views, "seconds": round(seconds, 3),
            "items_per_s": round(done / seconds, 2) if done and seconds > 0 else None,
        }
        self._save_meta()
        self._write_index()

    def _write_chunk(self, c: int, items: list[Any], ll: np.ndarray, encoder: Any,
                     batch_size: int) -> None:
        emb = np.empty((len(items), self.views, self.dim), np.float32)
        # per-chunk seed, so a resumed store equals an uninterrupted one
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self.meta["seed"]) * 1_000_003 + c)
            for v in range(self.views):
                out = encoder.encode(items, batch_size=batch_size, augment=v > 0,
                                     progress=False)
                out = torch.as_tensor(out).detach().to("cpu", torch.float32).numpy()
                if out.shape != (len(items), self.dim):
                    raise ValueError(
                        f"encoder {encoder.name!r} returned shape {out.shape}; expected "
                        f"({len(items)}, {self.dim})."
                    )
                emb[:, v] = out
        _save_npy(self._chunk_path(c, ".emb.npy"), emb)
        _save_npy(self._chunk_path(c, ".latlon.npy"), ll.astype(np.float64))
        keys = [os.fspath(x) if isinstance(x, str | os.PathLike) else "" for x in items]
        _write_json(self._chunk_path(c, ".json"), {"n": len(items), "keys": keys})

    def _write_index(self) -> None:
        frames = []
        for seg in self.meta["segments"]:
            if not seg["complete"]:
                continue
            for c in range(seg["first_chunk"], seg["first_chunk"] + seg["n_chunks"]):
                info = json.loads(self._chunk_path(c, ".json").read_text())
                ll = np.load(self._chunk_path(c, ".latlon.npy"))
                frames.append(pd.DataFrame({
                    "chunk": c, "row": np.arange(info["n"]), "key": info["keys"],
                    "lat": ll[:, 0], "lon": ll[:, 1],
                }))
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["chunk", "row", "key", "lat", "lon"])
        with atomic_path(self.root / "index.parquet", overwrite=True) as tmp:
            df.to_parquet(tmp, index=False)
