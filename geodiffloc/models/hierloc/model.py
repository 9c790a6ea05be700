"""The HierLoc model: entity embeddings in hyperbolic space, a query head, inference, I/O.

Design notes (and what the paper's abstract does not say) are in
``docs/concepts/hierloc.md``. Training goes through :class:`geodiffloc.train.HierLocModule`
(:meth:`HierLoc.fit` is a convenience over it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data.hierarchy import EntityHierarchy
from ...sphere.distance import EARTH_RADIUS_KM, latlon_to_xyz
from ...sphere.grid import LatLonGrid
from .._validate import check_positive_int, real_embeddings
from ..base import Geolocator, points_frame, read_checkpoint
from .lorentz import expmap0, lorentz_distance, squash_to_ball
from .loss import geo_weighted_contrastive_loss, norm_order_loss, parent_choice_loss

__all__ = ["DEFAULT_SIGMA_KM", "GEO_INIT_NOISE", "HierLoc"]

FORMAT = "geodiffloc.hierloc/1"

#: Scale of the random part of the ``entity_init="geo"`` directions.
GEO_INIT_NOISE = 0.02

#: Default distance scale σ (km) of the geo-weighted targets, by level (finer levels
#: repeat the last value): country, admin-1, admin-2, city.
DEFAULT_SIGMA_KM: tuple[float, ...] = (1000.0, 300.0, 100.0, 30.0)

Method = Literal["flat", "beam"]


class HierLoc(nn.Module, Geolocator):
    """HierLoc: geolocation by aligning queries with a hierarchy of entities in hyperbolic space.

    Every entity of an :class:`~geodiffloc.data.EntityHierarchy` (country, admin-1,
    admin-2, city, or a user's districts and parcels) is a trainable point on the
    Lorentz model of hyperbolic space (a :class:`geoopt.ManifoldParameter` on
    :class:`geoopt.Lorentz`, trained with :class:`geoopt.optim.RiemannianAdam`). A
    small MLP head maps any encoder's embedding (image, text, precomputed) to a tangent
    vector at the origin, and the exponential map puts it on the hyperboloid. An
    entity's score for a query is its negative hyperbolic distance over a temperature.

    Parameters
    ----------
    hierarchy
        The entities.
    input_dim
        Width of the query embeddings.
    embed_dim
        Dimension ``d`` of the hyperbolic space (points have ``d + 1`` coordinates).
    hidden_dim
        Width of the query head's hidden layer.
    temperature
        τ in ``-d(q, e) / τ``.
    max_radius
        Every point (query or entity) is squashed smoothly below this hyperbolic radius,
        which keeps float32 products of size ``cosh^2`` accurate and finite.
    sigma_km
        Distance scale of the geo-weighted targets per level (km); shorter sequences
        repeat their last value. Default :data:`DEFAULT_SIGMA_KM`.
    geo_weight
        α: share of the target mass spread over entities by haversine distance.
    level_weights
        Weight of each level's contrastive loss (default: all 1).
    consistency_weight
        Weight of the hierarchy terms (parent choice + norm order).
    margin
        Margin of the norm-order hinge.
    n_edges
        Parent-child edges sampled per training step for the hierarchy terms.
    n_negatives
        Sampled negatives: this many entities per level (and per parent level of the
        hierarchy terms; more only if the batch's true entities and their near peers
        alone exceed it) enter a training step's softmax -- the true entities
        of the batch, the ``n_near`` entities nearest to each, and entities drawn at
        random, with the sampled-softmax correction (see
        :mod:`geodiffloc.models.hierloc.loss`). Memory per step then no longer grows
        with the number of entities. ``None`` (default): a softmax over every entity
        of a level (levels with at most ``n_negatives`` entities are always exact).
    n_near
        Geographically nearest entities (by centroid, same level) kept in the sample
        next to each true entity.
    entity_init
        Initial directions of the entities: ``"geo"`` (default) puts the unit vector
        of an entity's centroid in the first 3 tangent coordinates (plus noise of
        scale :data:`GEO_INIT_NOISE`), so geographically near entities start near each
        other and an entity that no training item names stays near its neighbours;
        ``"random"``: uniform random directions. Radii grow with the level either way.
    encoder
        Optional :class:`~geodiffloc.encoders.Encoder` so that :meth:`predict` takes raw
        inputs (texts, images); its name and width are recorded in checkpoints.
    seed
        Seeds the initial weights.

    Examples
    --------
    >>> from geodiffloc.data import EntityHierarchy
    >>> h = EntityHierarchy.from_records([
    ...     {"entity_id": "A", "lat": 10.0, "lon": 10.0},
    ...     {"entity_id": "a1", "parent": "A", "lat": 11.0, "lon": 10.0},
    ...     {"entity_id": "a2", "parent": "A", "lat": 9.0, "lon": 10.0}])
    >>> m = HierLoc(h, input_dim=8, embed_dim=4, hidden_dim=16, seed=0)
    >>> gdf = m.predict(torch.randn(2, 8))
    >>> list(gdf.columns)[:6], gdf.crs.to_epsg()
    (['query', 'lat', 'lon', 'entity_id', 'name', 'level_name'], 4326)
    """

    checkpoint_format = FORMAT
    model_name = "HierLoc"
    # buffers registered in __init__ (declared so type checkers see tensors)
    _latlon: torch.Tensor
    _level: torch.Tensor
    _parent: torch.Tensor
    _ancestors: torch.Tensor
    _leaves: torch.Tensor
    _leaf_xyz: torch.Tensor
    _pos_in_level: torch.Tensor
    _child_index: torch.Tensor

    def __init__(
        self,
        hierarchy: EntityHierarchy,
        *,
        input_dim: int,
        embed_dim: int = 32,
        hidden_dim: int = 512,
        temperature: float = 0.1,
        max_radius: float = 5.0,
        sigma_km: Sequence[float] | None = None,
        geo_weight: float = 0.3,
        level_weights: Sequence[float] | None = None,
        consistency_weight: float = 0.1,
        margin: float = 0.1,
        n_edges: int = 1024,
        n_negatives: int | None = None,
        n_near: int = 8,
        entity_init: Literal["geo", "random"] = "geo",
        encoder: Any = None,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        import geoopt

        if not isinstance(hierarchy, EntityHierarchy):
            raise ValueError("hierarchy must be an EntityHierarchy (see geodiffloc.data."
                             f"gazetteer_hierarchy); got {type(hierarchy).__name__}.")
        self.input_dim = check_positive_int(input_dim, "input_dim")
        self.embed_dim = check_positive_int(embed_dim, "embed_dim")
        self.hidden_dim = check_positive_int(hidden_dim, "hidden_dim")
        self.n_edges = check_positive_int(n_edges, "n_edges")
        self.n_negatives = (None if n_negatives is None
                            else check_positive_int(n_negatives, "n_negatives"))
        self.n_near = check_positive_int(n_near, "n_near")
        if entity_init not in ("geo", "random"):
            raise ValueError(f"entity_init must be 'geo' or 'random'; got {entity_init!r}.")
        self.entity_init = str(entity_init)
        for name, v, lo in (("temperature", temperature, 0.0), ("max_radius", max_radius, 0.0)):
            if not (math.isfinite(float(v)) and float(v) > lo):
                raise ValueError(f"{name} must be a finite number > {lo}; got {v!r}.")
        if not 0.0 <= float(geo_weight) <= 1.0:
            raise ValueError(f"geo_weight must be in [0, 1]; got {geo_weight!r}.")
        if float(consistency_weight) < 0 or float(margin) < 0:
            raise ValueError("consistency_weight and margin must be >= 0.")
        self.hierarchy = hierarchy
        L = hierarchy.n_levels
        sig = list(DEFAULT_SIGMA_KM if sigma_km is None else sigma_km)
        if not sig or any(not (math.isfinite(float(s)) and float(s) > 0) for s in sig):
            raise ValueError(f"sigma_km must be positive distances in km; got {sigma_km!r}.")
        self.sigma_km = [float(sig[min(k, len(sig) - 1)]) for k in range(L)]
        lw = [1.0] * L if level_weights is None else [float(w) for w in level_weights]
        if len(lw) != L or any(w < 0 for w in lw) or sum(lw) <= 0:
            raise ValueError(f"level_weights must be {L} non-negative numbers (one per level: "
                             f"{', '.join(hierarchy.level_names)}), not all 0; got "
                             f"{level_weights!r}.")
        self.level_weights = lw
        self.temperature = float(temperature)
        self.max_radius = float(max_radius)
        self.geo_weight = float(geo_weight)
        self.consistency_weight = float(consistency_weight)
        self.margin = float(margin)
        self.encoder_record: dict[str, Any] = {}
        self._encoder = None

        gen = torch.Generator().manual_seed(0 if seed is None else int(seed))
        self.manifold = geoopt.Lorentz(k=1.0)
        # initial radius grows with the level (coarse entities near the origin); small
        # enough that every entity starts within reach. Directions: random, or ("geo")
        # the centroid's unit vector in the first 3 coordinates plus a little noise, so
        # that entities no training item ever names start next to their neighbours
        lev = torch.as_tensor(hierarchy.level, dtype=torch.float32)
        radius = 0.5 + 0.5 * lev
        noise = torch.randn(len(hierarchy), self.embed_dim, generator=gen)
        if self.entity_init == "geo" and self.embed_dim >= 3:
            xyz = latlon_to_xyz(torch.as_tensor(hierarchy.latlon, dtype=torch.float64)).float()
            pad = torch.zeros(len(hierarchy), self.embed_dim - 3)
            noise = torch.cat([xyz, pad], dim=1) + GEO_INIT_NOISE * noise
        direction = F.normalize(noise, dim=1)
        init = expmap0(direction * radius[:, None])
        self.entities = geoopt.ManifoldParameter(init, manifold=self.manifold)
        head = nn.Sequential(nn.Linear(self.input_dim, self.hidden_dim), nn.GELU(),
                             nn.Linear(self.hidden_dim, self.embed_dim))
        with torch.no_grad():
            for mod in head:
                if isinstance(mod, nn.Linear):
                    bound = 1.0 / math.sqrt(mod.in_features)
                    mod.weight.uniform_(-bound, bound, generator=gen)
                    mod.bias.uniform_(-bound, bound, generator=gen)
        self.head = head
        self._buffers_from_hierarchy()
        if encoder is not None:
            self.set_encoder(encoder)

    def _buffers_from_hierarchy(self) -> None:
        h = self.hierarchy
        # not in the state dict: rebuilt from the hierarchy, which checkpoints store
        self.register_buffer("_latlon", torch.as_tensor(h.latlon, dtype=torch.float64),
                             persistent=False)
        self.register_buffer("_level", torch.as_tensor(h.level), persistent=False)
        self.register_buffer("_parent", torch.as_tensor(h.parent_index), persistent=False)
        self.register_buffer("_ancestors", torch.as_tensor(h.ancestors), persistent=False)
        leaves = torch.as_tensor(h.leaves)
        self.register_buffer("_leaves", leaves, persistent=False)
        self.register_buffer("_leaf_xyz", latlon_to_xyz(self._latlon[leaves]).float(),
                             persistent=False)
        self._level_index = [torch.nonzero(self._level == k).reshape(-1)
                             for k in range(h.n_levels)]
        # position of every entity within its level (for per-level targets)
        pos = torch.full((len(h),), -1, dtype=torch.long)
        for idx in self._level_index:
            pos[idx] = torch.arange(len(idx))
        self.register_buffer("_pos_in_level", pos, persistent=False)
        self.register_buffer("_child_index", torch.nonzero(self._parent >= 0).reshape(-1),
                             persistent=False)
        self._children: list[np.ndarray] | None = None
        # lazily built k-d trees (unit vectors of centroids): leaf assignment, and the
        # n_near nearest entities of every entity within its level (sampled negatives)
        self._leaf_tree: Any = None
        self._near: dict[int, torch.Tensor] = {}

    def _apply(self, fn: Any, recurse: bool = True) -> HierLoc:
        out = super()._apply(fn, recurse)
        dev = self._level.device
        self._level_index = [i.to(dev) for i in self._level_index]
        self._near = {k: v.to(dev) for k, v in self._near.items()}
        return out

    # -- basics -----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return self.entities.device

    @property
    def n_entities(self) -> int:
        """Number of entity embeddings."""
        return int(self.entities.shape[0])

    def set_encoder(self, encoder: Any) -> None:
        """Attach an :class:`~geodiffloc.encoders.Encoder` for raw inputs (texts, images).

        Raises
        ------
        ValueError
            Its width differs from ``input_dim``, or it is not the encoder recorded at
            training.
        """
        from ...encoders.base import check_encoder_matches

        if int(encoder.dim) != self.input_dim:
            raise ValueError(f"the encoder {encoder.name!r} gives {encoder.dim}-d embeddings but "
                             f"this HierLoc takes {self.input_dim}-d inputs.")
        if self.encoder_record and self.encoder_record.get("name") not in (None, "precomputed"):
            check_encoder_matches(self.encoder_record, encoder)
        else:
            self.encoder_record = {"name": str(encoder.name), "dim": int(encoder.dim)}
        self._encoder = encoder

    def entity_points(self) -> torch.Tensor:
        """All entities on the hyperboloid ``(n_entities, d + 1)``, radius below ``max_radius``."""
        return squash_to_ball(self.entities, self.max_radius)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Query points ``(n, d + 1)`` on the hyperboloid from embeddings ``(n, input_dim)``."""
        return expmap0(self.head(x.to(self.device, torch.float32)), self.max_radius)

    def _queries(self, inputs: Any, batch_size: int = 64) -> torch.Tensor:
        """Embeddings ``(n, input_dim)`` from arrays, or raw inputs through the encoder."""
        is_array = isinstance(inputs, torch.Tensor | np.ndarray)
        if inputs is None:
            raise ValueError("inputs is None; pass (n, input_dim) embeddings or raw inputs.")
        if not is_array:
            if isinstance(inputs, str):
                inputs = [inputs]
            seq = list(inputs)
            if seq and all(isinstance(v, int | float) for v in seq):
                is_array, inputs = True, np.asarray(seq, dtype=np.float32)
            elif self._encoder is None:
                raise ValueError(
                    "this HierLoc has no encoder for raw inputs; pass (n, input_dim) "
                    "embeddings, or attach one with set_encoder(...) / encoder=.")
            else:
                inputs = self._encoder.encode(seq, batch_size=batch_size, progress=False)
        x = real_embeddings(inputs)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.input_dim or x.shape[0] == 0:
            raise ValueError(f"embeddings must have shape (n, {self.input_dim}) with n >= 1; got "
                             f"{tuple(x.shape)}.")
        bad = ~torch.isfinite(x).all(dim=1)
        if bad.any():
            raise ValueError(f"query {int(torch.nonzero(bad)[0])} has NaN or inf embeddings.")
        return x.to(self.device, torch.float32)

    # -- training ---------------------------------------------------------------------
    def assign_leaves(self, latlon: torch.Tensor) -> torch.Tensor:
        """Index of the nearest leaf entity (great circle between centroids) per location.

        The training target of a located item: its nearest leaf, and that leaf's
        ancestors at the coarser levels. Nearest-centroid, not point-in-polygon (see
        the concept page).
        """
        from scipy.spatial import cKDTree

        if self._leaf_tree is None:
            self._leaf_tree = cKDTree(self._leaf_xyz.double().cpu().numpy())
        xyz = latlon_to_xyz(latlon.detach().to("cpu", torch.float64)).numpy()
        _, nearest = self._leaf_tree.query(xyz, k=1)
        return self._leaves[torch.from_numpy(np.asarray(nearest, np.int64)).to(
            self._leaves.device)]

    def _near_table(self, k: int) -> torch.Tensor:
        """``(m_k, n_near)`` positions (within level ``k``) of each entity's nearest peers."""
        if k not in self._near:
            from scipy.spatial import cKDTree

            idx = self._level_index[k].cpu()
            xyz = latlon_to_xyz(self._latlon.cpu()[idx]).numpy()
            kk = min(self.n_near, len(idx))
            _, nn_ = cKDTree(xyz).query(xyz, k=kk)
            table = torch.from_numpy(np.asarray(nn_, np.int64).reshape(len(idx), kk))
            self._near[k] = table.to(self._level.device)
        return self._near[k]

    def _candidates(self, k: int, positives: torch.Tensor,
                    generator: torch.Generator | None,
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Entities of level ``k`` in a training step's softmax, and their log weights.

        ``positives``: positions (within level ``k``) of the true entities. Returns
        positions within the level (sorted; the whole level when it has at most
        ``n_negatives`` entities, then with weights ``None``) and the sampled-softmax
        log weights (0 for kept entities, ``log((m - |M|) / |R|)`` for drawn ones).
        Memory: ``O(n_negatives + B * n_near)``, independent of the level's size.
        """
        m = len(self._level_index[k])
        dev = self._level.device
        if self.n_negatives is None or m <= self.n_negatives:
            return torch.arange(m, device=dev), None
        near = self._near_table(k)[positives].reshape(-1)
        kept = torch.unique(torch.cat([positives, near]))
        n_fill = self.n_negatives - len(kept)
        rest = m - len(kept)
        if n_fill <= 0 or rest <= 0:
            return kept, torch.zeros(len(kept), device=dev)
        n_fill = min(n_fill, rest)
        drawn = torch.zeros(0, dtype=torch.long, device=dev)
        for _ in range(8):  # rejection: a handful of rounds suffice when m >> n_negatives
            cand = torch.randint(m, (2 * n_fill,), generator=generator).to(dev)
            cand = cand[~torch.isin(cand, kept)]
            drawn = torch.unique(torch.cat([drawn, cand]))
            if len(drawn) >= n_fill:
                break
        if len(drawn) > n_fill:  # a random subset of the unique draws (order is sorted)
            pick = torch.randperm(len(drawn), generator=generator)[:n_fill].to(dev)
            drawn = drawn[pick]
        w = math.log(rest / max(len(drawn), 1))
        allc = torch.cat([kept, drawn])
        lw = torch.cat([torch.zeros(len(kept), device=dev),
                        torch.full((len(drawn),), w, device=dev)])
        order = torch.argsort(allc)
        return allc[order], lw[order]

    def training_loss(self, x: torch.Tensor, latlon: torch.Tensor, *,
                      generator: torch.Generator | None = None,
                      ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training objective on a batch, and its parts (for logging).

        ``sum_l w_l L_geo(l) / sum_l w_l + consistency_weight * (L_parent + L_norm)``;
        see :mod:`geodiffloc.models.hierloc.loss` for the formulas.

        Parameters
        ----------
        x
            ``(B, input_dim)`` embeddings.
        latlon
            ``(B, 2)`` true ``(lat, lon)`` degrees.
        generator
            Draws the parent-child edges of the hierarchy terms (CPU generator).

        Returns
        -------
        (loss, logs)
            ``logs`` holds ``geo``, ``parent``, ``norm`` and ``acc_leaf`` (share of the
            batch whose nearest leaf is the top-scored leaf).
        """
        latlon = latlon.to(self.device, torch.float64)
        q = self.embed(x)
        leaf = self.assign_leaves(latlon)
        anc = self._ancestors[leaf]  # (B, L)
        total_w = 0.0
        geo = q.sum() * 0.0
        seen: list[torch.Tensor] = []  # entities scored this step (for acc_leaf)
        for k, idx in enumerate(self._level_index):
            w = self.level_weights[k]
            if w == 0 or len(idx) == 0:
                continue
            tgt = anc[:, k]
            tgt = torch.where(tgt >= 0, self._pos_in_level[tgt.clamp_min(0)], tgt)
            if not bool((tgt >= 0).any()):
                continue
            cand, lw = self._candidates(k, torch.unique(tgt[tgt >= 0]), generator)
            if lw is not None:  # positions within the level -> positions within cand
                tgt = torch.where(tgt >= 0, torch.searchsorted(cand, tgt.clamp_min(0)), tgt)
            ent_idx = idx[cand]
            seen.append(ent_idx)
            lk = geo_weighted_contrastive_loss(
                q, self._points(ent_idx), tgt, latlon, self._latlon[ent_idx],
                temperature=self.temperature, sigma_km=self.sigma_km[k],
                geo_weight=self.geo_weight, log_weight=lw)
            geo = geo + w * lk
            total_w += w
        geo = geo / max(total_w, 1e-12)
        parent_l, norm_l = self._hierarchy_terms(generator)
        loss = geo + self.consistency_weight * (parent_l + norm_l)
        with torch.no_grad():
            if self.n_negatives is None:
                scored = self._leaves
            else:  # the leaves this step scored (all of them when no level was sampled)
                allseen = torch.unique(torch.cat(seen)) if seen else self._leaves
                scored = allseen[torch.isin(allseen, self._leaves)]
            d = lorentz_distance(q, self._points(scored))
            acc = (scored[d.argmin(dim=1)] == leaf).float().mean()
        return loss, {"geo": geo.detach(), "parent": parent_l.detach(),
                      "norm": norm_l.detach(), "acc_leaf": acc}

    def _points(self, index: torch.Tensor) -> torch.Tensor:
        """Entities ``index`` on the hyperboloid (only those rows are computed)."""
        return squash_to_ball(self.entities[index], self.max_radius)

    def _hierarchy_terms(self, generator: torch.Generator | None,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        child = self._child_index
        if len(child) == 0 or self.consistency_weight == 0:
            z = self.entities.sum() * 0.0
            return z, z
        if len(child) > self.n_edges:
            if self.n_negatives is None:
                pick = torch.randperm(len(child), generator=generator)[: self.n_edges]
            else:  # with replacement: no O(n_entities) permutation per step
                pick = torch.randint(len(child), (self.n_edges,), generator=generator)
            child = child[pick.to(child.device)]
        parent = self._parent[child]
        child_pts = self._points(child)
        norm_l = norm_order_loss(child_pts, self._points(parent), margin=self.margin)
        parent_l = child_pts.sum() * 0.0
        plev = self._level[parent]
        for k in torch.unique(plev).tolist():
            sel = plev == k
            idx = self._level_index[k]
            tgt = self._pos_in_level[parent[sel]]
            cand, lw = self._candidates(k, torch.unique(tgt), generator)
            if lw is not None:
                tgt = torch.searchsorted(cand, tgt)
            parent_l = parent_l + parent_choice_loss(
                child_pts[sel], self._points(idx[cand]), tgt, temperature=self.temperature,
                log_weight=lw) * (float(sel.sum()) / len(child))
        return parent_l, norm_l

    def fit(
        self, embeddings: Any, latlon: Any, *, steps: int = 1000, batch_size: int = 256,
        lr: float = 1e-3, entity_lr: float | None = None, weight_decay: float = 0.0,
        seed: int = 0, progress: bool = True, clip_grad_norm: float | None = 1.0,
    ) -> list[float]:
        """Train in place on in-memory embeddings: a convenience over :mod:`geodiffloc.train`.

        Runs the same :class:`~geodiffloc.train.HierLocModule` as ``geodiffloc train
        hierloc`` (Riemannian Adam, cosine schedule) with nothing written to disk; needs
        the ``[train]`` extra.

        Parameters
        ----------
        embeddings, latlon
            ``(n, input_dim)`` embeddings and ``(n, 2)`` ``(lat, lon)`` degrees.
        steps, batch_size
            Optimiser steps and batch size.
        lr, entity_lr, weight_decay
            Learning rates of the query head and of the entity embeddings (default:
            ``lr``), and the head's weight decay.
        seed, progress, clip_grad_norm
            Seeding, a progress bar on stderr, gradient clipping (``None``: off).

        Returns
        -------
        list[float]
            The loss of every step.

        Examples
        --------
        >>> from geodiffloc.data import EntityHierarchy
        >>> h = EntityHierarchy.from_records([
        ...     {"entity_id": "A", "lat": 0.0, "lon": 0.0},
        ...     {"entity_id": "a", "parent": "A", "lat": 1.0, "lon": 0.0}])
        >>> m = HierLoc(h, input_dim=4, embed_dim=2, hidden_dim=8)
        >>> len(m.fit(torch.randn(8, 4), torch.zeros(8, 2), steps=2, batch_size=4,
        ...           progress=False))
        2
        """
        from ..._hooks import trainer

        fit_in_memory = trainer()
        optim = {"lr": float(lr), "entity_lr": None if entity_lr is None else float(entity_lr),
                 "weight_decay": float(weight_decay)}
        return fit_in_memory(self, embeddings, latlon, steps=steps, batch_size=batch_size,
                             optim=optim, clip_grad_norm=clip_grad_norm, seed=seed,
                             progress=progress)

    # -- inference --------------------------------------------------------------------
    @torch.no_grad()
    def entity_logits(self, inputs: Any, *, batch_size: int = 256) -> torch.Tensor:
        """Scores ``-d(q, e) / τ`` of every entity for every query, ``(n, n_entities)``.

        ``inputs``: ``(n, input_dim)`` embeddings, or raw inputs with an encoder attached.
        """
        x = self._queries(inputs, batch_size)
        ents = self.entity_points()
        out = [-lorentz_distance(self.embed(x[s:s + batch_size]), ents) / self.temperature
               for s in range(0, x.shape[0], batch_size)]
        return torch.cat(out).double().cpu()

    @torch.no_grad()
    def level_probabilities(self, inputs: Any, method: Method = "flat", *,
                            beam_width: int = 10) -> torch.Tensor:
        """Probability of every entity, ``(n, n_entities)`` float64.

        ``"flat"``: a softmax over the entities of each level, level by level (each
        level sums to 1). ``"beam"``: top-down beam search; an entity reached by the
        beam gets the product of the softmaxes over its siblings along its path, every
        other entity 0 (each level's mass is what the beam kept).

        Raises
        ------
        ValueError
            Unknown method, bad ``beam_width``, bad inputs.
        """
        logits = self.entity_logits(inputs)
        if method == "flat":
            probs = torch.zeros_like(logits)
            for idx in self._level_index:
                idx = idx.cpu()
                if len(idx):
                    probs[:, idx] = logits[:, idx].softmax(dim=1)
            return probs
        if method == "beam":
            bw = check_positive_int(beam_width, "beam_width")
            return torch.from_numpy(np.stack([self._beam(row, bw) for row in logits.numpy()]))
        raise ValueError(f"method must be 'flat' or 'beam'; got {method!r}.")

    def _children_lists(self) -> list[np.ndarray]:
        if self._children is None:
            par = self.hierarchy.parent_index
            order = np.argsort(par, kind="stable")
            bounds = np.searchsorted(par[order], np.arange(-1, len(par) + 1))
            # entry 0: the roots (parent -1); entry i + 1: the children of entity i
            self._children = [order[bounds[i]:bounds[i + 1]] for i in range(len(par) + 1)]
        return self._children

    def _beam(self, logits: np.ndarray, width: int) -> np.ndarray:
        kids = self._children_lists()
        p = np.zeros(len(logits))

        def expand(node: int, mass: float) -> list[tuple[float, int]]:
            ch = kids[node + 1]
            z = logits[ch] - logits[ch].max()
            w = np.exp(z) / np.exp(z).sum()
            return [(mass * float(wi), int(c)) for wi, c in zip(w, ch, strict=True)]

        frontier = sorted(expand(-1, 1.0), reverse=True)
        for mass, e in frontier:
            p[e] = mass
        frontier = frontier[:width]
        while any(len(kids[e + 1]) for _, e in frontier):
            cand: list[tuple[float, int]] = []
            for mass, e in frontier:
                if len(kids[e + 1]):
                    new = expand(e, mass)
                    for m2, c in new:
                        p[c] = m2
                    cand += new
                else:
                    cand.append((mass, e))  # a leaf stays in the beam
            frontier = sorted(cand, reverse=True)[:width]
        return p

    def _leaf_probabilities(self, inputs: Any, method: Method, beam_width: int) -> torch.Tensor:
        """``(n, n_leaves)`` distribution over the leaves (flat: one softmax over all leaves)."""
        if method == "flat":
            return self.entity_logits(inputs)[:, self._leaves.cpu()].softmax(dim=1)
        p = self.level_probabilities(inputs, method, beam_width=beam_width)[:, self._leaves.cpu()]
        return p / p.sum(dim=1, keepdim=True).clamp_min(1e-300)

    @torch.no_grad()
    def predict(self, inputs: Any, top_k: int = 1, *, method: Method = "flat",
                beam_width: int = 10) -> Any:
        """The most likely leaf entities per query, as points (their centroids).

        Parameters
        ----------
        inputs
            ``(n, input_dim)`` embeddings, or raw inputs (texts, images) with an encoder.
        top_k
            Rows per query; with ``top_k > 1`` a ``rank`` column (1 = best) is added.
        method
            ``"flat"``: softmax over all leaves; ``"beam"``: top-down beam search (leaf
            probability = product of sibling softmaxes on its path, renormalised over
            the leaves the beam reached).
        beam_width
            Entities kept per step of the beam search.

        Returns
        -------
        geopandas.GeoDataFrame
            EPSG:4326 points; columns ``query``, (``rank``), ``lat``, ``lon``,
            ``entity_id``, ``name``, ``level_name``, ``prob``, and one column per level
            with the name of the leaf's ancestor there (``country``, ``admin1``, ...;
            empty where a level is skipped).

        Raises
        ------
        ValueError
            Bad inputs, ``top_k`` outside ``1..n_leaves``, unknown method.
        """
        n_leaves = len(self._leaves)
        if not 1 <= check_positive_int(top_k, "top_k") <= n_leaves:
            raise ValueError(f"top_k must be between 1 and the number of leaves {n_leaves}; "
                             f"got {top_k}.")
        p = self._leaf_probabilities(inputs, method, beam_width)
        top = torch.topk(p, int(top_k), dim=1)
        leaves = self._leaves.cpu().numpy()[top.indices.numpy()].ravel()
        n, k = top.indices.shape
        fr = self.hierarchy.frame
        names = fr["name"].to_numpy(object)
        anc = self.hierarchy.ancestors[leaves]
        cols: dict[str, Any] = {
            "entity_id": fr["entity_id"].to_numpy(object)[leaves],
            "name": names[leaves], "level_name": fr["level_name"].to_numpy(object)[leaves],
            "prob": top.values.numpy().ravel()}
        for lv, lname in enumerate(self.hierarchy.level_names):
            a = anc[:, lv]
            cols[lname] = np.where(a >= 0, names[np.maximum(a, 0)], "")
        lead: dict[str, Any] = {"query": np.repeat(np.arange(n), k)}
        if k > 1:
            lead["rank"] = np.tile(np.arange(1, k + 1), n)
        ll = self.hierarchy.latlon[leaves]
        return points_frame(ll[:, 0], ll[:, 1], cols, leading=lead,
                            attrs={"model": "HierLoc", "method": method,
                                   "n_entities": self.n_entities})

    @torch.no_grad()
    def predict_levels(self, inputs: Any, top_k: int = 5, *, method: Method = "beam",
                       beam_width: int = 10) -> dict[str, Any]:
        """The ``top_k`` entities of every level per query, one GeoDataFrame per level.

        Returns
        -------
        dict[str, geopandas.GeoDataFrame]
            Keyed by level name; columns ``query``, ``rank``, ``entity_id``, ``name``,
            ``level``, ``level_name``, ``prob``, ``lat``, ``lon`` (centroid), ``geometry``
            (the entity's polygon where known, else its centroid point), EPSG:4326. A
            level with fewer than ``top_k`` reachable entities has fewer rows (beam);
            entities of probability 0 are left out.

        Examples
        --------
        >>> from geodiffloc.data import EntityHierarchy
        >>> h = EntityHierarchy.from_records([
        ...     {"entity_id": "A", "lat": 0.0, "lon": 0.0},
        ...     {"entity_id": "a", "parent": "A", "lat": 1.0, "lon": 0.0}],
        ...     level_names=("region", "town"))
        >>> out = HierLoc(h, input_dim=4, embed_dim=2, hidden_dim=8).predict_levels(
        ...     torch.randn(1, 4))
        >>> sorted(out), out["town"]["prob"].round(6).tolist()
        (['region', 'town'], [1.0])
        """
        import geopandas as gpd

        check_positive_int(top_k, "top_k")
        probs = self.level_probabilities(inputs, method, beam_width=beam_width).numpy()
        fr = self.hierarchy.frame
        out = {}
        for lv, lname in enumerate(self.hierarchy.level_names):
            idx = self._level_index[lv].cpu().numpy()
            rows = []
            for qi in range(probs.shape[0]):
                pl = probs[qi, idx]
                order = np.argsort(-pl, kind="stable")[: int(top_k)]
                order = order[pl[order] > 0]
                rows.append(_rows(qi, idx[order], pl[order]))
            sel = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.int64)
            sub = fr.iloc[sel]
            data = {
                "query": np.concatenate([r[0] for r in rows]),
                "rank": np.concatenate([np.arange(1, len(r[1]) + 1) for r in rows]),
                "entity_id": sub["entity_id"].to_numpy(object),
                "name": sub["name"].to_numpy(object),
                "level": sub["level"].to_numpy(np.int64),
                "level_name": sub["level_name"].to_numpy(object),
                "prob": np.concatenate([r[2] for r in rows]),
                "lat": sub["lat"].to_numpy(np.float64), "lon": sub["lon"].to_numpy(np.float64),
            }
            gdf = gpd.GeoDataFrame(data, geometry=np.asarray(sub.geometry.values),
                                   crs="EPSG:4326")
            gdf.attrs.update({"model": "HierLoc", "method": method, "level": lname})
            out[lname] = gdf
        return out

    @torch.no_grad()
    def probability_map(
        self,
        inputs: Any,
        resolution: float = 1.0,
        *,
        method: Method = "flat",
        beam_width: int = 10,
        kernel_km: float = 50.0,
        max_leaves: int = 256,
        bbox: tuple[float, float, float, float] | None = None,
    ) -> Any:
        """Where each query was taken, as a probability raster (cell masses summing to 1).

        The leaf distribution (see :meth:`predict`) is spread over the grid: a polygon
        leaf's mass evenly (by area) over the cells whose centres it contains, a point
        leaf's mass (or a polygon that contains no cell centre) as a spherical Gaussian
        (von Mises-Fisher) kernel of scale ``kernel_km`` around its centroid, each
        normalised over the grid so it keeps exactly its mass. Only the ``max_leaves``
        most probable leaves are spread (the ``mass_kept`` attribute says how much of
        the total they hold) and the field is renormalised to 1.

        Parameters
        ----------
        resolution
            Cell size in degrees.
        kernel_km
            Scale of the kernel around point leaves.
        max_leaves
            Leaves spread per query.
        bbox
            ``(west, south, east, north)`` for a regional grid (mass normalised within it).

        Returns
        -------
        xarray.DataArray
            Dims ``("query", "lat", "lon")``, ``kind="mass"``, EPSG:4326, provenance attrs.

        Raises
        ------
        ValueError
            Bad inputs, grid or arguments.
        """
        import shapely

        if not (math.isfinite(float(kernel_km)) and float(kernel_km) > 0):
            raise ValueError(f"kernel_km must be a positive distance; got {kernel_km!r}.")
        kmax = check_positive_int(max_leaves, "max_leaves")
        grid = LatLonGrid.global_(resolution) if bbox is None else LatLonGrid.from_bbox(
            resolution, bbox)
        n_lat, n_lon = grid.shape
        cells = grid.latlon(dtype=torch.float64)
        cxyz = latlon_to_xyz(cells)
        log_area = torch.log(torch.as_tensor(grid.cell_area_sr(), dtype=torch.float64)
                             ).repeat_interleave(n_lon)
        kappa = 1.0 / (float(kernel_km) / EARTH_RADIUS_KM) ** 2
        p = self._leaf_probabilities(inputs, method, beam_width)
        k = min(kmax, p.shape[1])
        top = torch.topk(p, k, dim=1)
        leaves = self._leaves.cpu().numpy()
        fr = self.hierarchy.frame
        has_poly = fr["has_polygon"].to_numpy(bool)
        lon_c = cells[:, 1].numpy()
        lat_c = cells[:, 0].numpy()
        cache: dict[int, torch.Tensor] = {}

        def spread(e: int) -> torch.Tensor:
            if e in cache:
                return cache[e]
            m = None
            if has_poly[e]:
                inside = torch.from_numpy(shapely.contains_xy(fr.geometry.iloc[e], lon_c, lat_c))
                if bool(inside.any()):
                    m = torch.where(inside, log_area, torch.full_like(log_area, -math.inf))
            if m is None:
                c = latlon_to_xyz(torch.as_tensor(self.hierarchy.latlon[e], dtype=torch.float64))
                m = kappa * (cxyz @ c - 1.0) + log_area
            cache[e] = m.softmax(dim=0)
            return cache[e]

        out = np.zeros((p.shape[0], n_lat * n_lon))
        kept = top.values.sum(dim=1).numpy()
        for qi in range(p.shape[0]):
            acc = torch.zeros(n_lat * n_lon, dtype=torch.float64)
            for w, j in zip(top.values[qi].tolist(), top.indices[qi].tolist(), strict=True):
                if w > 0:
                    acc += w * spread(int(leaves[j]))
            out[qi] = (acc / acc.sum().clamp_min(1e-300)).numpy()
        return grid.to_dataarray(
            out.reshape(-1, n_lat, n_lon), kind="mass", leading_dim="query",
            leading_coords=np.arange(p.shape[0]),
            attrs={"model": "HierLoc", "method": method, "kernel_km": float(kernel_km),
                   "max_leaves": int(k), "mass_kept": float(kept.min()),
                   "grid": "leaf masses spread over polygons / kernels"})

    # -- checkpoints ------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model except weights and hierarchy arrays."""
        meta = self.hierarchy.metadata()
        return {
            "format": FORMAT, "input_dim": self.input_dim, "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim, "temperature": self.temperature,
            "max_radius": self.max_radius, "sigma_km": list(self.sigma_km),
            "geo_weight": self.geo_weight, "level_weights": list(self.level_weights),
            "consistency_weight": self.consistency_weight, "margin": self.margin,
            "n_edges": self.n_edges, "n_negatives": self.n_negatives, "n_near": self.n_near,
            "entity_init": self.entity_init,
            "encoder": dict(self.encoder_record),
            "hierarchy": meta,
        }

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config()

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        arrays, _ = self.hierarchy.to_arrays()
        tensors = {k: v for k, v in self.state_dict().items()}
        tensors.update({f"hierarchy.{k}": torch.from_numpy(np.ascontiguousarray(v))
                        for k, v in arrays.items()})
        return tensors

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        from ..base import load_state_strict

        own = {k: v for k, v in tensors.items() if not k.startswith("hierarchy.")}
        load_state_strict(self, own, "HierLoc checkpoint")

    @classmethod
    def from_checkpoint_config(cls, cfg: dict[str, Any], *,
                               hierarchy: EntityHierarchy | None = None,
                               encoder: Any = None) -> HierLoc:
        if hierarchy is None:
            raise ValueError("HierLoc.from_checkpoint_config needs the hierarchy; use "
                             "HierLoc.load(path).")
        model = cls(hierarchy, input_dim=cfg["input_dim"], embed_dim=cfg["embed_dim"],
                    hidden_dim=cfg["hidden_dim"], temperature=cfg["temperature"],
                    max_radius=cfg["max_radius"], sigma_km=cfg["sigma_km"],
                    geo_weight=cfg["geo_weight"], level_weights=cfg["level_weights"],
                    consistency_weight=cfg["consistency_weight"], margin=cfg["margin"],
                    n_edges=cfg["n_edges"], n_negatives=cfg.get("n_negatives"),
                    n_near=cfg.get("n_near", 8),
                    entity_init=cfg.get("entity_init", "random"), seed=0)
        model.encoder_record = dict(cfg.get("encoder") or {})
        if encoder is not None:
            model.set_encoder(encoder)
        return model

    @classmethod
    def check_checkpoint(cls, cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
                         path: str | os.PathLike) -> None:
        """Refuse a damaged checkpoint: config keys and types, hierarchy, weight shapes."""
        from ._validate import check_hierloc_config

        check_hierloc_config(cfg, tensors, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *,  # type: ignore[override]
             device: str | torch.device | None = None, encoder: Any = None) -> HierLoc:
        """Load a checkpoint written by :meth:`save` (safetensors: no code execution).

        The hierarchy (ids, names, parents, levels, centroids, geometries) is stored in
        the same file, so a loaded model predicts the same entities and polygons.

        Parameters
        ----------
        device
            Where to put the model.
        encoder
            An encoder to attach (checked against the recorded one).

        Raises
        ------
        CheckpointNotFoundError
            No file at ``path``.
        ValueError
            Not a HierLoc checkpoint, or a damaged one (named).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from geodiffloc.data import EntityHierarchy
        >>> h = EntityHierarchy.from_records([{"entity_id": "A", "lat": 1.0, "lon": 2.0}])
        >>> p = HierLoc(h, input_dim=3, embed_dim=2, hidden_dim=4).save(
        ...     pathlib.Path(tempfile.mkdtemp()) / "h.safetensors")
        >>> HierLoc.load(p).hierarchy.ids.tolist()
        ['A']
        """
        tensors, cfg = read_checkpoint(path, fmt=cls.checkpoint_format, what=cls.model_name)
        cls.check_checkpoint(cfg, tensors, path)
        arrays = {k.removeprefix("hierarchy."): v.numpy() for k, v in tensors.items()
                  if k.startswith("hierarchy.")}
        try:
            hierarchy = EntityHierarchy.from_arrays(arrays, cfg["hierarchy"])
        except (KeyError, ValueError) as e:
            raise ValueError(f"{os.fspath(path)!r}: the stored hierarchy is damaged ({e}).") \
                from None
        model = cls.from_checkpoint_config(cfg, hierarchy=hierarchy, encoder=encoder)
        model.load_checkpoint_tensors(tensors)
        model.eval()
        return model.to(device) if device is not None else model


def _rows(qi: int, ents: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows of one query in a per-level frame: query ids, entity indices, probabilities."""
    return np.full(len(ents), qi, np.int64), np.asarray(ents, np.int64), np.asarray(probs)
