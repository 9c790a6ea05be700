"""open_clip image and text encoders (frozen CLIP towers behind the :class:`Encoder` protocol).

Both towers come from one ``open_clip`` model, built once per ``(model, pretrained,
device)`` and shared, so a GeoCLIP model that needs the image tower for photos and the
text tower for phrase maps loads the weights only once.

Nothing is downloaded unless the user names a hub tag (``pretrained="openai"``); a
random-initialised model (``pretrained=None``) or a local checkpoint file never touches
the network. When a hub download fails (offline machine), the error says how to use a
local checkpoint instead.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .._images import refuse_bombs

__all__ = ["OpenCLIPImageEncoder", "OpenCLIPTextEncoder", "load_image"]

# Built models are shared while some encoder still holds them, then freed.
_MODELS: weakref.WeakValueDictionary[tuple, Any] = weakref.WeakValueDictionary()
_MODELS_LOCK = threading.Lock()

#: Prompt templates drawn at random by ``OpenCLIPTextEncoder.encode(augment=True)``.
TEXT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}.",
    "a photo taken in {}.",
    "a picture of {}.",
    "a street view image of {}.",
    "a landscape in {}.",
)


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError:
        raise ImportError(
            "the open_clip encoders need open_clip_torch: pip install 'geodiffloc[clip]'."
        ) from None
    return open_clip


def _pretrained_label(pretrained: str | os.PathLike | None) -> str:
    if pretrained is None:
        return "random"
    if os.path.isfile(pretrained):
        return f"file={Path(pretrained).name}"
    return str(pretrained)


def _build_clip(
    model: str, pretrained: str | os.PathLike | None, device: torch.device,
    model_kwargs: dict[str, Any] | None,
) -> Any:
    """Create (or reuse) a frozen, eval-mode open_clip model."""
    open_clip = _import_open_clip()
    key = (model, None if pretrained is None else os.fspath(pretrained), str(device),
           repr(sorted((model_kwargs or {}).items())))
    with _MODELS_LOCK:
        cached = _MODELS.get(key)
    if cached is not None:
        return cached
    name = model.replace("/", "-")
    if not model.startswith(("hf-hub:", "local-dir:")) and name not in open_clip.list_models():
        raise ValueError(
            f"open_clip has no model config {model!r}. Known configs include "
            f"{open_clip.list_models()[:8]}...; register your own JSON config with "
            "open_clip.add_model_config(path)."
        )
    pre = None if pretrained is None else os.fspath(pretrained)
    if pre is not None and not os.path.isfile(pre):
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pre not in tags:
            raise ValueError(
                f"pretrained={pre!r} is neither a file nor a known open_clip tag for {model!r} "
                f"(tags: {tags}). Pass pretrained='/path/to/checkpoint.bin' for a local "
                "checkpoint, or pretrained=None for random weights."
            )
    try:
        clip = open_clip.create_model(
            model, pretrained=pre, device=device, pretrained_text=False,
            **(model_kwargs or {}),
        )
    except (RuntimeError, OSError) as e:
        if pre is not None and not os.path.isfile(pre):
            raise RuntimeError(
                f"could not fetch the open_clip weights {model}/{pre} ({e}). This machine may "
                "be offline. Download the checkpoint on a connected machine (e.g. with "
                "open_clip.create_model once, or from the hub) and pass its local path: "
                f"pretrained='/path/to/open_clip_pytorch_model.bin' (model={model!r})."
            ) from e
        raise
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    with _MODELS_LOCK:
        _MODELS[key] = clip
    return clip


def _resolve_device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def load_image(item: Any) -> torch.Tensor:
    """One image as a float ``(3, H, W)`` tensor in ``[0, 1]``.

    Parameters
    ----------
    item
        A path, a PIL image, a uint8 tensor/array (``(3, H, W)``, ``(H, W, 3)`` or
        ``(H, W)``) with values 0..255, or a float tensor in ``[0, 1]`` (``(3, H, W)``).

    Raises
    ------
    ValueError
        Unreadable file, unknown type, bad shape or out-of-range float values.

    Examples
    --------
    >>> load_image(torch.zeros(3, 8, 8, dtype=torch.uint8)).shape
    torch.Size([3, 8, 8])
    """
    from PIL import Image

    if isinstance(item, str | os.PathLike):
        if not os.path.isfile(item):
            raise ValueError(f"image file {os.fspath(item)!r} does not exist.")
        try:
            with refuse_bombs(item), Image.open(item) as im:
                item = im.convert("RGB")
        except OSError as e:
            raise ValueError(f"could not read image {os.fspath(item)!r}: {e}") from e
    if isinstance(item, Image.Image):
        arr = np.asarray(item.convert("RGB"), dtype=np.uint8).copy()
        return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0
    if isinstance(item, np.ndarray):
        item = torch.from_numpy(np.ascontiguousarray(item))
    if not isinstance(item, torch.Tensor):
        raise ValueError(
            f"cannot read an image from {type(item).__name__}; give a path, a PIL image or "
            "a (3, H, W) tensor."
        )
    x = item.detach().cpu()
    if x.ndim == 2:
        x = x[None]
    if x.ndim == 3 and x.shape[0] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(2, 0, 1)  # HWC -> CHW
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"image tensors must be (3, H, W) or (H, W, 3); got {tuple(item.shape)}.")
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:
        x = x.float()
        if not torch.isfinite(x).all() or x.min() < -1e-6 or x.max() > 1.0 + 1e-6:
            raise ValueError(
                "float image tensors must hold values in [0, 1] (uint8 tensors 0..255); "
                f"got range [{float(x.min()):.3g}, {float(x.max()):.3g}]."
            )
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def _as_list(inputs: Any) -> list[Any]:
    """Split batched image tensors into items; keep lists/tuples as they are."""
    if isinstance(inputs, torch.Tensor | np.ndarray) and inputs.ndim == 4:
        return list(inputs)
    if isinstance(inputs, str | os.PathLike | torch.Tensor | np.ndarray) or hasattr(inputs, "mode"):
        return [inputs]
    return list(inputs)


class _OpenCLIPBase:
    modality: Literal["image", "text"]

    def __init__(
        self,
        model: str = "ViT-L-14",
        pretrained: str | os.PathLike | None = "openai",
        *,
        device: str | torch.device | None = None,
        model_kwargs: dict[str, Any] | None = None,
        clip_model: Any = None,
    ) -> None:
        self.model_name = str(model)
        self.pretrained = pretrained
        self.device = _resolve_device(device)
        self.model_kwargs = dict(model_kwargs or {})
        self.clip = clip_model if clip_model is not None else _build_clip(
            self.model_name, pretrained, self.device, self.model_kwargs
        )
        self.name = f"open_clip:{self.model_name}/{_pretrained_label(pretrained)}:{self.modality}"

    @property
    def dim(self) -> int:
        """Embedding dimension of the CLIP joint space for this config."""
        proj = getattr(self.clip, "text_projection", None)
        if isinstance(proj, torch.Tensor):
            return int(proj.shape[-1])
        return int(self.clip.visual.output_dim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"


class OpenCLIPImageEncoder(_OpenCLIPBase):
    """Frozen open_clip image tower.

    Parameters
    ----------
    model
        open_clip config name (``"ViT-L-14"`` gives the 768-d space of the official
        GeoCLIP head), ``"hf-hub:..."``/``"local-dir:..."``, or a config registered with
        ``open_clip.add_model_config``.
    pretrained
        A hub tag (``"openai"``; downloaded on first use, then cached by open_clip), a local
        checkpoint path, or ``None`` for random weights (tests).
    device
        Where the tower runs; outputs are always returned on CPU.
    model_kwargs
        Overrides forwarded to ``open_clip.create_model`` (e.g. a smaller ``vision_cfg``).
    clip_model
        An already-built open_clip model to wrap (shares weights with a text encoder).

    Raises
    ------
    ValueError
        Unknown config or tag.
    RuntimeError
        A hub tag could not be fetched (offline); the message names the local-path option.

    Examples
    --------
    >>> enc = OpenCLIPImageEncoder("ViT-L-14", pretrained=None)  # doctest: +SKIP
    >>> enc.name, enc.dim  # doctest: +SKIP
    ('open_clip:ViT-L-14/random:image', 768)
    """

    modality: Literal["image"] = "image"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        import open_clip

        cfg = open_clip.get_model_preprocess_cfg(self.clip)
        size = cfg.get("size", 224)
        self.image_size: tuple[int, int] = (
            (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
        )
        self.mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self.interpolation = cfg.get("interpolation", "bicubic")

    # -- transforms -------------------------------------------------------------------
    def _interp(self) -> Any:
        from torchvision.transforms import InterpolationMode

        return InterpolationMode.BILINEAR if self.interpolation == "bilinear" else (
            InterpolationMode.BICUBIC
        )

    def transform(self, kind: Literal["eval", "augment", "ten_crop"] = "eval") -> Any:
        """The torchvision v2 pipeline that maps a ``(3, H, W)`` [0, 1] image to model input.

        ``"eval"``: resize shorter side + centre crop (CLIP's own preprocessing);
        ``"augment"``: SimCLR-style random resized crop, flip, colour jitter, greyscale
        (as GeoCLIP trains); ``"ten_crop"``: resize to 8/7 of the crop size, then the four
        corner crops + centre and their mirror images -> ``(10, 3, h, w)``.
        """
        from torchvision.transforms import v2
        from torchvision.transforms.v2 import functional as F

        h, w = self.image_size
        interp = self._interp()

        def finish(t: torch.Tensor) -> torch.Tensor:
            # bicubic resampling overshoots [0, 1] slightly; CLIP saw clipped pixels
            return F.normalize(t.clamp(0.0, 1.0), self.mean, self.std)

        if kind == "eval":
            resize = v2.Compose([v2.Resize(min(h, w), interpolation=interp, antialias=True),
                                 v2.CenterCrop((h, w))])
            return lambda x: finish(resize(x))
        if kind == "augment":
            aug = v2.Compose([
                v2.RandomResizedCrop((h, w), interpolation=interp, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                v2.RandomGrayscale(p=0.2),
            ])
            return lambda x: finish(aug(x))
        if kind == "ten_crop":
            big = round(min(h, w) * 8 / 7)

            def ten(x: torch.Tensor) -> torch.Tensor:
                x = F.resize(x, big, interpolation=interp, antialias=True)
                return torch.stack([finish(c) for c in F.ten_crop(x, [h, w])])

            return ten
        raise ValueError(f"kind must be 'eval', 'augment' or 'ten_crop'; got {kind!r}.")

    # -- encoding ---------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.clip.encode_image(batch.to(self.device))
        return out.float().cpu()

    def encode(
        self, inputs: Sequence[Any] | Any, *, batch_size: int = 32, augment: bool = False,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embed images -> float32 ``(n, dim)`` on CPU (un-normalised CLIP projection).

        Parameters
        ----------
        inputs
            Paths, PIL images, uint8/float image tensors (see :func:`load_image`), a list
            of them, or one ``(n, 3, H, W)`` tensor.
        batch_size
            Images per forward pass.
        augment
            Apply random training-time augmentation (one random view per call).
        progress
            Show a tqdm bar.

        Raises
        ------
        ValueError
            Empty input or unreadable images.
        """
        tf = self.transform("augment" if augment else "eval")
        return self._run(inputs, tf, batch_size, progress)

    def encode_views(
        self, inputs: Sequence[Any] | Any, *, views: Literal["ten_crop"] | int = "ten_crop",
        batch_size: int = 32, progress: bool = False,
    ) -> torch.Tensor:
        """Several views per image -> ``(n, v, dim)``.

        ``views="ten_crop"`` gives the deterministic ten-crop views used for inference
        ensembling (paper, Sec. 4); an integer ``v`` gives ``v`` random augmented views
        (for precomputing training features).

        Examples
        --------
        >>> enc.encode_views(["a.jpg"]).shape  # doctest: +SKIP
        torch.Size([1, 10, 768])
        """
        items = _as_list(inputs)
        if views == "ten_crop":
            tf = self.transform("ten_crop")
            flat = self._run(items, tf, max(1, batch_size // 10), progress, multi=True)
            return flat.reshape(len(items), 10, -1)
        if isinstance(views, int) and views >= 1:
            return torch.stack([self.encode(items, batch_size=batch_size, augment=True)
                                for _ in range(views)], dim=1)
        raise ValueError(f"views must be 'ten_crop' or a positive int; got {views!r}.")

    def _run(self, inputs: Any, tf: Any, batch_size: int, progress: bool,
             multi: bool = False) -> torch.Tensor:
        from tqdm.auto import tqdm

        items = _as_list(inputs)
        if not items:
            raise ValueError("no images given; pass at least one path, PIL image or tensor.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        outs = []
        starts = range(0, len(items), int(batch_size))
        for s in tqdm(starts, disable=not progress, desc="images", unit="batch"):
            views = [tf(load_image(x)) for x in items[s:s + int(batch_size)]]
            batch = torch.cat(views) if multi else torch.stack(views)
            outs.append(self._embed(batch))
        return torch.cat(outs)

    def text_encoder(self) -> OpenCLIPTextEncoder:
        """The text tower of the same CLIP model (weights shared, nothing reloaded)."""
        return OpenCLIPTextEncoder(self.model_name, self.pretrained, device=self.device,
                                   model_kwargs=self.model_kwargs, clip_model=self.clip)


class OpenCLIPTextEncoder(_OpenCLIPBase):
    """Frozen open_clip text tower (same parameters as :class:`OpenCLIPImageEncoder`).

    ``encode(["desert", "Niagara Falls"])`` embeds the phrases as given; with
    ``augment=True`` each phrase is wrapped in a random prompt template
    (:data:`TEXT_TEMPLATES`).

    Examples
    --------
    >>> enc = OpenCLIPTextEncoder("ViT-L-14", pretrained=None)  # doctest: +SKIP
    >>> enc.encode(["desert"]).shape  # doctest: +SKIP
    torch.Size([1, 768])
    """

    modality: Literal["text"] = "text"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        open_clip = _import_open_clip()
        ctx = getattr(self.clip, "context_length", None)
        self.tokenizer = open_clip.get_tokenizer(self.model_name, context_length=ctx)

    @torch.no_grad()
    def encode(
        self, inputs: Sequence[str] | str, *, batch_size: int = 64, augment: bool = False,
        progress: bool = False, generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Embed phrases -> float32 ``(n, dim)`` on CPU (un-normalised CLIP projection).

        Raises
        ------
        ValueError
            Empty input or non-string items.
        """
        from tqdm.auto import tqdm

        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        if not texts:
            raise ValueError("no text given; pass at least one phrase.")
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise ValueError(f"text inputs must be strings; got {type(bad[0]).__name__}.")
        if augment:
            idx = torch.randint(len(TEXT_TEMPLATES), (len(texts),), generator=generator)
            texts = [TEXT_TEMPLATES[int(i)].format(t) for i, t in zip(idx, texts)]
        outs = []
        for s in tqdm(range(0, len(texts), int(batch_size)), disable=not progress, desc="text"):
            tokens = self.tokenizer(texts[s:s + int(batch_size)]).to(self.device)
            outs.append(self.clip.encode_text(tokens).float().cpu())
        return torch.cat(outs)
