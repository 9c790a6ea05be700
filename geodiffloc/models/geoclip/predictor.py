"""GeoCLIP's predictor: queries and galleries in, GeoDataFrames and probability rasters out.

A mixin over :class:`~.network.GeoCLIPNetwork`: it embeds queries (images through the
backbone, backbone features or head embeddings), embeds and caches galleries, and
turns similarities into the GIS outputs of :meth:`predict`, :meth:`probability_map`,
:meth:`text_similarity_map` and the restricted-gallery scores of
:meth:`score_candidates` (used by LocDiff-H).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...encoders.base import Encoder, check_encoder_matches
from ...sphere.grid import LatLonGrid
from .._validate import check_positive_int, real_embeddings
from ..base import points_frame
from .gallery import Gallery, GalleryEmbeddingCache, resolve_gallery, weights_fingerprint
from .location import LocationEncoder

__all__ = ["GeoCLIPPredictor", "InputKind"]

InputKind = Literal["auto", "images", "backbone", "head"]


def _parse_backbone(spec: str) -> tuple[str, str | None]:
    """``"ViT-L-14/openai"`` -> ("ViT-L-14", "openai"); ``"X/None"`` -> random weights."""
    if "/" in spec and not spec.startswith(("hf-hub:", "local-dir:")):
        model, pre = spec.rsplit("/", 1)
        return model, None if pre.lower() in ("none", "random", "") else pre
    return spec, "openai"



class GeoCLIPPredictor:
    """Prediction half of :class:`~geodiffloc.GeoCLIP` (mixed into a GeoCLIPNetwork)."""

    # provided by GeoCLIPNetwork
    backbone_dim: int
    embed_dim: int
    location_encoder: LocationEncoder
    logit_scale: nn.Parameter
    device: torch.device
    project: Any

    def _init_predictor(self, backbone: Encoder | str | None, gallery: Any,
                        cache_dir: str | os.PathLike | bool | None) -> None:
        self.gallery = gallery
        self.official_path: str | None = None
        self.cache = GalleryEmbeddingCache(cache_dir)
        self._backbone: Encoder | None = None
        self.backbone_spec: str | None = None
        self.encoder_record: dict[str, Any] = {}
        self.set_backbone(backbone)

    # -- backbone ---------------------------------------------------------------------
    def set_backbone(self, backbone: Encoder | str | None) -> None:
        """Attach an image backbone (an Encoder, a lazy ``"model/pretrained"`` spec, or None).

        Raises
        ------
        ValueError
            An encoder whose dimension differs from ``backbone_dim`` or from the encoder
            the model was trained with.
        """
        self._backbone, self.backbone_spec = None, None
        if isinstance(backbone, str):
            self.backbone_spec = backbone
        elif backbone is not None:
            if int(backbone.dim) != self.backbone_dim:
                raise ValueError(
                    f"the backbone {backbone.name!r} gives {backbone.dim}-d features but this "
                    f"model's head expects {self.backbone_dim}-d."
                )
            if self.encoder_record:
                check_encoder_matches(self.encoder_record, backbone)
            self._backbone = backbone

    @property
    def backbone(self) -> Encoder:
        """The image backbone, built on first use from ``backbone_spec``.

        Raises
        ------
        ValueError
            No backbone configured (pass precomputed embeddings or call ``set_backbone``).
        """
        if self._backbone is None:
            if self.backbone_spec is None:
                raise ValueError(
                    "this GeoCLIP has no image backbone; pass precomputed embeddings "
                    "(input_kind='backbone'), or call model.set_backbone("
                    "OpenCLIPImageEncoder('ViT-L-14', pretrained='openai' or a local path))."
                )
            from ...encoders.openclip import OpenCLIPImageEncoder

            name, pre = _parse_backbone(self.backbone_spec)
            self.set_backbone(OpenCLIPImageEncoder(name, pre, device=self.device))
        assert self._backbone is not None
        return self._backbone


    def embed_queries(
        self, inputs: Any, input_kind: InputKind = "auto", ten_crop: bool = False,
        batch_size: int = 64, progress: bool = False,
    ) -> torch.Tensor:
        """L2-normalised head embeddings ``(n, v, embed_dim)`` (``v`` views per query).

        ``inputs`` as in :meth:`predict`: images (through the backbone), backbone
        features ``(n, backbone_dim)`` / ``(n, views, backbone_dim)``, or head outputs
        with ``input_kind="head"``.

        Raises
        ------
        ValueError
            Unknown ``input_kind``, wrong widths, NaN/inf embeddings.

        Examples
        --------
        >>> from geodiffloc import GeoCLIP
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> m.embed_queries(torch.randn(3, 8)).shape
        torch.Size([3, 1, 4])
        """
        kind = input_kind
        if kind == "auto":
            is_array = isinstance(inputs, torch.Tensor | np.ndarray)
            kind = "backbone" if is_array and np.ndim(inputs) in (1, 2) else "images"
        if kind not in ("images", "backbone", "head"):
            raise ValueError(
                f"input_kind must be 'auto', 'images', 'backbone' or 'head'; got {input_kind!r}."
            )
        if kind == "images":
            enc = self.backbone
            feats = (enc.encode_views(inputs, batch_size=batch_size, progress=progress)  # type: ignore[attr-defined]
                     if ten_crop else enc.encode(inputs, batch_size=batch_size,
                                                 progress=progress)[:, None])
            kind = "backbone"
        else:
            feats = real_embeddings(inputs)
            if feats.ndim == 1:
                feats = feats[None]
            if feats.ndim == 2:
                feats = feats[:, None]
        want = self.backbone_dim if kind == "backbone" else self.embed_dim
        if feats.ndim != 3 or feats.shape[-1] != want or feats.shape[0] == 0:
            hint = (" (for already-projected embeddings pass input_kind='head')"
                    if kind == "backbone" and feats.shape[-1] == self.embed_dim else "")
            raise ValueError(
                f"{kind} embeddings must have shape (n, {want}) or (n, views, {want}); got "
                f"{tuple(feats.shape)}{hint}."
            )
        bad = ~torch.isfinite(feats).reshape(feats.shape[0], -1).all(dim=1)
        if bad.any():
            raise ValueError(
                f"query {int(torch.nonzero(bad)[0])} has NaN or inf embeddings "
                f"({int(bad.sum())} bad quer{'y' if int(bad.sum()) == 1 else 'ies'})."
            )
        feats = feats.to(self.device, torch.float32)
        with torch.no_grad():
            emb = self.project(feats) if kind == "backbone" else feats
        return F.normalize(emb, dim=-1)

    def gallery_embeddings(self, gallery: Any = None, *, progress: bool = True) -> torch.Tensor:
        """L2-normalised location embeddings of a gallery ``(m, embed_dim)``, cached.

        Computed once per (weights, gallery) pair and kept in memory and on disk; a
        changed location encoder (training, another checkpoint) gets a new cache key.

        Examples
        --------
        >>> from geodiffloc import GeoCLIP
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> m.gallery_embeddings("grid:30").shape
        torch.Size([72, 4])
        """
        g = self.resolve_gallery(gallery)
        key = f"{weights_fingerprint(self.location_encoder)}-{g.key}"
        return self.cache.get(
            key, len(g), self.embed_dim,
            lambda: self.location_encoder.embed(g.latlon.to(self.device, torch.float32),
                                                progress=progress),
            self.device, meta={"gallery": g.name, "n": str(len(g))},
        )

    def resolve_gallery(self, gallery: Any = None) -> Gallery:
        """The :class:`Gallery` for a spec (``None``: the model's default gallery)."""
        return resolve_gallery(self.gallery if gallery is None else gallery,
                               official_path=self.official_path)

    def _view_probs(self, q: torch.Tensor, g_emb: torch.Tensor,
                    log_prior: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax over the gallery per view, averaged over views -> ``(n, m)``."""
        scale = self.logit_scale.detach().exp().clamp(max=100.0)
        # the matrix product in float32, the normalisation in float64 so that masses
        # over hundreds of thousands of cells still sum to 1 to ~1e-12
        logits = (scale * q @ g_emb.T).double()  # (n, v, m)
        if log_prior is not None:
            logits = logits + log_prior
        return logits.softmax(dim=-1).mean(dim=1)

    # -- inference --------------------------------------------------------------------
    @torch.no_grad()
    def predict(
        self,
        inputs: Any,
        top_k: int = 1,
        gallery: Any = None,
        *,
        input_kind: InputKind = "auto",
        ten_crop: bool = False,
        batch_size: int = 64,
        progress: bool = False,
    ) -> Any:
        """Most likely gallery points for each input, as a GeoDataFrame.

        Parameters
        ----------
        inputs
            Images (paths, PIL images, image tensors) or precomputed embeddings: an
            ``(n, backbone_dim)`` array (``input_kind="backbone"``, the default for 2-D
            arrays), ``(n, views, backbone_dim)`` for several views per query, or
            ``(n, embed_dim)`` head outputs with ``input_kind="head"``.
        top_k
            Rows per input; with ``top_k > 1`` a ``rank`` column (1 = best) is added.
        gallery
            Candidate points (default: the model's gallery, MP16 100K for the official
            model); see :func:`resolve_gallery`.
        ten_crop
            For image inputs: average the predictions of the ten-crop views.
        batch_size
            Queries per retrieval block (and images per backbone pass).

        Returns
        -------
        geopandas.GeoDataFrame
            EPSG:4326; columns ``query``, (``rank``), ``lat``, ``lon``, ``prob`` (softmax
            probability over the gallery, averaged over views), ``similarity`` (cosine,
            mean over views), ``gallery_index``, ``geometry``.

        Raises
        ------
        ValueError
            Bad inputs, NaN embeddings, ``top_k`` outside ``1..len(gallery)``, empty gallery.

        Examples
        --------
        >>> from geodiffloc import GeoCLIP
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> gdf = m.predict(torch.randn(2, 8), top_k=3, gallery="fibonacci:100")
        >>> len(gdf), list(gdf["rank"][:3])
        (6, [1, 2, 3])
        """
        g = self.resolve_gallery(gallery)
        if not 1 <= check_positive_int(top_k, "top_k") <= len(g):
            raise ValueError(f"top_k must be between 1 and the gallery size {len(g)}; got {top_k}.")
        q = self.embed_queries(inputs, input_kind, ten_crop, batch_size, progress)
        g_emb = self.gallery_embeddings(g, progress=progress or len(g) >= 20_000)
        probs, sims, idxs = [], [], []
        scale = self.logit_scale.detach().exp().clamp(max=100.0)
        for s in range(0, q.shape[0], max(1, int(batch_size))):
            qb = q[s:s + int(batch_size)]
            if qb.shape[1] == 1:
                # one view: rank by logit and normalise only the k winners (softmax is
                # monotonic), which skips a float64 pass over the whole gallery
                logits = (scale * qb[:, 0]) @ g_emb.T
                top = torch.topk(logits, int(top_k), dim=1)
                lse = torch.logsumexp(logits, dim=1, keepdim=True)
                probs.append((top.values.double() - lse.double()).exp().cpu())
                sims.append((top.values / scale).cpu())
            else:
                p = self._view_probs(qb, g_emb)
                top = torch.topk(p, int(top_k), dim=1)
                blk_sim = torch.einsum("nvd,nkd->nk", qb, g_emb[top.indices]) / qb.shape[1]
                probs.append(top.values.cpu())
                sims.append(blk_sim.cpu())
            idxs.append(top.indices.cpu())
        prob = torch.cat(probs).double().numpy()
        idx = torch.cat(idxs).numpy()
        sim = torch.cat(sims).double().numpy()
        n, k = idx.shape
        ll = g.latlon.numpy()[idx.ravel()]
        lead: dict[str, Any] = {"query": np.repeat(np.arange(n), k)}
        if k > 1:
            lead["rank"] = np.tile(np.arange(1, k + 1), n)
        return points_frame(
            ll[:, 0], ll[:, 1], {"prob": prob.ravel(), "similarity": sim.ravel(),
                                 "gallery_index": idx.ravel()}, leading=lead,
            attrs={"model": "GeoCLIP", "gallery": g.name, "gallery_size": len(g),
                   "ten_crop": bool(ten_crop)})

    @torch.no_grad()
    def score_candidates(
        self,
        inputs: Any,
        candidates: Any,
        *,
        gallery: Any = None,
        kind: Literal["prob", "logit", "similarity"] = "prob",
        input_kind: InputKind = "auto",
        ten_crop: bool = False,
        batch_size: int = 64,
        progress: bool = False,
    ) -> list[torch.Tensor]:
        """Score given candidate locations for each query: retrieval restricted to them.

        The building block of retrieve-and-rerank (LocDiff-H): another model proposes
        places, GeoCLIP ranks them.

        Parameters
        ----------
        inputs
            The ``n`` queries, as in :meth:`predict`.
        candidates
            One of: an ``(m, 2)`` ``(lat, lon)`` array/tensor or a :class:`Gallery`,
            shared by every query; a sequence of ``n`` ``(m_i, 2)`` arrays, one per
            query; or, with ``gallery``, a sequence of ``n`` integer index arrays into
            that gallery (its cached embeddings are reused, so large galleries cost one
            matrix product per query).
        gallery
            The gallery the indices refer to (a spec as in :func:`resolve_gallery`).
        kind
            ``"prob"``: softmax over the query's candidates (per view, then averaged
            over views), so each query's scores sum to 1; ``"logit"``: scaled cosine
            similarity; ``"similarity"``: cosine similarity (both averaged over views).

        Returns
        -------
        list[torch.Tensor]
            ``n`` float64 CPU tensors; entry ``i`` holds the ``m_i`` scores of query
            ``i``'s candidates in the order given (empty for an empty candidate set).

        Raises
        ------
        ValueError
            A number of candidate sets other than ``n``, invalid coordinates, indices
            outside the gallery, unknown ``kind``, bad inputs.

        Examples
        --------
        >>> from geodiffloc import GeoCLIP
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> s = m.score_candidates(torch.randn(2, 8), [[[10.0, 20.0], [-5.0, 30.0]],
        ...                                            [[48.8, 2.3]]])
        >>> [tuple(t.shape) for t in s], round(float(s[0].sum()), 6)
        ([(2,), (1,)], 1.0)
        """
        if kind not in ("prob", "logit", "similarity"):
            raise ValueError(f"kind must be 'prob', 'logit' or 'similarity'; got {kind!r}.")
        q = self.embed_queries(inputs, input_kind, ten_crop, batch_size, progress)
        emb, groups = self._candidate_embeddings(candidates, gallery, q.shape[0], progress)
        scale = self.logit_scale.detach().exp().clamp(max=100.0)
        out = []
        for i, grp in enumerate(groups):
            if grp.numel() == 0:
                out.append(torch.zeros(0, dtype=torch.float64))
                continue
            sim = q[i] @ emb[grp.to(emb.device)].T  # (views, m_i)
            if kind == "prob":
                # float64 normalisation, as in predict: masses over many points sum to 1
                val = (scale * sim).double().softmax(dim=-1).mean(dim=0)
            else:
                val = (sim * (scale if kind == "logit" else 1.0)).mean(dim=0).double()
            out.append(val.cpu())
        return out

    def _candidate_embeddings(self, candidates: Any, gallery: Any, n: int, progress: bool,
                              ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Normalised embeddings of all candidates and, per query, the rows that are its own."""
        from ...sphere import check_latlon_tensor

        if gallery is not None:
            g = self.resolve_gallery(gallery)
            sets = _per_query(candidates, n, "index arrays into the gallery")
            groups = []
            for i, c in enumerate(sets):
                idx = torch.as_tensor(np.asarray(c), dtype=torch.long).reshape(-1)
                if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(g)):
                    raise ValueError(
                        f"candidate indices of query {i} must lie in 0..{len(g) - 1} (the "
                        f"gallery {g.name!r}); got {int(idx.min())}..{int(idx.max())}.")
                groups.append(idx)
            return self.gallery_embeddings(g, progress=progress), groups
        if isinstance(candidates, Gallery) or (
                isinstance(candidates, torch.Tensor | np.ndarray) and np.ndim(candidates) == 2):
            ll = candidates.latlon if isinstance(candidates, Gallery) else candidates
            sets, shared = [ll], True
        else:
            sets, shared = _per_query(candidates, n, "(m, 2) coordinate arrays"), False
        lls = []
        for i, c in enumerate(sets):
            a = np.asarray(c.cpu() if isinstance(c, torch.Tensor) else c, dtype=np.float64)
            name = "candidates" if shared else f"candidates of query {i}"
            try:
                lls.append(check_latlon_tensor(torch.from_numpy(a.reshape(0, 2) if a.size == 0
                                                                else a), name=name))
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        sizes = [int(t.shape[0]) for t in lls]
        allll = torch.cat(lls).to(self.device, torch.float32)
        emb = self.location_encoder.embed(allll, progress=progress)
        emb = F.normalize(emb.to(self.device), dim=1)
        if shared:
            return emb, [torch.arange(sizes[0])] * n
        starts = np.concatenate([[0], np.cumsum(sizes)])
        return emb, [torch.arange(int(a), int(b)) for a, b in itertools.pairwise(starts)]

    @torch.no_grad()
    def probability_map(
        self,
        inputs: Any,
        resolution: float = 1.0,
        kind: Literal["mass", "similarity", "logit"] = "mass",
        *,
        bbox: tuple[float, float, float, float] | None = None,
        input_kind: InputKind = "auto",
        ten_crop: bool = False,
        batch_size: int = 16,
        progress: bool = False,
    ) -> Any:
        """Where each input was taken, as a probability raster over a lat/lon grid.

        ``kind="mass"``: softmax over grid cells of the logits plus the log cell area,
        i.e. ``exp(logit)`` is a density per steradian and each cell holds its mass
        (summing to 1 over the grid, so a zonal sum is a region's probability).
        ``"similarity"``: cosine similarity of each cell centre; ``"logit"``: scaled
        similarity. Inputs as in :meth:`predict`.

        Parameters
        ----------
        resolution
            Cell size in degrees.
        bbox
            ``(west, south, east, north)`` for a regional grid (mass normalised within it).

        Returns
        -------
        xarray.DataArray
            Dims ``("query", "lat", "lon")``, EPSG:4326, CF attributes, provenance attrs.

        Raises
        ------
        ValueError
            Unknown ``kind``, bad inputs or grid.

        Examples
        --------
        >>> from geodiffloc import GeoCLIP
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> da = m.probability_map(torch.randn(2, 8), resolution=10.0)
        >>> da.dims, round(float(da.sum(("lat", "lon"))[0]), 6)
        (('query', 'lat', 'lon'), 1.0)
        """
        q = self.embed_queries(inputs, input_kind, ten_crop, batch_size, progress)
        return self._field(q, resolution, kind, bbox, progress,
                           attrs={"input_kind": input_kind, "ten_crop": int(bool(ten_crop))},
                           coords=np.arange(q.shape[0]))

    @torch.no_grad()
    def text_similarity_map(
        self,
        text: str | Sequence[str],
        resolution: float = 1.0,
        kind: Literal["mass", "similarity", "logit"] = "similarity",
        *,
        bbox: tuple[float, float, float, float] | None = None,
        text_encoder: Encoder | None = None,
        progress: bool = False,
    ) -> Any:
        """Map of how well each place matches a phrase (paper Fig. 4).

        The phrase goes through the CLIP text tower (the same CLIP as the image
        backbone, or ``text_encoder``), then through the image head, and is compared
        with the location embeddings of the grid cells.

        Returns
        -------
        xarray.DataArray
            Dims ``("query", "lat", "lon")`` with the phrases as ``query`` coordinates.

        Examples
        --------
        >>> da = model.text_similarity_map("desert", resolution=2.0)  # doctest: +SKIP
        """
        texts = [text] if isinstance(text, str) else list(text)
        if text_encoder is None:
            bb = self.backbone
            if not hasattr(bb, "text_encoder"):
                raise ValueError(
                    f"the backbone {bb.name!r} has no text tower; pass text_encoder=..."
                )
            text_encoder = bb.text_encoder()
        feats = text_encoder.encode(texts)
        q = self.embed_queries(feats, "backbone", False, 64, False)
        return self._field(q, resolution, kind, bbox, progress,
                           attrs={"text_encoder": text_encoder.name}, coords=np.asarray(texts))

    def _field(self, q: torch.Tensor, resolution: float, kind: str,
               bbox: tuple[float, float, float, float] | None, progress: bool,
               attrs: dict[str, Any], coords: Any) -> Any:
        if kind not in ("mass", "similarity", "logit"):
            raise ValueError(f"kind must be 'mass', 'similarity' or 'logit'; got {kind!r}.")
        grid = LatLonGrid.global_(resolution) if bbox is None else LatLonGrid.from_bbox(
            resolution, bbox)
        g = Gallery(grid.latlon(), f"grid:{resolution}" + ("" if bbox is None else f":{bbox}"))
        g_emb = self.gallery_embeddings(g, progress=progress or len(g) >= 20_000)
        n_lat, n_lon = grid.shape
        log_area = torch.log(torch.as_tensor(grid.cell_area_sr(), dtype=torch.float64))
        log_area = log_area.to(self.device).repeat_interleave(n_lon)
        out = []
        for s in range(0, q.shape[0], 8):
            qb = q[s:s + 8]
            if kind == "mass":
                out.append(self._view_probs(qb, g_emb, log_prior=log_area).cpu())
            else:
                sim = (qb @ g_emb.T).mean(dim=1)
                if kind == "logit":
                    sim = sim * self.logit_scale.detach().exp().clamp(max=100.0)
                out.append(sim.cpu())
        values = torch.cat(out).reshape(-1, n_lat, n_lon).double().numpy()
        meta = {"model": "GeoCLIP", "grid": "area-aware softmax over cells" if kind == "mass"
                else kind, **attrs}
        return grid.to_dataarray(values, kind=kind, leading_dim="query",  # type: ignore[arg-type]
                                 leading_coords=coords, attrs=meta)



def _per_query(candidates: Any, n: int, what: str) -> list[Any]:
    """``candidates`` as a list of ``n`` per-query sets, or a clear error."""
    if isinstance(candidates, str) or not isinstance(candidates, Sequence | np.ndarray
                                                      | torch.Tensor):
        raise ValueError(f"candidates must be a sequence of {n} {what}; got "
                         f"{type(candidates).__name__}.")
    sets = list(candidates)
    if len(sets) != n:
        raise ValueError(f"got {len(sets)} candidate sets for {n} queries; give one set of "
                         f"{what} per query, in the order of the queries.")
    return sets
