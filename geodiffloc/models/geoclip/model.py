"""The GeoCLIP model: image head, location encoder, logit scale; retrieval, maps, training."""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...encoders.base import Encoder, check_encoder_matches
from ...sphere.grid import LatLonGrid
from .._validate import check_finite_weights, check_positive_int, parse_checkpoint_config
from .gallery import Gallery, GalleryEmbeddingCache, resolve_gallery, weights_fingerprint
from .location import LocationEncoder
from .training import GPSQueue, contrastive_loss, perturb_latlon

__all__ = ["GeoCLIP"]

InputKind = Literal["auto", "images", "backbone", "head"]
_FORMAT = "geodiffloc.geoclip"
_FORMAT_VERSION = 1


def _mismatches(module: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Human-readable differences between a module's state and a state dict."""
    own = module.state_dict()
    out = [f"missing {k}" for k in own if k not in state]
    out += [f"unexpected {k}" for k in state if k not in own]
    out += [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
            for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return out


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    bad = _mismatches(module, state)
    if bad:
        raise ValueError(
            f"the {what} weights do not fit this model ({len(bad)} problem(s): "
            f"{'; '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}). Build the model with the "
            "matching configuration (number of sigmas, n_freqs, hidden_dim, embed_dim, "
            "backbone_dim)."
        )
    module.load_state_dict(state, strict=True)


def _parse_backbone(spec: str) -> tuple[str, str | None]:
    """``"ViT-L-14/openai"`` -> ("ViT-L-14", "openai"); ``"X/None"`` -> random weights."""
    if "/" in spec and not spec.startswith(("hf-hub:", "local-dir:")):
        model, pre = spec.rsplit("/", 1)
        return model, None if pre.lower() in ("none", "random", "") else pre
    return spec, "openai"


class GeoCLIP(nn.Module):
    """GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023): image-to-GPS retrieval.

    A frozen CLIP backbone embeds the image, a trainable MLP head maps it into the
    512-d space of the location encoder, and the best-matching point of a GPS gallery
    is the prediction. Works from images, from precomputed backbone features, or from
    any other embedding the head was trained on (text, satellite patches).

    Parameters
    ----------
    backbone_dim
        Width of the backbone features (768 for CLIP ViT-L/14).
    embed_dim, sigmas, n_freqs, hidden_dim
        Location-encoder configuration (see :class:`LocationEncoder`).
    temperature
        Initial temperature τ; the learnable logit scale starts at ``log(1/τ)``.
    queue_size, batch_noise_m, queue_noise_m
        Training: GPS queue length and Gaussian GPS noise (metres) on batch and queue
        coordinates (4096, 150, 1000 in the paper).
    backbone
        The image backbone: an :class:`~geodiffloc.encoders.Encoder`, a spec
        ``"ViT-L-14/openai"`` built lazily on first image input (so construction never
        downloads), or ``None`` (embeddings only).
    gallery
        The default gallery of :meth:`predict` (see :func:`resolve_gallery`).
    cache_dir
        Where gallery embeddings are cached (``None``: user cache dir; ``False``: memory only).
    seed
        Seed for the random Fourier matrices and the initial queue.

    Examples
    --------
    >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=16,
    ...             seed=0, cache_dir=False)
    >>> m.location_encoder(torch.tensor([[10.0, 20.0]])).shape
    torch.Size([1, 4])
    >>> gdf = m.predict(torch.randn(2, 8), gallery="fibonacci:50")
    >>> list(gdf.columns), gdf.crs.to_string()
    (['query', 'lat', 'lon', 'prob', 'similarity', 'gallery_index', 'geometry'], 'EPSG:4326')
    """

    def __init__(
        self,
        *,
        backbone_dim: int = 768,
        embed_dim: int = 512,
        sigmas: Sequence[float] = (2**0, 2**4, 2**8),
        n_freqs: int = 256,
        hidden_dim: int = 1024,
        temperature: float = 0.07,
        queue_size: int = 4096,
        batch_noise_m: float = 150.0,
        queue_noise_m: float = 1000.0,
        backbone: Encoder | str | None = None,
        gallery: Any = "mp16",
        cache_dir: str | os.PathLike | bool | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if int(backbone_dim) < 1:
            raise ValueError(f"backbone_dim must be a positive integer; got {backbone_dim}.")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be > 0; got {temperature}.")
        self.backbone_dim = int(backbone_dim)
        # A seed makes the initial weights reproducible without touching the global RNG.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.location_encoder = LocationEncoder(
                sigmas, n_freqs=n_freqs, hidden_dim=hidden_dim, embed_dim=embed_dim, seed=seed)
            self.embed_dim = self.location_encoder.embed_dim
            # Official key layout: "0.weight", "0.bias", "2.weight", "2.bias".
            self.image_head = nn.Sequential(
                nn.Linear(self.backbone_dim, self.backbone_dim), nn.ReLU(),
                nn.Linear(self.backbone_dim, self.embed_dim),
            )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.queue = GPSQueue(queue_size, seed=seed)
        self.batch_noise_m = float(batch_noise_m)
        self.queue_noise_m = float(queue_noise_m)
        self.gallery = gallery
        self.official_path: str | None = None
        self.cache = GalleryEmbeddingCache(cache_dir)
        self._backbone: Encoder | None = None
        self.backbone_spec: str | None = None
        self.encoder_record: dict[str, Any] = {}
        self.set_backbone(backbone)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_official(
        cls,
        path: str | os.PathLike | None = None,
        *,
        backbone: Encoder | str | None = "ViT-L-14/openai",
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | bool | None = None,
    ) -> GeoCLIP:
        """The official pretrained GeoCLIP (location encoder, image head, logit scale).

        Parameters
        ----------
        path
            Folder with the release files (flat or in the package layout); ``None``
            uses the installed ``geoclip`` package.
        backbone
            Image backbone; the default ``"ViT-L-14/openai"`` is built (and downloaded
            by open_clip, once) only when images are first given. Pass a local
            checkpoint as ``OpenCLIPImageEncoder("ViT-L-14", "/path/ckpt.bin")``, or
            ``None`` to work with precomputed embeddings only.
        device
            Where the model runs.
        cache_dir
            Gallery-embedding cache folder (see :class:`GeoCLIP`).

        Raises
        ------
        ValueError
            Files not found, or weights whose shapes do not fit.

        Examples
        --------
        >>> m = GeoCLIP.from_official(backbone=None)  # doctest: +SKIP
        >>> m.location_encoder(torch.tensor([[40.7, -74.0]])).shape  # doctest: +SKIP
        torch.Size([1, 512])
        """
        from .official import find_official

        files = find_official(path)

        def load(role: str) -> Any:
            try:
                return torch.load(files[role], map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                # torch's message suggests weights_only=False: never for a file we did not make
                raise ValueError(
                    f"{files[role]} is not a plain weights file (it asks to run code when "
                    "loaded); refusing it. Reinstall geoclip or point path= at the official "
                    "files.") from None
            except Exception as e:
                raise ValueError(f"could not read {files[role]}: {e}") from e

        loc, head, scale = load("location_encoder"), load("image_head"), load("logit_scale")
        if not isinstance(loc, dict) or not isinstance(head, dict):
            raise ValueError("the official weight files must hold state dicts.")
        n_caps = len({k.split(".")[0] for k in loc if k.startswith("LocEnc")})
        try:
            b, w1, w_head = loc["LocEnc0.capsule.0.b"], loc["LocEnc0.capsule.1.weight"], \
                loc["LocEnc0.head.0.weight"]
            backbone_dim = int(head["0.weight"].shape[1])
        except KeyError as e:
            raise ValueError(f"unexpected layout of the official weights: no key {e}.") from e
        default_sigmas = (2**0, 2**4, 2**8)
        sigmas = default_sigmas if n_caps == 3 else tuple(2.0 ** (4 * i) for i in range(n_caps))
        model = cls(
            backbone_dim=backbone_dim, embed_dim=int(w_head.shape[0]), sigmas=sigmas,
            n_freqs=int(b.shape[0]), hidden_dim=int(w1.shape[0]), backbone=backbone,
            gallery="mp16", cache_dir=cache_dir, queue_size=4096,
        )
        _load_strict(model.location_encoder, loc, "location encoder")
        _load_strict(model.image_head, head, "image head")
        scale = torch.as_tensor(scale, dtype=torch.float32)
        if scale.numel() != 1 or not torch.isfinite(scale).all():
            raise ValueError(f"the logit scale file must hold one finite number; got {scale}.")
        with torch.no_grad():
            model.logit_scale.copy_(scale.reshape(()))
        folder = Path(files["location_encoder"]).parent
        model.official_path = os.fspath(folder.parent if folder.name == "weights" else folder)
        model.eval()
        return model.to(device) if device is not None else model

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

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # -- embeddings -------------------------------------------------------------------
    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(..., backbone_dim)`` -> head output ``(..., embed_dim)``."""
        return self.image_head(features)

    def forward(self, features: torch.Tensor, latlon: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, m)`` of ``n`` backbone features against ``m`` locations (as official)."""
        self._check_device(features, "features")
        img = F.normalize(self.project(features), dim=1)
        loc = F.normalize(self.location_encoder(latlon), dim=1)
        return self.logit_scale.exp() * img @ loc.T

    def _check_device(self, t: torch.Tensor, name: str) -> None:
        if t.device != self.device:
            raise ValueError(
                f"{name} is on {t.device} but the model is on {self.device}; move it with "
                f".to({str(self.device)!r})."
            )

    def _query_embeddings(
        self, inputs: Any, input_kind: InputKind, ten_crop: bool, batch_size: int,
        progress: bool,
    ) -> torch.Tensor:
        """Normalised head embeddings ``(n, v, embed_dim)`` (``v`` views per query)."""
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
            feats = inputs.detach() if isinstance(inputs, torch.Tensor) else torch.as_tensor(
                np.asarray(inputs, dtype=np.float32))
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
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> gdf = m.predict(torch.randn(2, 8), top_k=3, gallery="fibonacci:100")
        >>> len(gdf), list(gdf["rank"][:3])
        (6, [1, 2, 3])
        """
        import geopandas as gpd

        g = self.resolve_gallery(gallery)
        if not 1 <= check_positive_int(top_k, "top_k") <= len(g):
            raise ValueError(f"top_k must be between 1 and the gallery size {len(g)}; got {top_k}.")
        q = self._query_embeddings(inputs, input_kind, ten_crop, batch_size, progress)
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
                sim = torch.einsum("nvd,nkd->nk", qb, g_emb[top.indices]) / qb.shape[1]
                probs.append(top.values.cpu())
                sims.append(sim.cpu())
            idxs.append(top.indices.cpu())
        prob = torch.cat(probs).double().numpy()
        idx = torch.cat(idxs).numpy()
        sim = torch.cat(sims).double().numpy()
        n, k = idx.shape
        ll = g.latlon.numpy()[idx.ravel()]
        data: dict[str, Any] = {"query": np.repeat(np.arange(n), k)}
        if k > 1:
            data["rank"] = np.tile(np.arange(1, k + 1), n)
        data.update(lat=ll[:, 0], lon=ll[:, 1], prob=prob.ravel(), similarity=sim.ravel(),
                    gallery_index=idx.ravel())
        gdf = gpd.GeoDataFrame(data, geometry=gpd.points_from_xy(ll[:, 1], ll[:, 0]),
                               crs="EPSG:4326")
        gdf.attrs.update(model="GeoCLIP", gallery=g.name, gallery_size=len(g),
                         ten_crop=bool(ten_crop))
        return gdf

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
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> da = m.probability_map(torch.randn(2, 8), resolution=10.0)
        >>> da.dims, round(float(da.sum(("lat", "lon"))[0]), 6)
        (('query', 'lat', 'lon'), 1.0)
        """
        q = self._query_embeddings(inputs, input_kind, ten_crop, batch_size, progress)
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
            text_encoder = bb.text_encoder()  # type: ignore[attr-defined]
        feats = text_encoder.encode(texts)
        q = self._query_embeddings(feats, "backbone", False, 64, False)
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

    # -- training ---------------------------------------------------------------------
    def training_step(
        self,
        batch_embeddings: torch.Tensor,
        batch_latlon: torch.Tensor,
        *,
        update_queue: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One GeoCLIP contrastive step (eq. 4); returns the loss (call ``backward`` on it).

        Parameters
        ----------
        batch_embeddings
            Backbone features ``(B, backbone_dim)``, or ``(B, P, backbone_dim)`` for
            ``P`` augmented views per sample (each view is paired with its own noisy GPS).
        batch_latlon
            ``(B, 2)`` ``(lat, lon)`` degrees.
        update_queue
            Push the batch's coordinates into the GPS queue afterwards (off for validation).
        generator
            For reproducible GPS noise.

        Raises
        ------
        ValueError
            Shape mismatch, NaN features, or tensors on another device than the model.

        Examples
        --------
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=16,
        ...             seed=0, cache_dir=False)
        >>> opt, sched = m.configure_optimizer()
        >>> loss = m.training_step(torch.randn(4, 8), torch.tensor([[10.0, 20.0]] * 4))
        >>> loss.backward(); opt.step()
        >>> bool(torch.isfinite(loss))
        True
        """
        x, ll = batch_embeddings, batch_latlon
        self._check_device(x, "batch_embeddings")
        self._check_device(ll, "batch_latlon")
        if x.ndim == 2:
            x = x[:, None]
        if x.ndim != 3 or x.shape[-1] != self.backbone_dim or ll.shape != (x.shape[0], 2):
            raise ValueError(
                f"need batch_embeddings (B, {self.backbone_dim}) or (B, P, {self.backbone_dim}) "
                f"and batch_latlon (B, 2); got {tuple(batch_embeddings.shape)} and "
                f"{tuple(batch_latlon.shape)}."
            )
        if not torch.isfinite(x).all():
            raise ValueError("batch_embeddings contain NaN or inf.")
        n, p = x.shape[0], x.shape[1]
        views_ll = ll.repeat_interleave(p, dim=0)
        gps = perturb_latlon(views_ll, self.batch_noise_m, generator=generator)
        queue = self.queue.noisy(self.queue_noise_m, generator=generator).to(gps.dtype)
        img = self.project(x.reshape(n * p, -1))
        loc = self.location_encoder(torch.cat([gps, queue]).to(torch.float32))
        loss = contrastive_loss(img, loc, self.logit_scale)
        if update_queue:
            self.queue.push(ll)
        return loss

    def configure_optimizer(
        self, *, lr: float = 3e-5, weight_decay: float = 1e-6, gamma: float = 0.87,
        step_size: int = 1,
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
        """Adam over the trainable parameters + StepLR (×``gamma`` every ``step_size`` epochs).

        The paper's defaults; the backbone is frozen and not included. In a
        LightningModule: ``opt, sch = model.configure_optimizer(); return {"optimizer":
        opt, "lr_scheduler": {"scheduler": sch, "interval": "epoch"}}``.

        Returns
        -------
        tuple
            ``(torch.optim.Adam, torch.optim.lr_scheduler.StepLR)``; call
            ``scheduler.step()`` once per epoch.

        Examples
        --------
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             cache_dir=False)
        >>> opt, sched = m.configure_optimizer(lr=1e-4)
        >>> opt.param_groups[0]["lr"], sched.gamma
        (0.0001, 0.87)
        """
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)

    # -- checkpoints ------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (weights aside)."""
        le = self.location_encoder.config
        gal = self.gallery if isinstance(self.gallery, str) else None
        enc = self.encoder_record or (
            {"name": self._backbone.name, "dim": int(self._backbone.dim)}
            if self._backbone is not None else {})
        return {"backbone_dim": self.backbone_dim, **le, "queue_size": self.queue.size,
                "batch_noise_m": self.batch_noise_m, "queue_noise_m": self.queue_noise_m,
                "backbone_spec": self.backbone_spec, "gallery": gal, "encoder": enc}

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write config + weights to a ``.safetensors`` checkpoint (atomically).

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is false.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> path = m.save(pathlib.Path(tempfile.mkdtemp()) / "geoclip.safetensors")
        >>> GeoCLIP.load(path, cache_dir=False).embed_dim
        4
        """
        from safetensors.torch import save_file

        from ..._io import atomic_path

        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": _FORMAT, "format_version": str(_FORMAT_VERSION),
                "config": json.dumps(self.config)}
        with atomic_path(path, overwrite=overwrite) as tmp:
            save_file(state, str(tmp), metadata=meta)
        return Path(path)

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, backbone: Encoder | str | None = None,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | bool | None = None,
    ) -> GeoCLIP:
        """Load a checkpoint written by :meth:`save` (safetensors, no code execution).

        Parameters
        ----------
        backbone
            Image backbone to attach; it must match the encoder recorded at training.
            ``None`` reuses the recorded lazy spec, if any.

        Raises
        ------
        ValueError
            Not a GeoCLIP checkpoint, or weights that do not fit the recorded config.
        """
        from safetensors import SafetensorError, safe_open

        if not os.path.isfile(path):
            raise ValueError(f"checkpoint {os.fspath(path)!r} does not exist.")
        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                meta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except SafetensorError as e:
            raise ValueError(f"{os.fspath(path)!r} is not a safetensors checkpoint: {e}") from e
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{os.fspath(path)!r} is not a geodiffloc GeoCLIP checkpoint.")
        cfg = parse_checkpoint_config(meta.get("config"), path, None, family="GeoCLIP")
        check_finite_weights(state, path)
        model = cls(
            backbone_dim=cfg["backbone_dim"], embed_dim=cfg["embed_dim"], sigmas=cfg["sigmas"],
            n_freqs=cfg["n_freqs"], hidden_dim=cfg["hidden_dim"], queue_size=cfg["queue_size"],
            batch_noise_m=cfg["batch_noise_m"], queue_noise_m=cfg["queue_noise_m"],
            gallery=cfg.get("gallery") or "mp16", cache_dir=cache_dir,
        )
        model.encoder_record = dict(cfg.get("encoder") or {})
        model.set_backbone(backbone if backbone is not None else cfg.get("backbone_spec"))
        _load_strict(model, state, "checkpoint")
        model.eval()
        return model.to(device) if device is not None else model
