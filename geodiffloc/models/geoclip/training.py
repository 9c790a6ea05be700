"""Training pieces of GeoCLIP: GPS noise, the dynamic GPS queue and the contrastive loss (eq. 4).

The loop itself lives with the shared training utilities; a Lightning module calls
:meth:`GeoCLIP.training_step` and :meth:`GeoCLIP.configure_optimizer`, which use the
functions here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...sphere import EARTH_RADIUS_KM, uniform_random

__all__ = ["GPSQueue", "contrastive_loss", "perturb_latlon"]


def perturb_latlon(
    latlon: torch.Tensor, sigma_m: float, *, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Move each point by a 2-D Gaussian displacement of ``sigma_m`` metres per axis.

    The displacement is drawn in the local east/north plane and applied as a
    great-circle move (distance = its length, bearing = its direction), so it is the
    same number of metres everywhere, including near the poles and across the
    antimeridian. The paper's ``η ~ N(0, σ²)`` GPS noise (150 m on batch coordinates,
    1000 m on queue coordinates).

    Parameters
    ----------
    latlon
        ``(n, 2)`` ``(lat, lon)`` degrees.
    sigma_m
        Standard deviation per axis in metres (0 returns a copy).
    generator
        For reproducible noise (CPU generator).

    Returns
    -------
    torch.Tensor
        ``(n, 2)`` in the dtype and device of ``latlon``, lon in ``[-180, 180)``.

    Raises
    ------
    ValueError
        Negative or non-finite ``sigma_m``.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> p = perturb_latlon(torch.tensor([[45.0, 10.0]]), 150.0, generator=g)
    >>> bool((p - torch.tensor([[45.0, 10.0]])).abs().max() < 0.05)
    True
    """
    if not (math.isfinite(sigma_m) and sigma_m >= 0):
        raise ValueError(f"sigma_m must be a finite number of metres >= 0; got {sigma_m}.")
    if sigma_m == 0 or latlon.shape[0] == 0:
        return latlon.clone()
    noise = torch.randn(latlon.shape[0], 2, generator=generator, dtype=torch.float64)
    noise = noise.to(latlon.device) * (sigma_m / 1000.0)  # km, (east, north)
    delta = torch.linalg.vector_norm(noise, dim=1) / EARTH_RADIUS_KM  # angular distance
    bearing = torch.atan2(noise[:, 0], noise[:, 1])  # clockwise from north
    lat1 = torch.deg2rad(latlon[:, 0].double())
    lon1 = torch.deg2rad(latlon[:, 1].double())
    sin_lat2 = (torch.sin(lat1) * torch.cos(delta)
                + torch.cos(lat1) * torch.sin(delta) * torch.cos(bearing)).clamp(-1.0, 1.0)
    lat2 = torch.asin(sin_lat2)
    lon2 = lon1 + torch.atan2(torch.sin(bearing) * torch.sin(delta) * torch.cos(lat1),
                              torch.cos(delta) - torch.sin(lat1) * sin_lat2)
    lon2 = torch.remainder(torch.rad2deg(lon2) + 180.0, 360.0) - 180.0
    return torch.stack([torch.rad2deg(lat2), lon2], dim=1).to(latlon.dtype)


class GPSQueue(nn.Module):
    """The dynamic queue of GPS negatives (paper Sec. 3.2), a FIFO of ``size`` coordinates.

    Initialised uniformly over the globe (by area) so the first batches see spread-out
    negatives; every :meth:`push` replaces the oldest entries with the batch's
    coordinates. Any batch size works: a batch larger than the queue keeps its last
    ``size`` points.

    Parameters
    ----------
    size
        Number of coordinates (4096 in the paper).
    seed
        Seed of the initial uniform draw (``None``: torch's global RNG).

    Examples
    --------
    >>> q = GPSQueue(4, seed=0)
    >>> q.push(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    >>> q.latlon[:2].tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """

    latlon: torch.Tensor
    ptr: torch.Tensor

    def __init__(self, size: int = 4096, *, seed: int | None = None) -> None:
        super().__init__()
        if int(size) < 0:
            raise ValueError(f"queue size must be >= 0; got {size}.")
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        self.register_buffer("latlon", uniform_random(int(size), generator=gen))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return int(self.latlon.shape[0])

    @torch.no_grad()
    def push(self, latlon: torch.Tensor) -> None:
        """Replace the oldest entries with ``latlon`` ``(b, 2)`` (any ``b``)."""
        s = self.size
        if s == 0 or latlon.shape[0] == 0:
            return
        new = latlon.detach().to(self.latlon.device, self.latlon.dtype)[-s:]
        b, p = new.shape[0], int(self.ptr)
        idx = (torch.arange(b, device=self.latlon.device) + p) % s
        self.latlon[idx] = new
        self.ptr.fill_((p + b) % s)

    def noisy(self, sigma_m: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The queue's coordinates, each moved by ``sigma_m`` metres of Gaussian noise."""
        return perturb_latlon(self.latlon, sigma_m, generator=generator)


def contrastive_loss(
    image_emb: torch.Tensor,
    location_emb: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """GeoCLIP's contrastive loss (eq. 4): row ``i`` of ``image_emb`` matches location row ``i``.

    ``location_emb`` holds the ``B`` batch locations first, then the queue's ``S``
    negatives; logits are ``exp(logit_scale)`` times cosine similarities, and the loss
    is the cross-entropy of each image against all ``B + S`` locations, averaged over
    the rows (each augmented view is a row).

    Parameters
    ----------
    image_emb
        ``(B, d)`` projected image embeddings.
    location_emb
        ``(B + S, d)`` location embeddings.
    logit_scale
        Scalar ``log(1 / τ)``; the scale is clamped at 100 as in CLIP.

    Returns
    -------
    torch.Tensor
        Scalar loss.

    Raises
    ------
    ValueError
        Fewer location rows than images, or mismatched widths.

    Examples
    --------
    >>> x = torch.eye(3)
    >>> float(contrastive_loss(x, x, torch.tensor(4.6))) < 0.05
    True
    """
    b = image_emb.shape[0]
    if location_emb.ndim != 2 or image_emb.ndim != 2 or location_emb.shape[1] != image_emb.shape[1]:
        raise ValueError(
            f"need image (B, d) and location (B + S, d) embeddings; got {tuple(image_emb.shape)} "
            f"and {tuple(location_emb.shape)}."
        )
    if location_emb.shape[0] < b:
        raise ValueError(
            f"location_emb has {location_emb.shape[0]} rows but there are {b} images; the "
            "first B rows must be the images' own locations."
        )
    scale = logit_scale.exp().clamp(max=100.0)
    logits = scale * F.normalize(image_emb, dim=1) @ F.normalize(location_emb, dim=1).T
    return F.cross_entropy(logits, torch.arange(b, device=logits.device))
