"""HierLoc: hierarchical entity geolocation in hyperbolic space (Lorentz model, geoopt).

Queries (any encoder's embeddings) and the entities of an
:class:`~geodiffloc.data.EntityHierarchy` (country > admin-1 > admin-2 > city, or a
user's own polygons) live on one hyperboloid; predictions are entities, per level, as
GeoDataFrames with their polygons. See ``docs/concepts/hierloc.md`` for the design.
"""

from .lorentz import distance_to_origin, expmap0, lorentz_distance, squash_to_ball
from .loss import geo_targets, geo_weighted_contrastive_loss, norm_order_loss, parent_choice_loss
from .model import DEFAULT_SIGMA_KM, HierLoc

__all__ = [
    "DEFAULT_SIGMA_KM",
    "HierLoc",
    "distance_to_origin",
    "expmap0",
    "geo_targets",
    "geo_weighted_contrastive_loss",
    "lorentz_distance",
    "norm_order_loss",
    "parent_choice_loss",
    "squash_to_ball",
]
