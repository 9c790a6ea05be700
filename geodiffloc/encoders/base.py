"""The encoder protocol: anything that turns inputs into condition embeddings.

Models record ``encoder.name`` and ``encoder.dim`` in their checkpoints and refuse to
run with a different encoder (:func:`check_encoder_matches`), because a model trained
on one embedding space silently produces nonsense on another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["Encoder", "PrecomputedEmbeddings", "check_encoder_matches"]

Modality = Literal["image", "text", "embedding"]


@runtime_checkable
class Encoder(Protocol):
    """Protocol of condition encoders.

    Attributes
    ----------
    name
        Stable identifier recorded in checkpoints, e.g.
        ``"open_clip:ViT-L-14/openai:image"`` or ``"sentence-transformers:all-MiniLM-L6-v2"``.
    dim
        Embedding dimension.
    modality
        ``"image"``, ``"text"`` or ``"embedding"`` (inputs are already embeddings).
    device
        Where the encoder runs.
    """

    # read-only members: plain attributes and properties both satisfy them, and an
    # image-only encoder may narrow ``modality`` to ``"image"``
    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def modality(self) -> Modality: ...

    @property
    def device(self) -> torch.device: ...

    def encode(
        self, inputs: Sequence[Any], *, batch_size: int = 64, augment: bool = False,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embed ``inputs`` -> float32 ``(n, dim)`` tensor on CPU.

        With ``augment=True`` the encoder applies its random training-time
        augmentation (e.g. random resized crops for images, template choice for text),
        so calling it several times yields several views.
        """
        ...


class PrecomputedEmbeddings:
    """An "encoder" for inputs that already are embeddings (rows of a matrix).

    Parameters
    ----------
    dim
        Embedding dimension.
    name
        The name of the encoder that produced the embeddings (kept for checkpoint checks).

    Examples
    --------
    >>> enc = PrecomputedEmbeddings(3, name="my-encoder")
    >>> enc.encode([[1, 2, 3]]).shape
    torch.Size([1, 3])
    """

    modality: Modality = "embedding"

    def __init__(self, dim: int, name: str = "precomputed") -> None:
        self.dim = int(dim)
        self.name = name
        self.device = torch.device("cpu")

    def encode(
        self, inputs: Any, *, batch_size: int = 64, augment: bool = False, progress: bool = False
    ) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            x = inputs.detach().to("cpu", torch.float32)
        else:
            x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"embeddings must have shape (n, {self.dim}); got {tuple(x.shape)}."
            )
        bad = torch.nonzero(~torch.isfinite(x).all(dim=1)).flatten()
        if bad.numel():
            raise ValueError(
                f"embedding row {int(bad[0])} contains NaN or inf ({bad.numel()} bad row(s))."
            )
        return x


def check_encoder_matches(recorded: dict[str, Any], encoder: Encoder) -> None:
    """Refuse an encoder whose name or dimension differs from the one a model was trained with.

    Parameters
    ----------
    recorded
        ``{"name": ..., "dim": ...}`` as stored in a checkpoint.

    Raises
    ------
    ValueError
        Naming both encoders and how to fix it.
    """
    name, dim = recorded.get("name"), recorded.get("dim")
    if dim is not None and int(dim) != int(encoder.dim):
        raise ValueError(
            f"this model was trained on {dim}-d conditions from {name!r}, but the encoder "
            f"{encoder.name!r} gives {encoder.dim}-d; use the encoder the model was trained with."
        )
    if name not in (None, "precomputed") and encoder.name not in ("precomputed", name):
        raise ValueError(
            f"this model was trained with encoder {name!r} but got {encoder.name!r}; "
            "conditions from another encoder live in another embedding space. Pass the "
            "matching encoder (or precomputed embeddings made by it)."
        )
