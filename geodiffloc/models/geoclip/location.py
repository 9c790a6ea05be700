"""GeoCLIP's location encoder: Equal Earth projection, random Fourier features, MLP capsules.

The module tree mirrors the official release so its ``location_encoder_weights.pth``
loads unchanged: children ``LocEnc{i}``, each with ``capsule`` (index 0 holds the
random-Fourier matrix ``b``; 1, 3, 5 are the Linear layers) and ``head`` (index 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ...sphere import check_latlon_tensor

__all__ = [
    "EQUAL_EARTH_A",
    "EQUAL_EARTH_SCALE",
    "LocationEncoder",
    "RandomFourierFeatures",
    "equal_earth_projection",
]

#: Polynomial coefficients A1..A4 of the Equal Earth projection (Šavrič et al. 2019).
EQUAL_EARTH_A: tuple[float, float, float, float] = (1.340264, -0.081106, 0.000893, 0.003796)
#: GeoCLIP's scale: projected unit-sphere coordinates are multiplied by 66.50336 / 180,
#: which maps the map's width to roughly [-1, 1].
EQUAL_EARTH_SCALE: float = 66.50336


def equal_earth_projection(latlon: torch.Tensor) -> torch.Tensor:
    """Equal Earth projection of ``(lat, lon)`` degrees, scaled as GeoCLIP does.

    ``(x, y)`` of the unit-sphere Equal Earth map (the same numbers as
    ``pyproj.Proj("+proj=eqearth +R=1")``), times ``66.50336 / 180``.

    Parameters
    ----------
    latlon
        ``(n, 2)`` tensor of ``(lat, lon)`` degrees (float32 or float64).

    Returns
    -------
    torch.Tensor
        ``(n, 2)`` projected ``(x, y)`` in the input dtype.

    Examples
    --------
    >>> equal_earth_projection(torch.tensor([[0.0, 0.0]])).tolist()
    [[0.0, 0.0]]
    """
    a1, a2, a3, a4 = EQUAL_EARTH_A
    lat = torch.deg2rad(latlon[:, 0])
    lon = torch.deg2rad(latlon[:, 1])
    # The evaluation order below (sqrt(3) as a tensor of the input dtype, unfactored
    # powers, the constant products formed first) reproduces the official float32
    # numbers bit for bit. The random Fourier features multiply these coordinates by
    # up to ~2*pi*1000, so a last-bit difference here becomes a visible phase change.
    sqrt3 = torch.sqrt(torch.tensor(3.0, dtype=latlon.dtype, device=latlon.device))
    theta = torch.asin((sqrt3 / 2) * torch.sin(lat))
    denom = 3 * (9 * a4 * theta**8 + 7 * a3 * theta**6 + 3 * a2 * theta**2 + a1)
    x = (2 * sqrt3 * lon * torch.cos(theta)) / denom
    y = a4 * theta**9 + a3 * theta**7 + a2 * theta**3 + a1 * theta
    return (torch.stack((x, y), dim=1) * EQUAL_EARTH_SCALE) / 180


class RandomFourierFeatures(nn.Module):
    """``[cos(2π B v), sin(2π B v)]`` with a fixed Gaussian matrix ``B ~ N(0, σ²)``.

    Parameters
    ----------
    sigma
        Standard deviation of the frequencies (in cycles per projected unit).
    n_freqs
        Rows of ``B``; the output has ``2 * n_freqs`` features.
    in_dim
        Input dimension (2 for projected coordinates).
    generator
        For a reproducible ``B``.

    Examples
    --------
    >>> RandomFourierFeatures(1.0, 4)(torch.zeros(3, 2)).shape
    torch.Size([3, 8])
    """

    b: torch.Tensor

    def __init__(
        self, sigma: float, n_freqs: int = 256, in_dim: int = 2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.sigma = float(sigma)
        # A buffer, not a parameter: B is drawn once and never trained (paper, Sec. 3.1.1).
        self.register_buffer("b", torch.randn(n_freqs, in_dim, generator=generator) * self.sigma)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * v @ self.b.T
        return torch.cat((torch.cos(phase), torch.sin(phase)), dim=-1)


class _Capsule(nn.Module):
    """One scale of the hierarchy: RFF -> 3 x (Linear, ReLU) -> Linear head."""

    def __init__(
        self, sigma: float, n_freqs: int, hidden_dim: int, embed_dim: int,
        generator: torch.Generator | None,
    ) -> None:
        super().__init__()
        self.capsule = nn.Sequential(
            RandomFourierFeatures(sigma, n_freqs, generator=generator),
            nn.Linear(2 * n_freqs, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(hidden_dim, embed_dim))

    def forward(self, projected: torch.Tensor) -> torch.Tensor:
        return self.head(self.capsule(projected))


class LocationEncoder(nn.Module):
    """GPS -> embedding: sum over scales of ``MLP_i(RFF_σi(EqualEarth(lat, lon)))`` (eq. 3).

    Parameters
    ----------
    sigmas
        RFF scales, one capsule each; default ``(2**0, 2**4, 2**8)`` as in the paper. A
        finer ``2**12`` branch can be added. Only used to draw ``B`` at initialisation:
        loaded weights bring their own ``B``.
    n_freqs, hidden_dim, embed_dim
        256, 1024 and 512 in the official model (smaller values train fast on a CPU).
    seed
        Seed of the random Fourier matrices (``None``: torch's global RNG).

    Examples
    --------
    >>> enc = LocationEncoder(n_freqs=8, hidden_dim=16, embed_dim=4, seed=0)
    >>> enc(torch.tensor([[48.85, 2.35], [-33.9, 151.2]])).shape
    torch.Size([2, 4])
    """

    def __init__(
        self,
        sigmas: Sequence[float] = (2**0, 2**4, 2**8),
        *,
        n_freqs: int = 256,
        hidden_dim: int = 1024,
        embed_dim: int = 512,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        sigmas = tuple(float(s) for s in sigmas)
        if not sigmas or any(not (math.isfinite(s) and s > 0) for s in sigmas):
            raise ValueError(f"sigmas must be a non-empty list of positive numbers; got {sigmas}.")
        for name, v in (("n_freqs", n_freqs), ("hidden_dim", hidden_dim), ("embed_dim", embed_dim)):
            if int(v) < 1:
                raise ValueError(f"{name} must be a positive integer; got {v}.")
        self.sigmas = sigmas
        self.n_freqs, self.hidden_dim = int(n_freqs), int(hidden_dim)
        self.embed_dim = int(embed_dim)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        for i, s in enumerate(sigmas):
            self.add_module(
                f"LocEnc{i}", _Capsule(s, self.n_freqs, self.hidden_dim, self.embed_dim, gen)
            )

    @property
    def capsules(self) -> list[_Capsule]:
        return [getattr(self, f"LocEnc{i}") for i in range(len(self.sigmas))]

    @property
    def config(self) -> dict[str, object]:
        """Constructor arguments (without the seed) for checkpoints."""
        return {"sigmas": list(self.sigmas), "n_freqs": self.n_freqs,
                "hidden_dim": self.hidden_dim, "embed_dim": self.embed_dim}

    def _check_input(self, latlon: torch.Tensor) -> torch.Tensor:
        dev = self.capsules[0].capsule[1].weight.device
        if isinstance(latlon, torch.Tensor) and latlon.device != dev:
            raise ValueError(
                f"latlon is on {latlon.device} but the location encoder is on {dev}; move one "
                f"of them (latlon.to({str(dev)!r}) or model.to(...))."
            )
        return check_latlon_tensor(latlon)

    def forward(self, latlon: torch.Tensor) -> torch.Tensor:
        """``(n, 2)`` ``(lat, lon)`` degrees -> ``(n, embed_dim)`` (not normalised).

        Raises
        ------
        ValueError
            Wrong shape, NaN, ``|lat| > 90``, or ``latlon`` on another device.
        """
        latlon = self._check_input(latlon)
        first = self.capsules[0].capsule[1]
        assert isinstance(first, nn.Linear)  # the capsule's first layer (see Capsule)
        dtype = first.weight.dtype
        projected = equal_earth_projection(latlon.to(dtype))
        out = None
        for cap in self.capsules:
            # summed in capsule order, as the official encoder accumulates
            y = cap(projected)
            out = y if out is None else out + y
        assert out is not None
        return out

    @torch.no_grad()
    def embed(
        self, latlon: torch.Tensor, *, batch_size: int = 8192, normalize: bool = False,
        progress: bool = False,
    ) -> torch.Tensor:
        """Embed many points in chunks without autograd (galleries, grids).

        Returns
        -------
        torch.Tensor
            ``(n, embed_dim)`` on the encoder's device; L2-normalised if ``normalize``.
        """
        from tqdm.auto import tqdm

        latlon = self._check_input(latlon)
        outs = []
        for s in tqdm(range(0, latlon.shape[0], batch_size), disable=not progress,
                      desc="location embeddings", unit="chunk"):
            y = self(latlon[s:s + batch_size])
            outs.append(torch.nn.functional.normalize(y, dim=1) if normalize else y)
        if not outs:
            return torch.zeros(0, self.embed_dim)
        return torch.cat(outs)
