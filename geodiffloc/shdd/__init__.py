"""The SHDD location-encoding space of LocDiff: encode, densities, KL, decode, fields."""

from .core import SHDD
from .decoding import decode, refine_modes
from .synthesis import synthesize

__all__ = ["SHDD", "decode", "refine_modes", "synthesize"]
