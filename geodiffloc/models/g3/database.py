"""G3's reference database: embeddings and coordinates of a geotagged collection, indexed.

:class:`ReferenceDatabase` holds the raw embeddings (any encoder's, the width the model's
query head takes), the ``(lat, lon)`` of every reference and optional texts/ids. From
arrays, a point GeoDataFrame, an MP16-style CSV of embeddings or a
:class:`~geodiffloc.data.FeatureStore`.

:class:`VectorIndex` finds nearest neighbours by inner product of L2-normalised vectors
(cosine similarity). Backends:

``"faiss"``
    ``faiss-cpu`` (the ``[g3]`` extra): ``IndexFlatIP`` (exact, BLAS, fast to millions)
    or ``IndexHNSWFlat`` (approximate graph search, for collections where the exact scan
    is too slow).
``"torch"``
    An exact chunked matrix product + ``topk`` in torch (any device); the fallback when
    faiss is not installed. Exact, so results equal faiss's flat index up to ties.
``"auto"``
    faiss when importable, else torch.

The projected reference vectors depend on the model's weights; :meth:`G3.build_index`
caches them (and an HNSW graph) on disk keyed by a fingerprint of the weights and the
references, written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ...sphere import check_latlon_tensor

__all__ = ["ReferenceDatabase", "VectorIndex", "faiss_available"]

Backend = Literal["auto", "faiss", "torch"]
Kind = Literal["flat", "hnsw"]


def faiss_available() -> bool:
    """Whether ``faiss`` imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class ReferenceDatabase:
    """A geotagged reference collection: raw embeddings, coordinates, optional texts and ids.

    Parameters
    ----------
    embeddings
        ``(n, dim)`` float embeddings (array or tensor), finite.
    latlon
        ``(n, 2)`` ``(lat, lon)`` degrees.
    texts
        Optional description / caption per reference (shown to chat generators).
    ids
        Optional identifier per reference (photo ids, file names).
    name
        A label kept in outputs.

    Raises
    ------
    ValueError
        Mismatched lengths, empty database, non-finite embeddings, bad coordinates.

    Examples
    --------
    >>> db = ReferenceDatabase(np.eye(3), [[0, 0], [10, 10], [20, 20]])
    >>> len(db), db.dim
    (3, 3)
    """

    def __init__(self, embeddings: Any, latlon: Any, *, texts: Sequence[str] | None = None,
                 ids: Sequence[Any] | None = None, name: str = "references") -> None:
        emb = torch.as_tensor(np.asarray(embeddings.detach().cpu() if isinstance(
            embeddings, torch.Tensor) else embeddings, dtype=np.float32))
        if emb.ndim != 2 or emb.shape[0] == 0:
            raise ValueError(f"reference embeddings must have shape (n, dim) with n >= 1; got "
                             f"{tuple(emb.shape)}.")
        if not bool(torch.isfinite(emb).all()):
            row = int(torch.nonzero(~torch.isfinite(emb).all(dim=1))[0])
            raise ValueError(f"reference {row} has NaN or inf embeddings.")
        ll = check_latlon_tensor(torch.as_tensor(np.asarray(
            latlon.detach().cpu() if isinstance(latlon, torch.Tensor) else latlon,
            dtype=np.float64).reshape(-1, 2)), name="reference latlon")
        if ll.shape[0] != emb.shape[0]:
            raise ValueError(f"{emb.shape[0]} reference embeddings but {ll.shape[0]} "
                             "coordinates; give one (lat, lon) per embedding.")
        for what, seq in (("texts", texts), ("ids", ids)):
            if seq is not None and len(seq) != emb.shape[0]:
                raise ValueError(f"{len(seq)} {what} for {emb.shape[0]} references.")
        self.embeddings = emb.contiguous()
        self.latlon = ll.contiguous()
        self.texts = None if texts is None else [str(t) for t in texts]
        self.ids = None if ids is None else list(ids)
        self.name = str(name)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Width of the embeddings."""
        return int(self.embeddings.shape[1])

    def __repr__(self) -> str:
        return f"ReferenceDatabase({self.name!r}, n={len(self)}, dim={self.dim})"

    def fingerprint(self) -> str:
        """Content digest of the embeddings and coordinates (keys caches)."""
        from ..._fingerprint import fingerprint

        return fingerprint(self.embeddings, self.latlon, length=32)

    @classmethod
    def from_geodataframe(cls, gdf: Any, embeddings: Any = None, *,
                          embedding_col: str | None = None, text_col: str | None = None,
                          id_col: str | None = None, name: str = "geodataframe",
                          ) -> ReferenceDatabase:
        """From a point GeoDataFrame (reprojected to EPSG:4326) and its embeddings.

        ``embeddings``: an ``(n, dim)`` array in row order, or ``embedding_col``: a column
        holding one vector per row.

        Raises
        ------
        ValueError
            Non-point geometries, no CRS, neither or both embedding sources.
        """
        from ...sphere.crs import to_epsg4326

        if (embeddings is None) == (embedding_col is None):
            raise ValueError("give exactly one of embeddings= (an (n, dim) array) or "
                             "embedding_col= (a column of vectors).")
        gdf = to_epsg4326(gdf, what="the reference GeoDataFrame")
        if not bool((gdf.geometry.geom_type == "Point").all()):
            raise ValueError("the reference GeoDataFrame must hold points (one per photo).")
        emb = (np.stack([np.asarray(v, np.float32) for v in gdf[embedding_col]])
               if embedding_col is not None else embeddings)
        ll = np.stack([gdf.geometry.y.to_numpy(), gdf.geometry.x.to_numpy()], axis=1)
        return cls(emb, ll, texts=None if text_col is None else gdf[text_col].tolist(),
                   ids=None if id_col is None else gdf[id_col].tolist(), name=name)

    @classmethod
    def from_feature_store(cls, path: str | os.PathLike, *, view: int = 0) -> ReferenceDatabase:
        """From a :class:`~geodiffloc.data.FeatureStore` (one view of every photo)."""
        from ...data import FeatureStore

        fs = FeatureStore(path)
        ids = fs.index()["key"].tolist()  # the items' keys (file paths, texts), in order
        return cls(fs.embeddings(view), fs.latlon, ids=ids, name=f"store:{Path(path).name}")

    @classmethod
    def from_csv(cls, path: str | os.PathLike, embeddings: Any, *, lat_col: str = "LAT",
                 lon_col: str = "LON", text_col: str | None = None,
                 id_col: str | None = "IMG_ID") -> ReferenceDatabase:
        """From an MP16-style CSV (``IMG_ID``, ``LAT``, ``LON``, ...) and its embeddings.

        ``embeddings``: an ``(n, dim)`` array in the CSV's row order, or the path of a
        ``.npy`` file holding it.

        Raises
        ------
        ValueError
            Missing columns or a row count that differs from the embeddings.
        """
        import pandas as pd

        df = pd.read_csv(path)
        need = [c for c in (lat_col, lon_col, text_col) if c is not None and c not in df]
        if need:
            raise ValueError(f"{os.fspath(path)!r} lacks column(s) {need}; found "
                             f"{list(df.columns)[:10]}.")
        if isinstance(embeddings, str | os.PathLike):
            embeddings = np.load(embeddings, allow_pickle=False)
        ids = df[id_col].tolist() if id_col is not None and id_col in df else None
        return cls(embeddings, df[[lat_col, lon_col]].to_numpy(np.float64),
                   texts=None if text_col is None else df[text_col].astype(str).tolist(),
                   ids=ids, name=f"csv:{Path(path).name}")


class VectorIndex:
    """Nearest neighbours by cosine similarity (faiss or an exact torch scan).

    Parameters
    ----------
    vectors
        ``(n, d)`` vectors (normalised here).
    backend
        ``"auto"``, ``"faiss"`` or ``"torch"`` (module notes).
    kind
        ``"flat"`` (exact) or ``"hnsw"`` (approximate; faiss only).
    hnsw_m
        Graph degree of HNSW.

    Raises
    ------
    ImportError
        ``backend="faiss"`` or ``kind="hnsw"`` without faiss installed.
    ValueError
        Bad shapes or options.

    Examples
    --------
    >>> idx = VectorIndex(torch.eye(4), backend="torch")
    >>> sim, ind = idx.search(torch.tensor([[0.0, 1.0, 0.1, 0.0]]), 2)
    >>> ind.tolist()
    [[1, 2]]
    """

    def __init__(self, vectors: Any, *, backend: Backend = "auto", kind: Kind = "flat",
                 hnsw_m: int = 32, faiss_index: Any = None) -> None:
        v = F.normalize(torch.as_tensor(vectors, dtype=torch.float32).detach(), dim=1)
        if v.ndim != 2 or v.shape[0] == 0:
            raise ValueError(f"vectors must have shape (n, d), n >= 1; got {tuple(v.shape)}.")
        if backend not in ("auto", "faiss", "torch") or kind not in ("flat", "hnsw"):
            raise ValueError(f"backend must be 'auto', 'faiss' or 'torch' and kind 'flat' or "
                             f"'hnsw'; got {backend!r}, {kind!r}.")
        has = faiss_available()
        if (backend == "faiss" or kind == "hnsw") and not has:
            raise ImportError("this index needs faiss: pip install 'geodiffloc[g3]' "
                              "(faiss-cpu), or use backend='torch' (exact).")
        self.backend = "faiss" if (backend == "faiss" or (backend == "auto" and has)
                                   or kind == "hnsw") else "torch"
        self.kind = kind
        self.vectors = v
        self._faiss = faiss_index
        if self.backend == "faiss" and self._faiss is None:
            import faiss

            x = np.ascontiguousarray(v.cpu().numpy())
            if kind == "flat":
                self._faiss = faiss.IndexFlatIP(x.shape[1])
            else:
                self._faiss = faiss.IndexHNSWFlat(x.shape[1], int(hnsw_m),
                                                  faiss.METRIC_INNER_PRODUCT)
                self._faiss.hnsw.efSearch = 128
            self._faiss.add(x)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: Any, k: int, *, chunk: int = 4096,
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most similar vectors of each query: ``(similarity, index)``, ``(m, k)``.

        Similarities are cosine (float32), sorted high to low; ``k`` is capped at the
        index size.
        """
        q = F.normalize(torch.as_tensor(queries, dtype=torch.float32).detach(), dim=1)
        if q.ndim != 2 or q.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries must have shape (m, {self.vectors.shape[1]}); got "
                             f"{tuple(q.shape)}.")
        k = max(1, min(int(k), len(self)))
        if self.backend == "faiss":
            sim, idx = self._faiss.search(np.ascontiguousarray(q.cpu().numpy()), k)
            return torch.from_numpy(sim), torch.from_numpy(idx.astype(np.int64))
        v = self.vectors.to(q.device)
        best_s = torch.full((q.shape[0], k), -torch.inf, device=q.device)
        best_i = torch.zeros((q.shape[0], k), dtype=torch.long, device=q.device)
        for s in range(0, len(self), chunk):
            sim = q @ v[s:s + chunk].T
            cs, ci = torch.topk(sim, min(k, sim.shape[1]), dim=1)
            alls = torch.cat([best_s, cs], dim=1)
            alli = torch.cat([best_i, ci + s], dim=1)
            best_s, pos = torch.topk(alls, k, dim=1)
            best_i = torch.gather(alli, 1, pos)
        return best_s.cpu(), best_i.cpu()

    def save(self, path: str | os.PathLike) -> None:
        """Write a faiss index to ``path`` atomically (torch indexes hold only vectors)."""
        from ..._io import atomic_path

        if self.backend != "faiss":
            raise ValueError("only a faiss index is written to disk.")
        import faiss

        with atomic_path(path, overwrite=True) as tmp:
            faiss.write_index(self._faiss, str(tmp))
