"""GeoCLIP's network: image head, location encoder, logit scale, GPS queue, contrastive loss.

The part of GeoCLIP that does arithmetic and holds weights, with the official state
dict layout (``location_encoder.*``, ``image_head.0/2.*``, ``logit_scale``). Prediction
(galleries, GeoDataFrames, maps) is in :mod:`.predictor`; checkpoints and the official
weights in :mod:`.io`; :class:`~geodiffloc.models.geoclip.GeoCLIP` puts them together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .location import LocationEncoder
from .training import GPSQueue, contrastive_loss, perturb_latlon

__all__ = ["GeoCLIPNetwork"]


class GeoCLIPNetwork(nn.Module):
    """Image head + location encoder + learnable logit scale + GPS queue (paper Sec. 3).

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
    seed
        Seed for the initial weights, the random Fourier matrices and the initial queue.

    Examples
    --------
    >>> net = GeoCLIPNetwork(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8,
    ...                      queue_size=16, seed=0)
    >>> net(torch.randn(3, 8), torch.tensor([[10.0, 20.0]])).shape
    torch.Size([3, 1])
    """

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
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if int(backbone_dim) < 1:
            raise ValueError(f"backbone_dim must be a positive integer; got {backbone_dim}.")
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be > 0; got {temperature}.")
        self.backbone_dim = int(backbone_dim)
        # A seed makes the initial weights reproducible without touching the global RNG.
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            self.location_encoder = LocationEncoder(
                sigmas, n_freqs=n_freqs, hidden_dim=hidden_dim, embed_dim=embed_dim, seed=seed)
            self.embed_dim = self.location_encoder.embed_dim
            # Official key layout: "0.weight", "0.bias", "2.weight", "2.bias".
            self.image_head = nn.Sequential(
                nn.Linear(self.backbone_dim, self.backbone_dim), nn.ReLU(),
                nn.Linear(self.backbone_dim, self.embed_dim),
            )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.queue = GPSQueue(queue_size, seed=seed)
        self.batch_noise_m = float(batch_noise_m)
        self.queue_noise_m = float(queue_noise_m)

    def network_config(self) -> dict[str, Any]:
        """The constructor arguments of this network (seed aside)."""
        return {"backbone_dim": self.backbone_dim, **self.location_encoder.config,
                "queue_size": self.queue.size, "batch_noise_m": self.batch_noise_m,
                "queue_noise_m": self.queue_noise_m}

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # -- embeddings -------------------------------------------------------------------
    def project(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(..., backbone_dim)`` -> head output ``(..., embed_dim)``."""
        return self.image_head(features)

    def forward(self, features: torch.Tensor, latlon: torch.Tensor) -> torch.Tensor:
        """Logits ``(n, m)`` of ``n`` backbone features against ``m`` locations (as official)."""
        self._check_device(features, "features")
        img = F.normalize(self.project(features), dim=1)
        loc = F.normalize(self.location_encoder(latlon), dim=1)
        return self.logit_scale.exp() * img @ loc.T

    def _check_device(self, t: torch.Tensor, name: str) -> None:
        if t.device != self.device:
            raise ValueError(
                f"{name} is on {t.device} but the model is on {self.device}; move it with "
                f".to({str(self.device)!r})."
            )

    # -- training ---------------------------------------------------------------------
    def training_step(
        self,
        batch_embeddings: torch.Tensor,
        batch_latlon: torch.Tensor,
        *,
        update_queue: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """One GeoCLIP contrastive step (eq. 4); returns the loss (call ``backward`` on it).

        Parameters
        ----------
        batch_embeddings
            Backbone features ``(B, backbone_dim)``, or ``(B, P, backbone_dim)`` for
            ``P`` augmented views per sample (each view is paired with its own noisy GPS).
        batch_latlon
            ``(B, 2)`` ``(lat, lon)`` degrees.
        update_queue
            Push the batch's coordinates into the GPS queue afterwards (off for validation).
        generator
            For reproducible GPS noise.

        Raises
        ------
        ValueError
            Shape mismatch, NaN features, or tensors on another device than the model.

        Examples
        --------
        >>> m = GeoCLIPNetwork(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8,
        ...                    queue_size=16, seed=0)
        >>> opt, sched = m.configure_optimizer()
        >>> loss = m.training_step(torch.randn(4, 8), torch.tensor([[10.0, 20.0]] * 4))
        >>> loss.backward(); opt.step()
        >>> bool(torch.isfinite(loss))
        True
        """
        x, ll = batch_embeddings, batch_latlon
        self._check_device(x, "batch_embeddings")
        self._check_device(ll, "batch_latlon")
        if x.ndim == 2:
            x = x[:, None]
        if x.ndim != 3 or x.shape[-1] != self.backbone_dim or ll.shape != (x.shape[0], 2):
            raise ValueError(
                f"need batch_embeddings (B, {self.backbone_dim}) or (B, P, {self.backbone_dim}) "
                f"and batch_latlon (B, 2); got {tuple(batch_embeddings.shape)} and "
                f"{tuple(batch_latlon.shape)}."
            )
        if not torch.isfinite(x).all():
            raise ValueError("batch_embeddings contain NaN or inf.")
        n, p = x.shape[0], x.shape[1]
        views_ll = ll.repeat_interleave(p, dim=0)
        gps = perturb_latlon(views_ll, self.batch_noise_m, generator=generator)
        queue = self.queue.noisy(self.queue_noise_m, generator=generator).to(gps.dtype)
        img = self.project(x.reshape(n * p, -1))
        loc = self.location_encoder(torch.cat([gps, queue]).to(torch.float32))
        loss = contrastive_loss(img, loc, self.logit_scale)
        if update_queue:
            self.queue.push(ll)
        return loss

    def configure_optimizer(
        self, *, lr: float = 3e-5, weight_decay: float = 1e-6, gamma: float = 0.87,
        step_size: int = 1,
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
        """Adam over the trainable parameters + StepLR (×``gamma`` every ``step_size`` epochs).

        The paper's defaults; the backbone is frozen and not included. In a
        LightningModule: ``opt, sch = model.configure_optimizer(); return {"optimizer":
        opt, "lr_scheduler": {"scheduler": sch, "interval": "epoch"}}``.

        Returns
        -------
        tuple
            ``(torch.optim.Adam, torch.optim.lr_scheduler.StepLR)``; call
            ``scheduler.step()`` once per epoch.

        Examples
        --------
        >>> m = GeoCLIPNetwork(backbone_dim=8, embed_dim=4, n_freqs=4, hidden_dim=8,
        ...                    queue_size=4)
        >>> opt, sched = m.configure_optimizer(lr=1e-4)
        >>> opt.param_groups[0]["lr"], sched.gamma
        (0.0001, 0.87)
        """
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma)

