r"""HierLoc's losses: geo-weighted hyperbolic contrastive loss and hierarchy terms.

**Geo-weighted hyperbolic contrastive loss** (one level of the hierarchy). For a query
point :math:`q_i` on the hyperboloid with true location :math:`y_i`, the entities
:math:`e_1..e_m` of the level (centroids :math:`c_j`) and the true entity
:math:`a_i` of that level:

.. math::

    \ell_{ij} = -\,d_{\mathbb H}(q_i, e_j) / \tau, \qquad
    p_{ij} = \operatorname{softmax}_j(\ell_{ij}),

    g_{ij} = \operatorname{softmax}_j\!\left(-\,\mathrm{hav}(y_i, c_j) / \sigma\right),
    \qquad
    t_{ij} = (1 - \alpha)\,[j = a_i] + \alpha\, g_{ij},

    L = \frac{1}{|V|} \sum_{i \in V} -\sum_j t_{ij} \log p_{ij},

with :math:`d_{\mathbb H}` the Lorentz distance, :math:`\mathrm{hav}` the
great-circle (haversine) distance in km, :math:`\tau` the temperature, :math:`\sigma`
the level's distance scale in km, :math:`\alpha \in [0, 1]` the geo weight, and
:math:`V` the queries that have an entity at this level. The haversine distance
enters the objective through the targets: entities near the true location share
the target mass, so a near miss costs less than a far one (:math:`\alpha = 0` is the
plain InfoNCE over entities).

**Sampled negatives** (``HierLoc(n_negatives=K)``, for hierarchies too large for a
softmax over every entity per step): the sums over :math:`j` run over a candidate set
:math:`S` instead of the whole level: the true entities of the batch and the
``n_near`` entities nearest to each of them (always kept, weight 1), filled up to
:math:`K` with entities drawn uniformly from the rest of the level. Each drawn entity
stands for :math:`(m - |M|) / |R|` entities (:math:`M` the kept ones, :math:`R` the
drawn ones), so its logit and its target logit get :math:`+\log((m - |M|)/|R|)` (the
usual sampled-softmax correction of the partition function). When :math:`S` covers
the level, the loss is the full one exactly.

**Hierarchy consistency** (over parent-child edges :math:`(c, p)`):

* *parent choice*: cross-entropy of each child picking its own parent among all
  entities of the parent's level by :math:`-d_{\mathbb H}(c, \cdot) / \tau` (child near
  its parent, far from the other parents);
* *norm order*: :math:`\max(0, r(p) - r(c) + m)` with :math:`r` the distance to the
  origin, so coarser entities sit nearer the origin than their children (the
  Nickel & Kiela picture of a tree in hyperbolic space).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...sphere.distance import pairwise_haversine_km
from .lorentz import distance_to_origin, lorentz_distance

__all__ = ["geo_targets", "geo_weighted_contrastive_loss", "norm_order_loss",
           "parent_choice_loss"]


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.sum() * 0.0  # keeps the graph (DDP wants every parameter used)


def geo_targets(query_latlon: torch.Tensor, entity_latlon: torch.Tensor,
                target: torch.Tensor, *, sigma_km: float, geo_weight: float,
                log_weight: torch.Tensor | None = None) -> torch.Tensor:
    """The target distribution :math:`t_{ij}` of the module docstring, ``(n, m)`` float64.

    Rows whose ``target`` is ``-1`` are all zeros. ``log_weight``: see
    :func:`geo_weighted_contrastive_loss`.

    Examples
    --------
    >>> t = geo_targets(torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0], [0.0, 90.0]]),
    ...                 torch.tensor([0]), sigma_km=100.0, geo_weight=0.5)
    >>> [round(v, 6) for v in t[0].tolist()]
    [1.0, 0.0]
    """
    q = query_latlon.to(torch.float64)
    c = entity_latlon.to(device=q.device, dtype=torch.float64)
    valid = target >= 0
    one_hot = torch.zeros(q.shape[0], c.shape[0], dtype=torch.float64, device=q.device)
    one_hot[valid, target[valid]] = 1.0
    if geo_weight <= 0:
        return one_hot
    z = -pairwise_haversine_km(q, c) / float(sigma_km)
    if log_weight is not None:
        z = z + log_weight.to(z)[None, :]
    g = z.softmax(dim=1)
    return ((1.0 - geo_weight) * one_hot + geo_weight * g) * valid[:, None]


def geo_weighted_contrastive_loss(
    query: torch.Tensor,
    entities: torch.Tensor,
    target: torch.Tensor,
    query_latlon: torch.Tensor,
    entity_latlon: torch.Tensor,
    *,
    temperature: float,
    sigma_km: float,
    geo_weight: float,
    log_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """The geo-weighted hyperbolic contrastive loss of one level (module docstring).

    Parameters
    ----------
    query
        ``(n, d + 1)`` query points on the hyperboloid.
    entities
        ``(m, d + 1)`` entity points of one level.
    target
        ``(n,)`` index of each query's true entity in ``entities``; ``-1``: none
        (the row is left out of the mean).
    query_latlon, entity_latlon
        ``(n, 2)`` true locations and ``(m, 2)`` entity centroids, degrees.
    temperature, sigma_km, geo_weight
        :math:`\\tau`, :math:`\\sigma` (km) and :math:`\\alpha`.
    log_weight
        ``(m,)`` log of how many entities each of ``entities`` stands for (sampled
        negatives, see the module docstring); added to the logits and to the geo
        targets' logits. ``None``: every entity counts once (the full loss).

    Returns
    -------
    torch.Tensor
        The scalar loss (0, still attached to the graph, when no row has a target).

    Examples
    --------
    >>> from geodiffloc.models.hierloc.lorentz import expmap0
    >>> e = expmap0(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    >>> ll = torch.tensor([[0.0, 0.0], [0.0, 90.0]])
    >>> good = geo_weighted_contrastive_loss(e[:1], e, torch.tensor([0]), ll[:1], ll,
    ...     temperature=0.5, sigma_km=500.0, geo_weight=0.3)
    >>> bad = geo_weighted_contrastive_loss(e[1:], e, torch.tensor([0]), ll[:1], ll,
    ...     temperature=0.5, sigma_km=500.0, geo_weight=0.3)
    >>> bool(good < bad)
    True
    """
    valid = target >= 0
    if not bool(valid.any()) or entities.shape[0] == 0:
        return _zero(query) + _zero(entities)
    logits = -lorentz_distance(query, entities) / float(temperature)
    if log_weight is not None:
        logits = logits + log_weight.to(logits)[None, :]
    logp = F.log_softmax(logits, dim=1)
    t = geo_targets(query_latlon, entity_latlon, target, sigma_km=sigma_km,
                    geo_weight=geo_weight, log_weight=log_weight).to(logp.dtype)
    return -(t * logp).sum(1)[valid].mean()


def parent_choice_loss(children: torch.Tensor, parent_level: torch.Tensor,
                       parent_target: torch.Tensor, *, temperature: float,
                       log_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each child picking its parent among ``parent_level`` by distance.

    ``log_weight``: ``(m,)`` sampled-negative correction added to the logits (see
    :func:`geo_weighted_contrastive_loss`).

    Examples
    --------
    >>> from geodiffloc.models.hierloc.lorentz import expmap0
    >>> p = expmap0(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    >>> c = expmap0(torch.tensor([[1.5, 0.1]]))
    >>> bool(parent_choice_loss(c, p, torch.tensor([0]), temperature=1.0)
    ...      < parent_choice_loss(c, p, torch.tensor([1]), temperature=1.0))
    True
    """
    if children.shape[0] == 0:
        return _zero(children) + _zero(parent_level)
    logits = -lorentz_distance(children, parent_level) / float(temperature)
    if log_weight is not None:
        logits = logits + log_weight.to(logits)[None, :]
    return F.cross_entropy(logits, parent_target)


def norm_order_loss(children: torch.Tensor, parents: torch.Tensor, *,
                    margin: float) -> torch.Tensor:
    """Mean hinge ``max(0, r(parent) - r(child) + margin)`` over edges (row by row).

    Examples
    --------
    >>> from geodiffloc.models.hierloc.lorentz import expmap0
    >>> near, far = expmap0(torch.tensor([[0.5, 0.0]])), expmap0(torch.tensor([[2.0, 0.0]]))
    >>> float(norm_order_loss(far, near, margin=0.1)), float(norm_order_loss(near, far, margin=0.1))
    (0.0, 1.600000023841858)
    """
    if children.shape[0] == 0:
        return _zero(children) + _zero(parents)
    gap = distance_to_origin(parents) - distance_to_origin(children) + float(margin)
    return F.relu(gap).mean()
