"""G3: retrieval-augmented geolocation (geo-alignment, geo-diversification, geo-verification).

A query (any encoder's embedding) is aligned with GPS (GeoCLIP's location encoder and
GPS queue) and with MP16-Pro-style place descriptions; its nearest references in a
:class:`ReferenceDatabase` feed candidate generators (retrieval modes, LocDiff, any
OpenAI-compatible chat model); verification picks the candidate whose location
embedding best matches the query. See ``docs/concepts/g3.md``.
"""

from .database import ReferenceDatabase, VectorIndex, faiss_available
from .descriptions import DESCRIPTION_LEVELS, describe_locations, reverse_geocode
from .generators import (
    DEFAULT_PROMPT,
    Candidate,
    CandidateGenerator,
    LocDiffGenerator,
    OpenAIChatGenerator,
    Query,
    References,
    RetrievalGenerator,
    parse_coordinates,
)
from .loss import alignment_loss, info_nce
from .model import G3, DescriptionTable

__all__ = [
    "DEFAULT_PROMPT",
    "DESCRIPTION_LEVELS",
    "G3",
    "Candidate",
    "CandidateGenerator",
    "DescriptionTable",
    "LocDiffGenerator",
    "OpenAIChatGenerator",
    "Query",
    "ReferenceDatabase",
    "References",
    "RetrievalGenerator",
    "VectorIndex",
    "alignment_loss",
    "describe_locations",
    "faiss_available",
    "info_nce",
    "parse_coordinates",
    "reverse_geocode",
]
