"""Synthetic fields for the geo tests, built independently of SHDD."""

from __future__ import annotations

import numpy as np

from geodiffloc.sphere import EARTH_RADIUS_KM, LatLonGrid


def vmf_mass(grid: LatLonGrid, centers: list[tuple[float, float]], width_km: float,
             attrs: dict | None = None):
    """Cell masses of von Mises-Fisher bumps (one per centre).

    The density exp(kappa (mu . x - 1)) is evaluated at cell centres, times the exact
    cell solid angle, normalised; kappa = (R / width)^2 makes the bump's angular std
    about width / R for small widths.
    """
    kappa = (EARTH_RADIUS_KM / width_km) ** 2
    lat, lon = np.meshgrid(np.deg2rad(grid.lat), np.deg2rad(grid.lon), indexing="ij")
    xyz = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)
    out = []
    for clat, clon in centers:
        a, b = np.deg2rad(clat), np.deg2rad(clon)
        mu = np.array([np.cos(a) * np.cos(b), np.cos(a) * np.sin(b), np.sin(a)])
        m = np.exp(kappa * (xyz @ mu - 1.0)) * grid.cell_area_sr()[:, None]
        out.append(m / m.sum())
    values = out[0] if len(out) == 1 else np.stack(out)
    return grid.to_dataarray(values, kind="mass", attrs=attrs or {"model": "vmf-test"})


def uniform_mass(grid: LatLonGrid):
    """The uniform distribution on the sphere as cell masses (cell area / 4 pi)."""
    m = np.broadcast_to(grid.cell_area_sr()[:, None] / (4 * np.pi), grid.shape)
    return grid.to_dataarray(np.array(m), kind="mass")
