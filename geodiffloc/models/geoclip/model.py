"""The GeoCLIP model: network + predictor + I/O, put together.

* :mod:`.network` — image head, location encoder, logit scale, GPS queue, loss;
* :mod:`.predictor` — queries, galleries, GeoDataFrames, rasters, candidate scoring;
* :mod:`.io` — checkpoint config and the official pretrained weights;
* :class:`~geodiffloc.models.base.Geolocator` — ``save`` / ``load``.

Training goes through :class:`geodiffloc.train.GeoCLIPModule`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from ...encoders.base import Encoder
from ..base import Geolocator
from . import io
from .network import GeoCLIPNetwork
from .predictor import GeoCLIPPredictor, InputKind

__all__ = ["GeoCLIP", "InputKind"]


class GeoCLIP(GeoCLIPPredictor, GeoCLIPNetwork, Geolocator):
    """GeoCLIP (Vivanco Cepeda et al., NeurIPS 2023): image-to-GPS retrieval.

    A frozen CLIP backbone embeds the image, a trainable MLP head maps it into the
    512-d space of the location encoder, and the best-matching point of a GPS gallery
    is the prediction. Works from images, from precomputed backbone features, or from
    any other embedding the head was trained on (text, satellite patches).

    Parameters
    ----------
    backbone_dim
        Width of the backbone features (768 for CLIP ViT-L/14).
    embed_dim, sigmas, n_freqs, hidden_dim
        Location-encoder configuration (see :class:`LocationEncoder`).
    temperature
        Initial temperature τ; the learnable logit scale starts at ``log(1/τ)``.
    queue_size, batch_noise_m, queue_noise_m
        Training: GPS queue length and Gaussian GPS noise (metres) on batch and queue
        coordinates (4096, 150, 1000 in the paper).
    backbone
        The image backbone: an :class:`~geodiffloc.encoders.Encoder`, a spec
        ``"ViT-L-14/openai"`` built lazily on first image input (so construction never
        downloads), or ``None`` (embeddings only).
    gallery
        The default gallery of :meth:`predict` (see :func:`resolve_gallery`).
    cache_dir
        Where gallery embeddings are cached (``None``: user cache dir; ``False``: memory only).
    seed
        Seed for the random Fourier matrices and the initial queue.

    Examples
    --------
    >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=16,
    ...             seed=0, cache_dir=False)
    >>> m.location_encoder(torch.tensor([[10.0, 20.0]])).shape
    torch.Size([1, 4])
    >>> gdf = m.predict(torch.randn(2, 8), gallery="fibonacci:50")
    >>> list(gdf.columns), gdf.crs.to_string()
    (['query', 'lat', 'lon', 'prob', 'similarity', 'gallery_index', 'geometry'], 'EPSG:4326')
    """

    checkpoint_format = io.FORMAT
    model_name = "GeoCLIP"

    def __init__(
        self,
        *,
        backbone_dim: int = 768,
        embed_dim: int = 512,
        sigmas: Sequence[float] = (2**0, 2**4, 2**8),
        n_freqs: int = 256,
        hidden_dim: int = 1024,
        temperature: float = 0.07,
        queue_size: int = 4096,
        batch_noise_m: float = 150.0,
        queue_noise_m: float = 1000.0,
        backbone: Encoder | str | None = None,
        gallery: Any = "mp16",
        cache_dir: str | os.PathLike | bool | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            backbone_dim=backbone_dim, embed_dim=embed_dim, sigmas=sigmas, n_freqs=n_freqs,
            hidden_dim=hidden_dim, temperature=temperature, queue_size=queue_size,
            batch_noise_m=batch_noise_m, queue_noise_m=queue_noise_m, seed=seed)
        self._init_predictor(backbone, gallery, cache_dir)

    @classmethod
    def from_official(
        cls,
        path: str | os.PathLike | None = None,
        *,
        backbone: Encoder | str | None = "ViT-L-14/openai",
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | bool | None = None,
    ) -> GeoCLIP:
        """The official pretrained GeoCLIP (location encoder, image head, logit scale).

        Parameters
        ----------
        path
            Folder with the release files (flat or in the package layout); ``None``
            uses the installed ``geoclip`` package.
        backbone
            Image backbone; the default ``"ViT-L-14/openai"`` is built (and downloaded
            by open_clip, once) only when images are first given. Pass a local
            checkpoint as ``OpenCLIPImageEncoder("ViT-L-14", "/path/ckpt.bin")``, or
            ``None`` to work with precomputed embeddings only.
        device
            Where the model runs.
        cache_dir
            Gallery-embedding cache folder (see :class:`GeoCLIP`).

        Raises
        ------
        ValueError
            Files not found, or weights whose shapes do not fit.

        Examples
        --------
        >>> m = GeoCLIP.from_official(backbone=None)  # doctest: +SKIP
        >>> m.location_encoder(torch.tensor([[40.7, -74.0]])).shape  # doctest: +SKIP
        torch.Size([1, 512])
        """
        return io.load_official(cls, path, backbone=backbone, device=device,
                                cache_dir=cache_dir)

    # -- training ---------------------------------------------------------------------
    def fit(
        self, embeddings: Any, latlon: Any, *, steps: int = 1000, batch_size: int = 512,
        lr: float = 3e-5, weight_decay: float = 1e-6, gamma: float = 0.87, step_size: int = 1,
        seed: int = 0, progress: bool = True, clip_grad_norm: float | None = None,
    ) -> list[float]:
        """Train in place on in-memory features: a convenience over :mod:`geodiffloc.train`.

        Runs the same :class:`~geodiffloc.train.GeoCLIPModule` as ``geodiffloc train``
        (the paper's Adam + StepLR per epoch, contrastive loss against the batch and the
        GPS queue) with nothing written to disk; needs the ``[train]`` extra.

        Parameters
        ----------
        embeddings, latlon
            ``(n, backbone_dim)`` (or ``(n, views, backbone_dim)``) features and ``(n, 2)``
            ``(lat, lon)`` degrees.
        steps, batch_size
            Optimiser steps and batch size (shuffled epochs).
        lr, weight_decay, gamma, step_size
            Adam and StepLR (``gamma`` every ``step_size`` epochs), as in the paper.
        seed, progress, clip_grad_norm
            Seeding, a progress bar on stderr, optional gradient clipping.

        Returns
        -------
        list[float]
            The loss of every step.

        Examples
        --------
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=16,
        ...             seed=0, cache_dir=False)
        >>> losses = m.fit(torch.randn(20, 8), torch.rand(20, 2) * 50, steps=4, batch_size=8,
        ...                progress=False)
        >>> len(losses)
        4
        """
        from ..._hooks import trainer

        fit_in_memory = trainer()  # geodiffloc.train.fitting.fit, handed over by the root

        optim = {"lr": float(lr), "weight_decay": float(weight_decay), "gamma": float(gamma),
                 "step_size": int(step_size)}
        return fit_in_memory(self, embeddings, latlon, steps=steps, batch_size=batch_size,
                             optim=optim, clip_grad_norm=clip_grad_norm, seed=seed,
                             progress=progress)

    # -- checkpoints ------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (weights aside)."""
        return io.checkpoint_config(self)

    def checkpoint_config(self) -> dict[str, Any]:
        return self.config

    @classmethod
    def from_checkpoint_config(cls, cfg: dict[str, Any], *,
                               backbone: Encoder | str | None = None,
                               cache_dir: str | os.PathLike | bool | None = None) -> GeoCLIP:
        try:
            model = cls(
                backbone_dim=cfg["backbone_dim"], embed_dim=cfg["embed_dim"],
                sigmas=cfg["sigmas"], n_freqs=cfg["n_freqs"], hidden_dim=cfg["hidden_dim"],
                queue_size=cfg["queue_size"], batch_noise_m=cfg["batch_noise_m"],
                queue_noise_m=cfg["queue_noise_m"], gallery=cfg.get("gallery") or "mp16",
                cache_dir=cache_dir)
        except KeyError as e:
            raise ValueError(f"the GeoCLIP checkpoint config lacks {e}; it is damaged or was "
                             "written by another program.") from e
        model.encoder_record = dict(cfg.get("encoder") or {})
        model.set_backbone(backbone if backbone is not None else cfg.get("backbone_spec"))
        return model

    @classmethod
    def load(  # type: ignore[override]
        cls, path: str | os.PathLike, *, backbone: Encoder | str | None = None,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | bool | None = None,
    ) -> GeoCLIP:
        """Load a checkpoint written by :meth:`save` (safetensors, no code execution).

        Parameters
        ----------
        backbone
            Image backbone to attach; it must match the encoder recorded at training.
            ``None`` reuses the recorded lazy spec, if any.

        Raises
        ------
        ValueError
            No such file, not a GeoCLIP checkpoint, or weights that do not fit the
            recorded config.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> m = GeoCLIP(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4,
        ...             seed=0, cache_dir=False)
        >>> path = m.save(pathlib.Path(tempfile.mkdtemp()) / "geoclip.safetensors")
        >>> GeoCLIP.load(path, cache_dir=False).embed_dim
        4
        """
        return super().load(path, device=device, backbone=backbone, cache_dir=cache_dir)
