"""Point-kernel mixtures from the zonal profile against full spherical-harmonic synthesis."""

from __future__ import annotations

import pytest
import torch

from geodiffloc.shdd import SHDD
from geodiffloc.shdd.kernels import kernel_mixture, zonal_profile

POINTS = torch.tensor([[48.85, 2.35], [-33.9, 151.2], [89.7, 10.0], [-89.2, -120.0],
                       [0.0, 179.9], [12.3, -179.6], [64.1, -21.9]], dtype=torch.float64)


@pytest.mark.parametrize(("L", "resolution"), [(3, 2.0), (15, 1.0), (23, 0.5), (47, 1.0)])
def test_mixture_equals_synthesised_fields(L, resolution) -> None:
    shdd = SHDD(L)
    w = torch.linspace(0.5, 2.0, len(POINTS), dtype=torch.float64)
    w = w / w.sum() * 0.8
    ours = kernel_mixture(shdd, POINTS, w, resolution)
    fields = shdd.field(shdd.encode(latlon=POINTS).double(), resolution=resolution,
                        kind="mass").values
    ref = torch.from_numpy(fields).mul(w[:, None, None]).sum(0)
    assert ours.shape == ref.shape and ours.dtype == torch.float64
    # linear interpolation of the profile: ~1e-4 of the peak at L = 47
    assert float((ours - ref).abs().max()) <= 2e-4 * float(ref.max())
    assert float(ours.sum()) == pytest.approx(0.8, abs=1e-9)


def test_profile_is_the_addition_theorem() -> None:
    # f(theta) = sum_l t_l (2l + 1) / (4 pi) P_l(cos theta) for the untapered encoder
    from scipy.special import eval_legendre

    shdd = SHDD(9)
    theta, prof = zonal_profile(shdd)
    ls = torch.arange(10, dtype=torch.float64).numpy()
    pick = theta[::4000]
    expected = [(((2 * ls + 1) / (4 * torch.pi)) * eval_legendre(ls, float(torch.cos(
        torch.tensor(t))))).sum() for t in pick]
    # the encoding is float32 (as every kernel is), so agreement is to ~1e-7
    assert prof[::4000] == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_weights_must_match_points() -> None:
    with pytest.raises(ValueError, match="one value per point"):
        kernel_mixture(SHDD(5), POINTS[:3], torch.ones(2), 2.0)


@pytest.mark.parametrize("L", [5, 23, 47])
def test_windows_drop_only_cells_beyond_the_negligible_reach(L) -> None:
    """Reading each kernel only near its centre equals reading it on every cell (the
    profile interpolated at the true angle everywhere), up to the e^-30 cut-off."""
    import math

    import numpy as np

    from geodiffloc.sphere import LatLonGrid

    shdd = SHDD(L)
    pts = torch.cat([POINTS, torch.tensor([[-60.0, 179.5], [75.0, -179.9]],
                                          dtype=torch.float64)])
    w = torch.linspace(1.0, 2.0, len(pts), dtype=torch.float64)
    ours = kernel_mixture(shdd, pts, w, 1.0).numpy()
    theta, prof = zonal_profile(shdd)
    grid = LatLonGrid.global_(1.0)
    lat, lon = np.meshgrid(np.radians(grid.lat), np.radians(grid.lon), indexing="ij")
    ref = np.zeros(grid.shape)
    for (la, lo), wk in zip(np.radians(pts.numpy()), w.numpy(), strict=True):
        cos_t = (np.sin(lat) * math.sin(la) + np.cos(lat) * math.cos(la) * np.cos(lon - lo))
        f = np.interp(np.arccos(np.clip(cos_t, -1, 1)), theta, prof)
        m = np.exp(f - prof[0] + np.log(grid.cell_area_sr())[:, None])
        ref += wk * m / m.sum()
    assert float(np.abs(ours - ref).max()) <= 1e-12 * float(ref.max())
