"""Density and coverage of generated locations on the sphere (Naeem et al., 2020)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..sphere import EARTH_RADIUS_KM
from .core import as_point_arrays

__all__ = ["density_coverage"]


def _unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on the unit sphere: the chord between two is ``2 sin(angle / 2)``."""
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    return np.column_stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])


def density_coverage(real_latlon: Any, fake_latlon: Any, k: int = 5) -> dict[str, float]:
    r"""Density and coverage of generated locations against real ones, on the sphere.

    The fidelity / diversity metrics of Naeem et al. (2020, "Reliable Fidelity and
    Diversity Metrics for Generative Models"), with great-circle (haversine) distance
    as Dufour et al. (2024) use them for generative geolocation. Each real location
    :math:`X_i` gets the ball :math:`B_i` of radius :math:`r_i` = distance to its
    ``k``-th nearest other real location; for ``M`` generated locations :math:`Y_j`:

    .. math::
        \text{density} = \frac{1}{kM} \sum_j \sum_i 1[Y_j \in B_i], \qquad
        \text{coverage} = \frac{1}{N} \sum_i 1[\exists j: Y_j \in B_i].

    Balls are closed (``d <= r_i``; the reference implementation uses ``<``, which
    only differs on exact ties and makes balls of duplicated real locations empty).
    Density is about 1 when fakes follow the real distribution (it can exceed 1 when
    fakes crowd dense regions); coverage is the share of real neighbourhoods that
    some fake reaches.

    Parameters
    ----------
    real_latlon, fake_latlon
        ``(n, 2)`` ``(lat, lon)`` degrees (numpy/torch/list) or GeoDataFrames of points.
    k
        Neighbourhood size (``1 <= k < n_real``); Naeem et al. and Dufour et al. use 5.

    Returns
    -------
    dict
        ``density``, ``coverage``, ``k``, ``n_real``, ``n_fake`` and
        ``median_radius_km`` (median k-NN radius of the real points, to judge ``k``).

    Raises
    ------
    ValueError
        Invalid points, an empty fake set, or ``k`` not in ``[1, n_real - 1]``.

    Examples
    --------
    >>> real = [[0.0, lon] for lon in range(0, 360, 10)]
    >>> density_coverage(real, real, k=2)["coverage"]
    1.0
    >>> density_coverage(real, [[60.0, 5.0]], k=2)["coverage"]
    0.0
    """
    rlat, rlon = as_point_arrays(real_latlon, "real_latlon")
    flat, flon = as_point_arrays(fake_latlon, "fake_latlon")
    n_real, n_fake = rlat.size, flat.size
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < n_real:
        raise ValueError(
            f"k must be an integer in [1, n_real - 1] = [1, {n_real - 1}]; got {k!r}. "
            "It counts neighbours among the real locations, so give more real points."
        )
    if n_fake == 0:
        raise ValueError("fake_latlon is empty: give at least one generated location.")
    from scipy.spatial import cKDTree

    # Chord length grows monotonically with the great-circle angle, so neighbours and
    # balls in 3-D Euclidean space are exactly those on the sphere.
    real = _unit_vectors(rlat, rlon)
    fake = _unit_vectors(flat, flon)
    # k + 1 because each real point is its own nearest neighbour (distance 0)
    chords = cKDTree(real).query(real, k=int(k) + 1)[0][:, -1]
    # closed balls: a relative 1e-12 (nanometres on Earth) keeps exact ties inside,
    # which rounding in the tree's squared distances would otherwise drop
    counts = np.asarray(cKDTree(fake).query_ball_point(real, r=chords * (1.0 + 1e-12),
                                                       return_length=True))
    radii = 2.0 * np.arcsin(np.minimum(chords / 2.0, 1.0))  # radians
    return {
        "density": float(counts.sum() / (k * n_fake)),
        "coverage": float(np.mean(counts > 0)),
        "k": int(k),
        "n_real": int(n_real),
        "n_fake": int(n_fake),
        "median_radius_km": float(np.median(radii) * EARTH_RADIUS_KM),
    }
