"""GeoCLIP's I/O: the official pretrained weights and the checkpoint config.

Checkpoints themselves are written and read by the shared
:class:`~geodiffloc.models.base.Geolocator` (one safetensors file, config as JSON
metadata); this module says what GeoCLIP puts in that config and how the official
release files (``geoclip`` package on PyPI, or a folder of its ``.pth`` files) become a
model with the same embeddings as the official code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ..base import load_state_strict

__all__ = ["FORMAT", "checkpoint_config", "load_official"]

FORMAT = "geodiffloc.geoclip"


def checkpoint_config(model: Any) -> dict[str, Any]:
    """Everything needed to rebuild a GeoCLIP (weights aside), JSON-serialisable."""
    gal = model.gallery if isinstance(model.gallery, str) else None
    bb = model._backbone
    enc = model.encoder_record or (
        {"name": bb.name, "dim": int(bb.dim)} if bb is not None else {})
    return {**model.network_config(), "backbone_spec": model.backbone_spec, "gallery": gal,
            "encoder": enc}


def load_official(cls: Any, path: str | os.PathLike | None, *, backbone: Any,
                  device: str | torch.device | None,
                  cache_dir: str | os.PathLike | bool | None) -> Any:
    """Build ``cls`` (GeoCLIP) from the official release files (see ``GeoCLIP.from_official``)."""
    from .official import find_official

    files = find_official(path)

    def load(role: str) -> Any:
        try:
            return torch.load(files[role], map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # torch's message suggests weights_only=False: never for a file we did not make
            raise ValueError(
                f"{files[role]} is not a plain weights file (it asks to run code when "
                "loaded); refusing it. Reinstall geoclip or point path= at the official "
                "files.") from None
        except Exception as e:
            raise ValueError(f"could not read {files[role]}: {e}") from e

    loc, head, scale = load("location_encoder"), load("image_head"), load("logit_scale")
    if not isinstance(loc, dict) or not isinstance(head, dict):
        raise ValueError("the official weight files must hold state dicts.")
    n_caps = len({k.split(".")[0] for k in loc if k.startswith("LocEnc")})
    try:
        b, w1, w_head = loc["LocEnc0.capsule.0.b"], loc["LocEnc0.capsule.1.weight"], \
            loc["LocEnc0.head.0.weight"]
        backbone_dim = int(head["0.weight"].shape[1])
    except KeyError as e:
        raise ValueError(f"unexpected layout of the official weights: no key {e}.") from e
    default_sigmas = (2**0, 2**4, 2**8)
    sigmas = default_sigmas if n_caps == 3 else tuple(2.0 ** (4 * i) for i in range(n_caps))
    model = cls(
        backbone_dim=backbone_dim, embed_dim=int(w_head.shape[0]), sigmas=sigmas,
        n_freqs=int(b.shape[0]), hidden_dim=int(w1.shape[0]), backbone=backbone,
        gallery="mp16", cache_dir=cache_dir, queue_size=4096,
    )
    load_state_strict(model.location_encoder, loc, "location encoder")
    load_state_strict(model.image_head, head, "image head")
    scale = torch.as_tensor(scale, dtype=torch.float32)
    if scale.numel() != 1 or not torch.isfinite(scale).all():
        raise ValueError(f"the logit scale file must hold one finite number; got {scale}.")
    with torch.no_grad():
        model.logit_scale.copy_(scale.reshape(()))
    folder = Path(files["location_encoder"]).parent
    model.official_path = os.fspath(folder.parent if folder.name == "weights" else folder)
    model.eval()
    return model.to(device) if device is not None else model
