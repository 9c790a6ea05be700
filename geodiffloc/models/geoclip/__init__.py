"""GeoCLIP: contrastive image-to-GPS retrieval, compatible with the official weights.

``GeoCLIP.from_official()`` loads the pretrained location encoder, image head and
logit scale shipped by the ``geoclip`` package; retrieval galleries are embedded once
and cached; :meth:`GeoCLIP.probability_map` and :meth:`GeoCLIP.text_similarity_map`
give georeferenced rasters; :meth:`GeoCLIP.training_step` trains on precomputed
backbone features.

The class is three parts: :mod:`.network` (weights and loss), :mod:`.predictor`
(galleries, GeoDataFrames, rasters, :meth:`GeoCLIP.score_candidates`) and :mod:`.io`
(checkpoints, official weights), on the shared :class:`~geodiffloc.models.base.Geolocator`.
"""

from .gallery import Gallery, GalleryEmbeddingCache, resolve_gallery, weights_fingerprint
from .location import (
    EQUAL_EARTH_A,
    EQUAL_EARTH_SCALE,
    LocationEncoder,
    RandomFourierFeatures,
    equal_earth_projection,
)
from .model import GeoCLIP
from .network import GeoCLIPNetwork
from .official import OFFICIAL_FILES, find_official
from .predictor import GeoCLIPPredictor
from .training import GPSQueue, contrastive_loss, perturb_latlon

__all__ = [
    "EQUAL_EARTH_A",
    "EQUAL_EARTH_SCALE",
    "OFFICIAL_FILES",
    "GPSQueue",
    "Gallery",
    "GalleryEmbeddingCache",
    "GeoCLIP",
    "GeoCLIPNetwork",
    "GeoCLIPPredictor",
    "LocationEncoder",
    "RandomFourierFeatures",
    "contrastive_loss",
    "equal_earth_projection",
    "find_official",
    "perturb_latlon",
    "resolve_gallery",
    "weights_fingerprint",
]
