"""LocDiff end to end: training, sampling, decoding, aggregation, maps, checkpoints, LocDiff-H."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geodiffloc.encoders.base import PrecomputedEmbeddings
from geodiffloc.models.locdiff import AnchorSampler, LocDiff, LocDiffH, anchor_kl
from geodiffloc.models.locdiff.aggregate import (
    centroid,
    grid_log_partition,
    mixture_log_density,
    mixture_mode,
)
from geodiffloc.shdd import SHDD
from geodiffloc.sphere import haversine_km, pairwise_haversine_km

PLACES = torch.tensor([[48.85, 2.35], [40.71, -74.0], [-33.87, 151.2], [35.68, 139.69]])
PARIS, LAS_VEGAS = (48.85, 2.35), (36.17, -115.14)


def _km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double(), b.double()
    return haversine_km(a[..., 0], a[..., 1], b[..., 0], b[..., 1])


@pytest.fixture(scope="module")
def trained() -> LocDiff:
    """L = 23 model overfitted to four cities, one-hot conditions."""
    torch.manual_seed(0)
    model = LocDiff(L=23, cond_dim=8, widths=(128, 64))
    losses = model.fit(torch.eye(4, 8), PLACES, steps=300, batch_size=32, lr=1e-3,
                       anchor_sampler=AnchorSampler(n_anchors=256), progress=False)
    assert np.mean(losses[-30:]) < 0.2 * np.mean(losses[:30])
    return model


def test_shapes_dtypes_and_predict_columns():
    model = LocDiff(L=3, cond_dim=5, widths=(32, 16))
    cond = torch.randn(2, 5)
    c = model.sample(cond, n_samples=3, sampler="dpm++", steps=4,
                     generator=torch.Generator().manual_seed(0))
    assert c.shape == (2, 3, 16) and c.dtype == torch.float32
    gdf = model.predict(cond, n_views=3, sampler="ddim", steps=4, return_samples=True)
    assert list(gdf.columns) == ["lat", "lon", "confidence", "samples", "geometry"]
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == 2
    np.testing.assert_allclose(gdf.geometry.x, gdf.lon)
    np.testing.assert_allclose(gdf.geometry.y, gdf.lat)
    assert gdf["samples"].iloc[0].shape == (3, 2)
    assert ((gdf.confidence >= 0) & (gdf.confidence <= 1)).all()
    # (n, views, dim) embeddings: K = views * samples_per_view
    gdf3 = model.predict(torch.randn(2, 2, 5), samples_per_view=2, sampler="dpm++", steps=3,
                         aggregate="centroid", return_samples=True)
    assert gdf3["samples"].iloc[1].shape == (4, 2)


def test_bad_inputs_are_refused():
    model = LocDiff(L=2, cond_dim=4, widths=(16,), encoder={"name": "enc-A", "dim": 4})
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        model.predict(torch.randn(2, 5), n_views=1, sampler="dpm++", steps=2)
    with pytest.raises(ValueError, match="encoder="):
        model.predict(["a sentence"], n_views=1)
    with pytest.raises(ValueError, match="trained with encoder 'enc-A'"):
        model.predict(torch.randn(1, 4), encoder=PrecomputedEmbeddings(4, name="enc-B"))
    with pytest.raises(ValueError, match="aggregate"):
        model.predict(torch.randn(1, 4), aggregate="mean", sampler="dpm++", steps=2)
    with pytest.raises(ValueError, match="sampler"):
        model.sample(torch.randn(1, 4), sampler="euler")
    with pytest.raises(ValueError, match="cond_dim"):
        LocDiff(L=2, cond_dim=4, encoder={"name": "x", "dim": 6})
    with pytest.raises(ValueError, match="NaN"):
        model.sample(torch.full((1, 4), float("nan")))
    # a matching encoder is accepted
    gdf = model.predict(np.ones((1, 4), np.float32), n_views=2, sampler="dpm++", steps=2,
                        encoder=PrecomputedEmbeddings(4, name="enc-A"))
    assert len(gdf) == 1


@pytest.mark.parametrize(("sampler", "steps"), [("ddpm", None), ("dpm++", 10)])
def test_overfit_model_lands_near_its_cities(trained, sampler, steps):
    gdf = trained.predict(torch.eye(4, 8), n_views=4, sampler=sampler, steps=steps)
    pred = torch.tensor(np.stack([gdf.lat, gdf.lon], 1))
    err = _km(pred, PLACES)
    assert float(err.max()) < 300.0, err
    assert (gdf.confidence > 0.5).all()


def test_sampling_is_deterministic_with_a_seed(trained):
    cond = torch.eye(4, 8)[:2]
    for sampler in ("ddpm", "dpm++"):
        a = trained.sample(cond, 2, sampler=sampler, steps=8,
                           generator=torch.Generator().manual_seed(3))
        b = trained.sample(cond, 2, sampler=sampler, steps=8,
                           generator=torch.Generator().manual_seed(3))
        c = trained.sample(cond, 2, sampler=sampler, steps=8,
                           generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert not torch.equal(a, c)
    g1 = trained.predict(cond, n_views=2, sampler="dpm++", steps=5, seed=11)
    g2 = trained.predict(cond, n_views=2, sampler="dpm++", steps=5, seed=11)
    np.testing.assert_array_equal(g1[["lat", "lon"]].to_numpy(), g2[["lat", "lon"]].to_numpy())


def test_save_load_round_trip(trained, tmp_path):
    path = tmp_path / "locdiff.safetensors"
    trained.save(path)
    with pytest.raises(FileExistsError):
        trained.save(path)
    trained.save(path, overwrite=True)
    back = LocDiff.load(path)
    assert back.config() == trained.config()
    cond = torch.eye(4, 8)
    for sampler in ("ddpm", "dpm++"):
        a = trained.sample(cond, 2, sampler=sampler, steps=6,
                           generator=torch.Generator().manual_seed(0))
        b = back.sample(cond, 2, sampler=sampler, steps=6,
                        generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="safetensors"):
        LocDiff.load(bad)
    with pytest.raises(FileNotFoundError):
        LocDiff.load(tmp_path / "missing.safetensors")


def test_probability_map_is_a_normalised_mixture(trained):
    da = trained.probability_map(torch.eye(4, 8)[:2], resolution=2.0, n_views=3,
                                 sampler="dpm++", steps=8, seed=5)
    assert da.dims == ("query", "lat", "lon") and da.shape == (2, 90, 180)
    np.testing.assert_allclose(da.sum(dim=("lat", "lon")).values, 1.0, rtol=1e-9)
    assert da.attrs["sampler"] == "dpm++" and da.attrs["steps"] == 8 and da.attrs["seed"] == 5
    assert da.attrs["L"] == 23 and da.attrs["units"] == "1" and da.rio.crs.to_epsg() == 4326
    # the mixture equals the mean of the samples' own fields (same seed => same samples)
    coeffs, _ = trained.sample_locations(torch.eye(4, 8)[:1], n_views=3, sampler="dpm++",
                                         steps=8, seed=5)
    own = trained.shdd.field(coeffs[0], resolution=2.0).values.mean(axis=0)
    # (float32 maps: values agree to float32 resolution of f ~ (L+1)^2, not to 1e-9)
    np.testing.assert_allclose(da.values[0], own / own.sum(), rtol=2e-5, atol=1e-12)
    # most of the mass is near the true city
    lat, lon = np.meshgrid(da.lat.values, da.lon.values, indexing="ij")
    d = _km(torch.tensor(np.stack([lat, lon], -1)), PLACES[0].expand(90, 180, 2))
    assert float(da.values[0][d.numpy() < 500].sum()) > 0.5


@pytest.mark.parametrize("resolution", [0.5, 4.0])
def test_predictions_and_field_equal_the_two_separate_calls(trained, resolution):
    """One synthesis for both: the same field, and the same predictions (the field's
    grid log Z is reused only where it is at least as fine as the mixture mode's own)."""
    coeffs, samples = trained.sample_locations(torch.eye(4, 8), n_views=6, sampler="dpm++",
                                               steps=8, seed=2)
    preds, fld = trained.predictions_and_field(coeffs, samples, resolution=resolution,
                                               sampler="dpm++", steps=8, seed=2)
    alone = trained.field_from_samples(coeffs, resolution=resolution, sampler="dpm++",
                                       steps=8, seed=2)
    np.testing.assert_array_equal(fld.values, alone.values)
    assert fld.attrs == alone.attrs
    ref = trained.predictions_from_samples(coeffs, samples)
    d = _km(torch.tensor(preds[["lat", "lon"]].to_numpy()),
            torch.tensor(ref[["lat", "lon"]].to_numpy()))
    if resolution == 4.0:  # 45 rows < the mixture's own grid: not reused, identical
        assert float(d.max()) < 1e-6
    else:
        assert float(d.max()) < 1.0  # log Z differs by the rules' ~1e-5, not the mode
    np.testing.assert_allclose(preds["confidence"], ref["confidence"])
    with pytest.raises(ValueError, match=r"coeffs must be \(n, K, 576\)"):
        trained.predictions_and_field(coeffs[0], samples[0], resolution=resolution)


def test_mixture_mode_takes_known_log_partitions():
    shdd = SHDD(15)
    pts = torch.tensor([PARIS, PARIS, LAS_VEGAS], dtype=torch.float64)
    coeffs = shdd.encode(latlon=pts).double()[None]
    # Las Vegas's density made 100x heavier through its log Z: the mode moves there
    log_z = grid_log_partition(shdd, coeffs[0]) - torch.tensor([0.0, 0.0, math.log(100.0)])
    mode, _ = mixture_mode(shdd, coeffs, pts[None], log_z=log_z)
    assert float(_km(mode[0], pts[2])) < 30.0
    assert float(_km(mixture_mode(shdd, coeffs, pts[None])[0][0], pts[0])) < 30.0
    with pytest.raises(ValueError, match=r"log_z must be \(n \* K,\)"):
        mixture_mode(shdd, coeffs, pts[None], log_z=log_z[:2])


def test_centroid_across_the_antimeridian():
    s = torch.tensor([[[0.0, 179.9], [0.0, -179.9]], [[10.0, 179.0], [-10.0, -179.0]]])
    c = centroid(s)
    assert torch.all(c[:, 1].abs() > 179.9) and torch.all(c[:, 0].abs() < 1e-9)
    shdd = SHDD(15)
    coeffs = shdd.encode(latlon=s[0].double())[None]
    mode, _ = mixture_mode(shdd, coeffs, s[:1].double())
    assert abs(float(mode[0, 1])) > 179.0 and abs(float(mode[0, 0])) < 1.0


def test_mixture_mode_picks_a_real_mode_where_the_centroid_fails():
    shdd = SHDD(23)
    pts = torch.tensor([PARIS, PARIS, LAS_VEGAS], dtype=torch.float64)
    coeffs = shdd.encode(latlon=pts)[None]
    mode, val = mixture_mode(shdd, coeffs, pts[None])
    assert float(_km(mode[0], pts[0])) < 30.0
    cen = centroid(pts[None])[0]
    assert float(_km(cen, pts[0])) > 1500 and float(_km(cen, pts[2])) > 1500
    assert -60 < float(cen[1]) < -10  # the North Atlantic
    # the mode's mixture density beats the density at the centroid and at Las Vegas
    others = mixture_log_density(shdd, coeffs, torch.stack([cen, pts[2]])[None])
    assert torch.all(val[0] > others[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_grid_log_partition_against_closed_forms_and_quadrature(dtype):
    shdd = SHDD(7)
    # float32 synthesis (the default, for mixture weights) rounds log Z by ~1e-6
    eps = 0.0 if dtype == torch.float64 else 2e-5
    # f = a Y_10 = b cos(theta), b = a sqrt(3 / 4 pi): Z = 4 pi sinh(b) / b
    # (tolerance: midpoint-rule error, larger when the peak sits on a pole, as here for a=20)
    for a, tol in ((0.5, 1e-4), (3.0, 1e-4), (20.0, 2e-3)):
        c = torch.zeros(1, 64, dtype=torch.float64)
        c[0, 2] = a
        b = a * math.sqrt(3 / (4 * math.pi))
        ref = math.log(4 * math.pi) + math.log(math.sinh(b) / b)
        assert abs(float(grid_log_partition(shdd, c, dtype=dtype)[0]) - ref) < tol + eps
    z0 = grid_log_partition(shdd, torch.zeros(1, 64, dtype=torch.float64), dtype=dtype)
    assert abs(float(z0[0]) - math.log(4 * math.pi)) < 1e-12 + eps
    g = torch.Generator().manual_seed(0)
    c = torch.cat([shdd.encode(latlon=torch.tensor([[30.0, 40.0], [-60.0, 100.0]])).double(),
                   0.5 * torch.randn(2, 64, generator=g, dtype=torch.float64)])
    torch.testing.assert_close(grid_log_partition(shdd, c, dtype=dtype), shdd.log_partition(c),
                               rtol=0, atol=1e-4 + eps)


def test_grid_log_partition_float32_matches_float64_on_sharp_fields():
    # the sharp, high-value fields a sampler produces at L = 23 (log Z up to ~40)
    shdd = SHDD(23)
    g = torch.Generator().manual_seed(3)
    pts = torch.stack([torch.rand(64, generator=g) * 180 - 90,
                       torch.rand(64, generator=g) * 360 - 180], 1).double()
    c = 3.0 * shdd.encode(latlon=pts).double() + 0.3 * torch.randn(64, 576, generator=g,
                                                                     dtype=torch.float64)
    z64 = grid_log_partition(shdd, c, dtype=torch.float64)
    assert float(z64.max()) > 20.0  # really sharp
    torch.testing.assert_close(grid_log_partition(shdd, c), z64, rtol=0, atol=5e-5)


def test_mixture_log_density_is_the_mean_of_the_sample_densities():
    # independent reference: each sample's density from SHDD.evaluate and the adaptive
    # log-partition, averaged in linear space
    shdd = SHDD(11)
    g = torch.Generator().manual_seed(5)
    centres = torch.tensor([[48.8, 2.3], [35.7, 139.7], [-33.9, 151.2]], dtype=torch.float64)
    c = shdd.encode(latlon=centres).double()[None] + 0.2 * torch.randn(
        2, 3, 144, generator=g, dtype=torch.float64)
    pts = torch.tensor([[[48.0, 2.0], [0.0, 0.0]], [[35.0, 139.0], [-33.0, 150.0]]],
                       dtype=torch.float64)
    got = mixture_log_density(shdd, c, pts)
    ref = torch.stack([
        torch.log(torch.stack([torch.exp(shdd.evaluate(c[i, j][None], pts[i])[0]
                                         - shdd.log_partition(c[i, j][None])[0])
                               for j in range(3)]).mean(0))
        for i in range(2)])
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4)


def test_anchor_kl_equals_shdd_kl_on_per_sample_anchors():
    shdd = SHDD(9)
    g = torch.Generator().manual_seed(1)
    latlon = torch.tensor([[10.0, 20.0], [-45.0, 170.0], [80.0, -30.0]])
    pred = (shdd.encode(latlon=latlon.double()) + 0.1 * torch.randn(3, 100, generator=g,
                                                                     dtype=torch.float64))
    sampler = AnchorSampler("mixed", n_anchors=64, n_local=16, local_radius_km=500.0)
    glob, local = sampler.draw(latlon.double(), width_km=shdd.width_km,
                               generator=torch.Generator().manual_seed(2))
    full = sampler(latlon.double(), width_km=shdd.width_km,
                   generator=torch.Generator().manual_seed(2))
    ours = anchor_kl(shdd, pred, latlon.double(), glob, local)
    ref = shdd.kl(pred, latlon=latlon.double(), anchors=full)
    torch.testing.assert_close(ours, ref)
    assert torch.all(ours > 0)
    # exact target => zero loss
    exact = anchor_kl(shdd, shdd.encode(latlon=latlon.double()), latlon.double(), glob, local)
    assert float(exact.abs().max()) < 1e-9


def test_training_loss_options():
    model = LocDiff(L=5, cond_dim=3, widths=(32, 16))
    cond, ll = torch.randn(4, 3), PLACES
    g = torch.Generator
    base, _ = model.training_loss(cond, ll, generator=g().manual_seed(0))
    same, _ = model.training_loss(cond, ll, generator=g().manual_seed(0))
    assert torch.isfinite(base) and float(base) == float(same)
    aux, logs2 = model.training_loss(cond, ll, aux_weight=2.0, generator=g().manual_seed(0))
    assert float(aux) == pytest.approx(float(base) + 2.0 * logs2["mse"], rel=1e-5)
    mixed, _ = model.training_loss(cond, ll, generator=g().manual_seed(0),
                                   anchor_sampler=AnchorSampler("mixed", n_anchors=32))
    assert torch.isfinite(mixed)
    mixed.backward()
    assert all(p.grad is not None for p in model.net.down.parameters())
    with pytest.raises(ValueError, match="same number of rows"):
        model.training_loss(cond[:3], ll)
    with pytest.raises(ValueError):
        model.training_loss(cond, torch.tensor([[95.0, 0.0]] * 4))


def _hybrid_gallery() -> torch.Tensor:
    """Points ~100 km around Paris and New York, plus far-away points (> 1500 km)."""
    rng = np.random.default_rng(0)
    near = [np.array(c) + rng.normal(0, 0.7, (20, 2)) for c in (PARIS, (40.71, -74.0))]
    far = np.column_stack([rng.uniform(-60, 70, 60), rng.uniform(-30, 60, 60)])
    far = far[pairwise_haversine_km(torch.tensor(far), PLACES.double()).min(1).values.numpy()
              > 1500]
    return torch.tensor(np.concatenate([*near, far]))


def test_locdiff_h_restricts_to_radius_and_falls_back(trained):
    from geodiffloc.models.geoclip import GeoCLIP

    # nothing in the gallery near Sydney or Tokyo, so those two queries must fall back
    gallery = _hybrid_gallery()
    gc = GeoCLIP(backbone_dim=6, embed_dim=4, n_freqs=4, hidden_dim=8, seed=0, cache_dir=False,
                 gallery=gallery)
    hyb = LocDiffH(trained, gc, radius_km=200.0, n_candidates=4, rerank="radius")
    gc_in = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    gdf = hyb.predict(torch.eye(4, 8), gc_in, sampler="dpm++", steps=10, return_candidates=True)
    assert list(gdf.fallback) == [False, False, True, True]
    assert list(gdf.source) == ["geoclip", "geoclip", "locdiff", "locdiff"]
    for i in range(2):
        cands = torch.tensor(gdf.candidates.iloc[i])
        d = pairwise_haversine_km(gallery, cands).min(dim=1).values
        pool = torch.nonzero(d <= 200.0).flatten()
        assert gdf.n_in_radius.iloc[i] == pool.numel() > 0
        assert int(gdf.gallery_index.iloc[i]) in pool.tolist()
        # the answer is GeoCLIP's best point among the pool (independent route: predict on
        # the restricted gallery)
        ref = gc.predict(gc_in[i:i + 1], gallery=gallery[pool])
        np.testing.assert_allclose([gdf.lat.iloc[i], gdf.lon.iloc[i]],
                                   [ref.lat.iloc[0], ref.lon.iloc[0]])
        assert gdf.confidence.iloc[i] == pytest.approx(ref.prob.iloc[0], rel=1e-5)
    # fallbacks equal LocDiff's own prediction from the same samples
    own = trained.predict(torch.eye(4, 8)[2:], n_views=4, sampler="dpm++", steps=10)
    assert (gdf.gallery_index.iloc[2:] == -1).all() and (gdf.n_in_radius.iloc[2:] == 0).all()
    pred = torch.tensor(np.stack([gdf.lat.iloc[2:], gdf.lon.iloc[2:]], 1))
    assert float(_km(pred, torch.tensor(np.stack([own.lat, own.lon], 1))).max()) < 1.0
    with pytest.raises(ValueError, match="radius_km"):
        LocDiffH(trained, gc, radius_km=0)
    with pytest.raises(ValueError, match="queries"):
        hyb.predict(torch.eye(4, 8), gc_in[:3], sampler="dpm++", steps=2)


def test_locdiff_h_density_rerank_is_geoclip_times_sample_kernel(trained):
    """The default rule against a brute-force float64 reference: pool within 4 sigma,
    GeoCLIP's probability over the pool times a Gaussian kernel of the samples."""
    from geodiffloc.models.geoclip import GeoCLIP

    gallery = _hybrid_gallery()
    gc = GeoCLIP(backbone_dim=6, embed_dim=4, n_freqs=4, hidden_dim=8, seed=0, cache_dir=False,
                 gallery=gallery)
    hyb = LocDiffH(trained, gc, radius_km=60.0, n_candidates=4)  # sigma 30 km, pool 120 km
    assert hyb.rerank == "density" and hyb.pool_radius_km == pytest.approx(120.0)
    gc_in = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    gdf = hyb.predict(torch.eye(4, 8), gc_in, sampler="dpm++", steps=10, return_candidates=True)
    assert list(gdf.fallback) == [False, False, True, True]
    for i in range(2):
        cands = np.asarray(gdf.candidates.iloc[i], dtype=np.float64)
        lat1, lon1 = np.radians(gallery[:, :1].numpy()), np.radians(gallery[:, 1:].numpy())
        lat2, lon2 = np.radians(cands[:, 0]), np.radians(cands[:, 1])
        hav = (np.sin((lat2 - lat1) / 2) ** 2
               + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2)
        d = 2 * 6371.0088 * np.arcsin(np.sqrt(hav))  # (gallery, K) km
        pool = np.flatnonzero(d.min(1) <= 120.0)
        assert gdf.n_in_radius.iloc[i] == pool.size > 1
        # GeoCLIP's probabilities over the pool, by coordinates (not gallery indices)
        prob = gc.score_candidates(gc_in[i:i + 1], [gallery[pool].numpy()], kind="prob",
                                   input_kind="backbone")[0].numpy()
        score = prob * np.exp(-0.5 * (d[pool] / 30.0) ** 2).sum(1)
        best = int(np.argmax(score))
        assert int(gdf.gallery_index.iloc[i]) == pool[best]
        assert gdf.confidence.iloc[i] == pytest.approx(score[best] / score.sum(), rel=1e-5)
    with pytest.raises(ValueError, match="rerank"):
        LocDiffH(trained, gc, rerank="nearest")
    with pytest.raises(ValueError, match="bandwidth_km"):
        LocDiffH(trained, gc, bandwidth_km=-1.0)


def test_locdiff_h_density_prefers_the_region_most_samples_agree_on(trained):
    """Equal GeoCLIP probability at two gallery points: the one beside 3 of 4 samples wins
    under the density rule, while the radius rule cannot tell them apart."""
    from geodiffloc.models.geoclip import GeoCLIP

    gc = GeoCLIP(backbone_dim=6, embed_dim=4, n_freqs=4, hidden_dim=8, seed=0, cache_dir=False,
                 gallery=torch.tensor([[0.0, 0.0]]))
    hyb = LocDiffH(trained, gc)
    points = torch.tensor([[10.0, 10.0], [-20.0, 40.0]], dtype=torch.float64)
    samples = torch.tensor([[10.3, 10.1], [-20.2, 40.0], [9.8, 9.9], [10.0, 10.4]])
    p = hyb._times_sample_density(torch.tensor([0.5, 0.5]), points, samples)
    assert float(p.sum()) == pytest.approx(1.0) and float(p[0]) > 0.7
    # and GeoCLIP's preference still counts: a 100:1 edge for the lone sample's point wins
    p = hyb._times_sample_density(torch.tensor([0.01, 0.99]), points, samples)
    assert int(p.argmax()) == 1
