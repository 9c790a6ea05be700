"""Rebuild an encoder from the name a checkpoint recorded.

A trained model stores ``encoder.name`` (see :mod:`geodiffloc.encoders.base`);
:func:`encoder_from_name` turns that string back into a working encoder so that
``Model.load(path)`` can embed raw inputs without the user naming the encoder again.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .base import Encoder

__all__ = ["encoder_from_name"]


def encoder_from_name(
    name: str,
    *,
    device: str | torch.device | None = None,
    path: str | os.PathLike | None = None,
) -> Encoder:
    """Build the encoder identified by ``name``.

    Parameters
    ----------
    name
        An encoder name as recorded in checkpoints:
        ``"sentence-transformers:<model>"``, ``"efficientnet:lite0/<weights>"`` or
        ``"open_clip:<config>/<pretrained>:<image|text>"``.
    device
        Where the encoder runs.
    path
        Local weights/model folder to use instead of the recorded source (needed when
        the name records a local file, e.g. ``open_clip:ViT-B-32/file=ft.pt:image``).

    Returns
    -------
    Encoder
        An object following the :class:`~geodiffloc.encoders.base.Encoder` protocol
        whose ``name`` equals ``name`` (when no ``path`` override changes it).

    Raises
    ------
    ValueError
        For an unknown or malformed name, or a locally trained source without ``path``.

    Examples
    --------
    >>> encoder_from_name("efficientnet:lite0/imagenet", device="cpu").dim
    1280
    >>> encoder_from_name("sentence-transformers:all-MiniLM-L6-v2").name
    'sentence-transformers:all-MiniLM-L6-v2'
    """
    family, sep, rest = name.partition(":")
    if not sep or not rest:
        raise ValueError(
            f"encoder name {name!r} is not '<family>:<model>'; expected e.g. "
            "'sentence-transformers:all-MiniLM-L6-v2' or 'efficientnet:lite0/imagenet'."
        )
    if family == "sentence-transformers":
        from .text import SentenceTransformerEncoder

        return SentenceTransformerEncoder(path if path is not None else rest, device=device,
                                          name=name)
    if family == "efficientnet":
        from .efficientnet import EfficientNetLiteEncoder

        variant, _, weights = rest.partition("/")
        if variant != "lite0":
            raise ValueError(f"only efficientnet:lite0 is available; got {name!r}.")
        if path is not None:
            return EfficientNetLiteEncoder(path, device=device)
        if weights == "imagenet":
            return EfficientNetLiteEncoder(device=device)
        if weights == "random":
            return EfficientNetLiteEncoder(False, device=device)
        raise ValueError(f"{name!r} was made with local weights {weights!r}; pass path=.")
    if family == "open_clip":
        from . import openclip

        body, _, modality = rest.rpartition(":")
        model, _, pretrained = body.rpartition("/")
        if not model or modality not in ("image", "text"):
            raise ValueError(
                f"open_clip encoder name {name!r} is not 'open_clip:<config>/<tag>:<image|text>'."
            )
        if path is not None:
            src: Any = path
        elif pretrained == "random":
            src = None
        elif pretrained.startswith("file="):
            raise ValueError(f"{name!r} was made from a local checkpoint; pass path=<that file>.")
        else:
            src = pretrained
        cls = openclip.OpenCLIPImageEncoder if modality == "image" else openclip.OpenCLIPTextEncoder
        return cls(model, pretrained=src, device=device)
    raise ValueError(
        f"unknown encoder family {family!r} in {name!r}; known: sentence-transformers, "
        "efficientnet, open_clip."
    )
