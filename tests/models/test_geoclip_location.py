"""GeoCLIP location encoder: the official weights load unchanged and give the official numbers."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from geodiffloc.models.geoclip import (
    Gallery,
    LocationEncoder,
    RandomFourierFeatures,
    equal_earth_projection,
    find_official,
)

geoclip = pytest.importorskip("geoclip")


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    path = find_official()["location_encoder"]
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def official_encoder() -> torch.nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return geoclip.LocationEncoder().eval()


@pytest.fixture(scope="module")
def ours(official_state) -> LocationEncoder:
    enc = LocationEncoder()
    enc.load_state_dict(official_state)  # unchanged: strict key and shape match
    return enc.eval()


def test_state_dict_layout_is_the_official_one(official_state):
    ours = LocationEncoder()
    own = ours.state_dict()
    assert list(own) == list(official_state)
    assert all(own[k].shape == official_state[k].shape for k in own)
    # the random Fourier matrix is fixed, never trained
    assert not any(n.endswith(".b") for n, _ in ours.named_parameters())


def _max_abs_diff(ours, official_encoder, latlon: torch.Tensor) -> float:
    worst = 0.0
    with torch.no_grad():
        for s in range(0, latlon.shape[0], 20_000):
            chunk = latlon[s:s + 20_000]
            ref = official_encoder(chunk)
            got = ours(chunk)
            worst = max(worst, float((ref - got).abs().max()))
    return worst


def test_all_100k_gallery_points_match_official(ours, official_encoder):
    # the acceptance check: every MP16 gallery point, as the official encoder gives it
    latlon = Gallery.mp16().latlon.float()
    assert latlon.shape == (100_000, 2)
    assert _max_abs_diff(ours, official_encoder, latlon) <= 1e-5


@pytest.mark.parametrize("latlon", [
    [[90.0, 0.0], [-90.0, 180.0], [0.0, -180.0], [0.0, 180.0], [89.999, 179.999]],
    [[51.4779, -0.0015], [-33.8688, 151.2093], [64.1466, -21.9426], [-54.8, -68.3]],
])
def test_extreme_points_match_official(ours, official_encoder, latlon):
    x = torch.tensor(latlon)
    with torch.no_grad():
        assert torch.allclose(ours(x), official_encoder(x), atol=1e-5, rtol=0)


def test_float64_path_agrees_with_float32(ours):
    x = Gallery.fibonacci(500).latlon
    with torch.no_grad():
        y32 = ours(x.float())
        y64 = ours.double()(x)
    ours.float()
    # float32 phase rounding at sigma=256 is the only source of difference
    assert float((y32.double() - y64).abs().max()) < 1e-4


def test_projection_matches_pyproj_equal_earth():
    pyproj = pytest.importorskip("pyproj")
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, 2000)))
    lon = rng.uniform(-180, 180, 2000)
    x, y = pyproj.Proj("+proj=eqearth +R=1")(lon, lat)
    ours = equal_earth_projection(torch.from_numpy(np.stack([lat, lon], 1))).numpy()
    ref = np.stack([x, y], 1) * 66.50336 / 180
    np.testing.assert_allclose(ours, ref, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(lat=st.floats(-90, 90), lon=st.floats(-180, 180))
def test_projection_is_odd_and_bounded(lat, lon):
    p = equal_earth_projection(torch.tensor([[lat, lon], [-lat, -lon]], dtype=torch.float64))
    assert torch.allclose(p[0], -p[1], atol=1e-12)
    assert float(p.abs().max()) <= 66.50336 / 180 * 2.71 + 1e-9  # map half-width on R=1


def test_random_fourier_features_formula():
    rff = RandomFourierFeatures(4.0, n_freqs=8, generator=torch.Generator().manual_seed(1))
    v = torch.randn(5, 2, dtype=torch.float64)
    rff = rff.double()
    phase = 2 * math.pi * (v[:, None, :] * rff.b[None]).sum(-1)
    np.testing.assert_allclose(rff(v).numpy(), torch.cat([phase.cos(), phase.sin()], 1).numpy(),
                               atol=1e-12)
    assert abs(float(RandomFourierFeatures(16.0, 4096).b.std()) - 16.0) < 1.0


def test_sigmas_are_configurable_and_summed():
    enc = LocationEncoder((1, 16, 256, 4096), n_freqs=16, hidden_dim=32, embed_dim=8, seed=0)
    assert len(enc.capsules) == 4 and enc.capsules[3].capsule[0].sigma == 4096
    x = torch.tensor([[10.0, 20.0], [-45.0, 170.0]])
    proj = equal_earth_projection(x)
    with torch.no_grad():
        total = sum(c(proj) for c in enc.capsules)
        assert torch.allclose(enc(x), total, atol=1e-6)


def test_longitude_0_360_is_normalised(ours):
    with torch.no_grad():
        a = ours(torch.tensor([[10.0, 350.0]]))
        b = ours(torch.tensor([[10.0, -10.0]]))
    assert torch.allclose(a, b)


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[91.0, 0.0]]), "lat"),
    (torch.tensor([[float("nan"), 0.0]]), "finite|NaN"),
    (torch.zeros(3, 3), "shape"),
])
def test_invalid_coordinates_raise(bad, match):
    enc = LocationEncoder(n_freqs=4, hidden_dim=8, embed_dim=4, seed=0)
    with pytest.raises(ValueError, match=match):
        enc(bad)


def test_mixed_devices_raise():
    enc = LocationEncoder(n_freqs=4, hidden_dim=8, embed_dim=4, seed=0)
    with pytest.raises(ValueError, match=r"device|on meta"):
        enc(torch.zeros(2, 2, device="meta"))


def test_bad_config_raises():
    with pytest.raises(ValueError, match="sigmas"):
        LocationEncoder(())
    with pytest.raises(ValueError, match="hidden_dim"):
        LocationEncoder(hidden_dim=0)
