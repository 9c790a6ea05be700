"""Condition encoders (image, text) behind one small protocol."""

from .base import Encoder, PrecomputedEmbeddings, check_encoder_matches

__all__ = ["Encoder", "PrecomputedEmbeddings", "check_encoder_matches"]
