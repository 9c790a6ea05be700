r"""The SHDD space: spherical-harmonics expansions of Dirac deltas (LocDiff, eqs. 5-14).

A location :math:`p` is encoded as the truncated expansion of the spherical Dirac delta,
:math:`C_{lm} = w_l Y_{lm}(p)` for :math:`l \le L` (eq. 6; :math:`w_l = 1` unless a
taper is chosen). Any vector :math:`e \in \mathbb{R}^{(L+1)^2}` defines the field
:math:`f_e = \sum_{lm} e_{lm} Y_{lm}` and the density :math:`q_e = \exp(f_e) / Z(e)`
on the unit sphere (eq. 8). By the addition theorem the field of an encoded point is

.. math:: f_p(u) = \sum_{l \le L} w_l \frac{2l+1}{4\pi} P_l(\cos\gamma(p, u)),

which peaks at :math:`(L+1)^2 / 4\pi` with a near-Gaussian density of standard deviation
:math:`\sigma_L` given by :math:`1/(2\sigma_L^2) = \sum_l w_l (2l+1) l (l+1) / 16\pi`
(about 20 km at L = 47 and 3 km at L = 127): :attr:`SHDD.width_km`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from ..harmonics import degree_order, n_coeffs, real_sph_harm
from ..sphere import EARTH_RADIUS_KM, LatLonGrid, as_latlon, check_latlon_tensor, uniform_random
from ._memory import check_field_memory
from ._validate import as_coeffs, check_coeff_values, check_kl_anchors
from .quadrature import log_partition
from .synthesis import synthesize

__all__ = ["SHDD"]


def _taper_weights(L: int, taper: Any) -> np.ndarray:
    if taper is None:
        return np.ones(L + 1)
    if isinstance(taper, str):
        l = np.arange(L + 1)
        if taper == "hann":
            return 0.5 * (1.0 + np.cos(np.pi * l / (L + 1)))
        if taper == "gaussian":
            return np.exp(-0.5 * (l * (l + 1)) / (0.5 * (L + 1)) ** 2)
        raise ValueError(f"taper must be None, 'hann', 'gaussian' or L+1 weights; got {taper!r}.")
    w = np.asarray(taper, dtype=np.float64)
    if w.shape != (L + 1,) or not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"taper weights must be L+1 = {L + 1} finite non-negative numbers.")
    return w


def _normalise_in_place(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``f (n, n_lat, n_lon) -> exp(f) / sum`` over each map, in place, and ``log(sum)``.

    Exponents are floored at 60 below the maximum: float32 arithmetic is ~20x slower
    when a result is subnormal (below 1.2e-38), which ``exp`` and the division would
    otherwise produce for most cells of a sharp field; a cell at the floor holds
    e^-60 ~ 1e-26 of the peak cell's mass, far below float32 resolution of the total.
    The log of the sum (``(n,)`` float64) is the midpoint rule's ``log Z`` when ``f``
    holds log-density plus log cell area.
    """
    peak = f.amax(dim=(1, 2), keepdim=True)
    f.sub_(peak).clamp_min_(-60.0).exp_()
    total = f.sum(dim=(1, 2), keepdim=True)
    log_z = (peak.to(torch.float64) + total.to(torch.float64).log()).flatten()
    return f.div_(total), log_z


class SHDD:
    r"""Spherical Harmonics Dirac Delta encoding of degree ``L``.

    Parameters
    ----------
    L
        Maximum degree; vectors have ``(L+1)**2`` entries. Tested up to 255.
    taper
        Optional low-pass of high degrees (the paper's A.4 suggestion): ``"hann"``,
        ``"gaussian"`` or ``L+1`` weights :math:`w_l`. Encoding, KL and the default
        decoder width all use it consistently.
    dtype
        dtype of encodings (float32 default; every density is computed in log space so
        float32 is safe for any L).

    Examples
    --------
    >>> shdd = SHDD(23)
    >>> e = shdd.encode(lat=[48.86], lon=[2.35])
    >>> e.shape
    torch.Size([1, 576])
    >>> shdd.decode(e).round().tolist()
    [[49.0, 2.0]]
    """

    def __init__(self, L: int, *, taper: Any = None, dtype: torch.dtype = torch.float32) -> None:
        if not isinstance(L, int | np.integer) or not 0 <= int(L) <= 1023:
            raise ValueError(f"L must be an integer degree in [0, 1023]; got {L!r}.")
        self.L = int(L)
        self.dim = n_coeffs(self.L)
        self.dtype = dtype
        self.taper = taper
        self.degree_weights = _taper_weights(self.L, taper)
        l_idx, _ = degree_order(self.L)
        self._coef_weights = torch.from_numpy(self.degree_weights[l_idx])

    def __repr__(self) -> str:
        taper = "" if self.taper is None else f", taper={self.taper!r}"
        return f"SHDD(L={self.L}{taper})"

    # -- scales -----------------------------------------------------------------------
    @property
    def width_rad(self) -> float:
        """Standard deviation (radians) of the near-Gaussian density of an encoded point."""
        l = np.arange(self.L + 1)
        curv = np.sum(self.degree_weights * (2 * l + 1) * l * (l + 1)) / (16 * math.pi)
        return float(1.0 / math.sqrt(2.0 * curv)) if curv > 0 else math.pi

    @property
    def width_km(self) -> float:
        """:attr:`width_rad` in km on the mean Earth sphere (about 20000 / L**2 * 47 km)."""
        return self.width_rad * EARTH_RADIUS_KM

    @property
    def peak(self) -> float:
        """Peak value of an encoded point's field, ``sum_l w_l (2l+1) / 4 pi``."""
        l = np.arange(self.L + 1)
        return float(np.sum(self.degree_weights * (2 * l + 1)) / (4 * math.pi))

    # -- encoding ---------------------------------------------------------------------
    def _latlon(self, lat: Any, lon: Any, latlon: torch.Tensor | None) -> torch.Tensor:
        if latlon is not None:
            if lat is not None or lon is not None:
                raise ValueError("pass either lat=/lon= or latlon=, not both.")
            return check_latlon_tensor(latlon)
        lat_a, lon_a = as_latlon(lat=lat, lon=lon)
        return torch.from_numpy(np.stack([lat_a, lon_a], axis=1))

    def encode(self, lat: Any = None, lon: Any = None, *,
               latlon: torch.Tensor | None = None) -> torch.Tensor:
        """SHDD vectors ``(n, (L+1)**2)`` of points (eq. 5-6).

        Parameters
        ----------
        lat, lon
            Degrees (validated; see :func:`~geodiffloc.sphere.as_latlon`).
        latlon
            Alternatively an ``(n, 2)`` tensor; differentiable w.r.t. it, and the result
            stays on its device.

        Examples
        --------
        >>> SHDD(2).encode(lat=[90], lon=[0]).shape
        torch.Size([1, 9])
        """
        ll = self._latlon(lat, lon, latlon)
        y = real_sph_harm(ll, self.L, dtype=self.dtype if latlon is None else None)
        if self.taper is None:
            return y  # all weights are 1: no second pass over the output
        w = self._coef_weights.to(y.device, y.dtype)
        return y.mul_(w) if not y.requires_grad else y * w

    def evaluate(self, coeffs: torch.Tensor, latlon: torch.Tensor) -> torch.Tensor:
        r"""The raw field :math:`f_e = \sum e_{lm} Y_{lm}` (unnormalised log-density).

        Parameters
        ----------
        coeffs
            ``(n, d)`` vectors.
        latlon
            ``(k, 2)`` points shared by all vectors, or ``(n, k, 2)`` per vector.

        Returns
        -------
        torch.Tensor
            ``(n, k)`` in the dtype of ``coeffs``.
        """
        coeffs = self._check_coeffs(coeffs)
        if latlon.ndim == 2:
            y = real_sph_harm(latlon, self.L, dtype=coeffs.dtype)
            return coeffs @ y.T
        if latlon.ndim != 3 or latlon.shape[0] != coeffs.shape[0] or latlon.shape[2] != 2:
            raise ValueError(
                f"latlon must be (k, 2) or (n, k, 2) with n = {coeffs.shape[0]}; "
                f"got {tuple(latlon.shape)}."
            )
        n, k, _ = latlon.shape
        y = real_sph_harm(latlon.reshape(n * k, 2), self.L, dtype=coeffs.dtype)
        return torch.einsum("nkd,nd->nk", y.reshape(n, k, -1), coeffs)

    def _check_coeffs(self, coeffs: Any) -> torch.Tensor:
        coeffs = as_coeffs(coeffs, self.dtype)
        if coeffs.ndim == 1:
            coeffs = coeffs[None]
        if coeffs.ndim != 2 or coeffs.shape[1] != self.dim:
            raise ValueError(
                f"SHDD vectors for L={self.L} must have shape (n, {self.dim}); got "
                f"{tuple(coeffs.shape)}. Is the vector from a model with another L?"
            )
        if not coeffs.is_floating_point():
            coeffs = coeffs.to(self.dtype)
        return check_coeff_values(coeffs)

    # -- densities --------------------------------------------------------------------
    def log_partition(self, coeffs: torch.Tensor) -> torch.Tensor:
        """``log Z`` per vector over the unit sphere (adaptive quadrature, float64)."""
        c = self._check_coeffs(coeffs)
        with torch.no_grad():
            return log_partition(c, self.L)

    def log_density(self, coeffs: torch.Tensor, lat: Any = None, lon: Any = None, *,
                    latlon: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised ``log q_e`` (per steradian of the unit sphere) at query points.

        Returns
        -------
        torch.Tensor
            ``(n, k)`` float64 for ``n`` vectors and ``k`` points. Subtract
            ``2 * log(6371.0088)`` for a density per km².

        Examples
        --------
        >>> s = SHDD(3)
        >>> ld = s.log_density(torch.zeros(1, 16), lat=[0.0], lon=[0.0])
        >>> round(float(ld.exp() * 4 * math.pi), 6)   # the zero vector is uniform
        1.0
        """
        c = self._check_coeffs(coeffs).to(torch.float64)
        ll = self._latlon(lat, lon, latlon).to(c.device, torch.float64)
        return self.evaluate(c, ll) - self.log_partition(c)[:, None]

    def kl(self, pred: torch.Tensor, lat: Any = None, lon: Any = None, *,
           latlon: torch.Tensor | None = None, anchors: torch.Tensor | None = None,
           n_anchors: int = 2048, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""SHDD-KL (eq. 13): reverse KL from the true point's density to the predicted one.

        .. math:: \mathcal{L} = \sum_i q_e(a_i) \log\frac{q_e(a_i)}{p(a_i)}

        with both densities normalised over the anchors :math:`a_i` (a softmax of the
        fields), so the sum is a proper discrete KL: non-negative, zero iff the two
        fields agree on the anchors up to a constant.

        Parameters
        ----------
        pred
            ``(n, d)`` predicted vectors (gradients flow to them).
        lat, lon, latlon
            True locations.
        anchors
            ``(k, 2)`` shared or ``(n, k, 2)`` per-sample anchors; default: ``n_anchors``
            fresh uniform random points per call, as the paper samples per mini-batch.
        generator
            For reproducible anchors.

        Returns
        -------
        torch.Tensor
            ``(n,)`` per-sample KL (reduce with ``.mean()``).
        """
        check_kl_anchors(anchors, n_anchors)
        pred = self._check_coeffs(pred)
        truth = self._latlon(lat, lon, latlon).to(pred.device, torch.float64)
        if truth.shape[0] != pred.shape[0]:
            raise ValueError(
                f"got {pred.shape[0]} predicted vectors but {truth.shape[0]} true locations."
            )
        if anchors is None:
            anchors = uniform_random(n_anchors, generator=generator, dtype=torch.float64,
                                     device=pred.device)
        target = self.encode(latlon=truth.detach()).to(pred.dtype)
        f_pred = self.evaluate(pred, anchors.to(pred.device))
        f_true = self.evaluate(target, anchors.to(pred.device))
        log_q = torch.log_softmax(f_pred, dim=-1)
        log_p = torch.log_softmax(f_true, dim=-1)
        return (log_q.exp() * (log_q - log_p)).sum(dim=-1)

    # -- decoding ---------------------------------------------------------------------
    def decode(self, coeffs: torch.Tensor, anchors: Any = None, *, beta_km: float | None = None,
               refine: bool = True, method: str = "grid") -> torch.Tensor:
        """Mode-seeking decoder (eq. 14) over an anchor set, then continuous refinement.

        See :func:`geodiffloc.shdd.decoding.decode` for the parameters.

        Returns
        -------
        torch.Tensor
            ``(n, 2)`` float64 ``(lat, lon)`` degrees.
        """
        from .decoding import decode

        return decode(self, self._check_coeffs(coeffs), anchors, beta_km=beta_km,
                      refine=refine, method=method)

    # -- fields -----------------------------------------------------------------------
    def field(self, coeffs: torch.Tensor, resolution: float = 1.0, *,
              kind: Literal["mass", "density", "log_density"] = "mass",
              bbox: tuple[float, float, float, float] | None = None,
              attrs: dict[str, Any] | None = None) -> Any:
        """The density of each vector on a lat/lon grid as an ``xarray.DataArray``.

        Parameters
        ----------
        coeffs
            ``(d,)`` or ``(n, d)``; a 2-D input gives a leading ``sample`` dim.
        resolution
            Cell size in degrees.
        kind
            ``"mass"`` (cell probabilities summing to 1 over the grid, area-weighted;
            float32 for float32 vectors, float64 for float64 ones),
            ``"density"`` (per km², normalised with :meth:`log_partition`) or
            ``"log_density"``.
        bbox
            ``(west, south, east, north)`` for a regional grid (masses then sum to the
            region's share of the global mass; densities are unchanged).

        Examples
        --------
        >>> s = SHDD(15)
        >>> da = s.field(s.encode(lat=[0.0], lon=[0.0])[0], resolution=2.0)
        >>> da.dims, round(float(da.sum()), 6)
        (('lat', 'lon'), 1.0)
        """
        c = self._check_coeffs(coeffs)
        squeeze = isinstance(coeffs, torch.Tensor) and coeffs.ndim == 1
        grid = LatLonGrid.global_(resolution) if bbox is None else LatLonGrid.from_bbox(
            resolution, bbox)
        log_area = torch.log(torch.as_tensor(grid.cell_area_sr(), device=c.device))[:, None]
        values = self._grid_log_mass(c, grid, log_area, kind)
        if squeeze:
            values = values[0]
        meta = {"model": "SHDD", "L": self.L, "taper": str(self.taper)}
        meta.update(attrs or {})
        return grid.to_dataarray(values.cpu().numpy(), kind=kind, attrs=meta,
                                 name=f"shdd_{kind}")

    def global_masses(self, coeffs: torch.Tensor, resolution: float = 1.0,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Cell masses of each vector on the global grid, and the grid's ``log Z``.

        The masses of :meth:`field` (``kind="mass"``) as a tensor, together with the
        midpoint-rule log-partition :math:`\log \sum_c A_c e^{f(x_c)}` the grid gave
        them, so that a caller needing both (a map and a mixture's weights) synthesises
        once. The rule's error is small when a cell is narrower than the density's width
        (:attr:`width_rad`); it is what :meth:`field` normalises by.

        Parameters
        ----------
        coeffs
            ``(n, d)`` or ``(d,)`` vectors.
        resolution
            Cell size in degrees.

        Returns
        -------
        (masses, log_z)
            ``(n, n_lat, n_lon)`` (float32 for float32 vectors) summing to 1 per vector,
            and ``(n,)`` float64.

        Examples
        --------
        >>> s = SHDD(7)
        >>> m, log_z = s.global_masses(s.encode(lat=[10.0], lon=[20.0]), resolution=2.0)
        >>> tuple(m.shape), bool(abs(float(log_z[0] - s.log_partition(
        ...     s.encode(lat=[10.0], lon=[20.0]))[0])) < 1e-4)
        ((1, 90, 180), True)
        """
        c = self._check_coeffs(coeffs)
        grid = LatLonGrid.global_(resolution)
        check_field_memory(c.shape[0], grid, c.device)
        log_area = torch.log(torch.as_tensor(grid.cell_area_sr(), device=c.device))[:, None]
        return self._global_masses(c, grid, log_area)

    def _global_masses(self, c: torch.Tensor, grid: LatLonGrid, log_area: torch.Tensor,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        # float32 vectors (the default) get float32 synthesis (see _grid_log_mass);
        # log(cell area) is constant along a row: synthesis adds it for free.
        dt = torch.float64 if c.dtype == torch.float64 else torch.float32
        f = synthesize(c, self.L, grid.lat, grid.lon, dtype=dt, row_offset=log_area[:, 0])
        return _normalise_in_place(f)

    def _grid_log_mass(self, c: torch.Tensor, grid: LatLonGrid, log_area: torch.Tensor,
                       kind: str) -> torch.Tensor:
        if kind not in ("mass", "density", "log_density"):
            raise ValueError(f"kind must be 'mass', 'density' or 'log_density'; got {kind!r}.")
        check_field_memory(c.shape[0], grid, c.device)
        # float32 vectors (the default) get float32 synthesis: its error is ~1e-7 of the
        # field's largest terms (tests/test_shdd.py compares it with the float64 path),
        # far below what a map shows, at half the memory and time. float64 stays float64.
        dt = torch.float64 if c.dtype == torch.float64 else torch.float32
        if kind == "mass" and grid == LatLonGrid.global_(grid.resolution):
            return self._global_masses(c, grid, log_area)[0]
        f = synthesize(c, self.L, grid.lat, grid.lon, dtype=dt)
        la = log_area.to(f.dtype)[None]
        log_z = self.log_partition(c).to(f.dtype)[:, None, None]
        if kind == "mass":
            return f.add_(la).sub_(log_z).exp_()
        f.sub_(log_z).sub_(2 * math.log(EARTH_RADIUS_KM))
        return f.exp_() if kind == "density" else f
