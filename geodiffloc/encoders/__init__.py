"""Condition encoders (image, text) behind one small protocol.

Heavy libraries (open_clip, sentence-transformers, efficientnet) load lazily, when an
encoder is first used.
"""

from .base import Encoder, PrecomputedEmbeddings, check_encoder_matches
from .efficientnet import EfficientNetLiteEncoder
from .openclip import OpenCLIPImageEncoder, OpenCLIPTextEncoder
from .registry import encoder_from_name
from .text import SentenceTransformerEncoder

__all__ = [
    "EfficientNetLiteEncoder",
    "Encoder",
    "OpenCLIPImageEncoder",
    "OpenCLIPTextEncoder",
    "PrecomputedEmbeddings",
    "SentenceTransformerEncoder",
    "check_encoder_matches",
    "encoder_from_name",
]
