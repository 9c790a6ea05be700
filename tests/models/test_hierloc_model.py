"""HierLoc: learning a synthetic hierarchy, inference outputs, fields, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hierloc_helpers import leaf_samples, synthetic_hierarchy

from geodiffloc import HierLoc
from geodiffloc.data import EntityHierarchy

pytest.importorskip("lightning")


@pytest.fixture(scope="module")
def trained():
    h = synthetic_hierarchy()
    x, ll, _ = leaf_samples(h, 20, seed=0)
    m = HierLoc(h, input_dim=16, embed_dim=8, hidden_dim=64, seed=0)
    losses = m.fit(x, ll, steps=200, batch_size=64, lr=3e-3, entity_lr=3e-2, progress=False)
    return m, losses


def test_learns_a_three_level_hierarchy(trained):
    m, losses = trained
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    h = m.hierarchy
    xt, _, truth = leaf_samples(h, 10, seed=99)  # fresh noise
    flat = m.predict(xt)
    assert (flat["entity_id"].to_numpy() == truth).mean() >= 0.95
    beam = m.predict(xt, method="beam", beam_width=3)
    assert (beam["entity_id"].to_numpy() == truth).mean() >= 0.95
    # the per-level ancestor columns are the truth's ancestors
    region_truth = np.array([t[:4] for t in truth])
    assert (flat["region"].to_numpy() == region_truth).mean() >= 0.95


def test_norm_order_is_learned(trained):
    from geodiffloc.models.hierloc import distance_to_origin

    m, _ = trained
    r = distance_to_origin(m.entity_points().detach()).numpy()
    lev = m.hierarchy.level
    means = [r[lev == k].mean() for k in range(3)]
    assert means[0] < means[1] < means[2]


def test_per_level_frames_and_beam_masses(trained):
    m, _ = trained
    xt, _, _ = leaf_samples(m.hierarchy, 1, seed=5)
    out = m.predict_levels(xt[:3], top_k=2, method="beam", beam_width=3)
    assert list(out) == ["country", "region", "town"]
    for lname, gdf in out.items():
        assert gdf.crs.to_epsg() == 4326
        assert set(gdf["level_name"]) == {lname}
        assert {"query", "rank", "entity_id", "name", "prob", "geometry"} <= set(gdf.columns)
        assert (gdf["prob"] > 0).all() and (gdf["prob"] <= 1 + 1e-12).all()
    # in the beam, a region's mass is at most its country's
    p = m.level_probabilities(xt[:3], "beam", beam_width=3).numpy()
    par = m.hierarchy.parent_index
    child = np.flatnonzero(par >= 0)
    assert (p[:, child] <= p[:, par[child]] + 1e-12).all()
    flat = m.level_probabilities(xt[:3], "flat").numpy()
    for k in range(3):
        assert np.allclose(flat[:, m.hierarchy.level == k].sum(1), 1.0)


def test_probability_map_is_a_normalised_field(trained):
    m, _ = trained
    xt, ll, _ = leaf_samples(m.hierarchy, 1, seed=7)
    da = m.probability_map(xt[:2], resolution=2.0, kernel_km=100.0)
    assert da.dims == ("query", "lat", "lon") and da.rio.crs.to_epsg() == 4326
    assert np.allclose(da.sum(("lat", "lon")).values, 1.0)
    # the mass concentrates around the true town (well-trained model)
    q0 = da.isel(query=0)
    lat, lon = float(ll[0, 0]), float(ll[0, 1])
    near = q0.sel(lat=slice(lat + 5, lat - 5), lon=slice(lon - 5, lon + 5))
    assert float(near.sum()) > 0.9


def test_polygon_leaves_spread_mass_inside_their_polygon():
    import geopandas as gpd
    from shapely.geometry import box

    g = gpd.GeoDataFrame({"id": ["R", "a", "b"], "parent": [None, "R", "R"]},
                         geometry=[box(0, 0, 20, 20), box(0, 0, 10, 10), box(10, 10, 20, 20)],
                         crs=4326)
    h = EntityHierarchy.from_geodataframe(g)
    m = HierLoc(h, input_dim=4, embed_dim=2, hidden_dim=8)
    da = m.probability_map(torch.randn(1, 4), resolution=1.0)
    inside = da.isel(query=0).sel(lat=slice(20, 0), lon=slice(0, 20))
    assert abs(float(inside.sum()) - 1.0) < 1e-9
    from geodiffloc.geo import zonal_probability

    z = zonal_probability(da.isel(query=0), g.iloc[1:])
    pa = m.predict(torch.randn(1, 4), top_k=2)
    assert np.isclose(z.filter(like="prob").to_numpy().sum(), 1.0, atol=1e-6)
    assert len(pa) == 2


def test_save_load_round_trip(trained, tmp_path):
    m, _ = trained
    path = m.save(tmp_path / "hierloc.safetensors")
    m2 = HierLoc.load(path)
    xt, _, _ = leaf_samples(m.hierarchy, 1, seed=11)
    a, b = m.entity_logits(xt), m2.entity_logits(xt)
    assert torch.equal(a, b)
    assert m2.hierarchy.ids.tolist() == m.hierarchy.ids.tolist()
    assert m2.config() == m.config()
    with pytest.raises(FileExistsError):
        m.save(path)


def test_damaged_checkpoints_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    h = synthetic_hierarchy()
    m = HierLoc(h, input_dim=4, embed_dim=3, hidden_dim=8)
    path = m.save(tmp_path / "m.safetensors")
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    t = load_file(str(path))
    t["entities"] = t["entities"][:-1]
    save_file(t, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="'entities' has shape"):
        HierLoc.load(tmp_path / "short.safetensors")
    t = load_file(str(path))
    t["head.0.weight"][0, 0] = float("nan")
    save_file(t, str(tmp_path / "nan.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="NaN"):
        HierLoc.load(tmp_path / "nan.safetensors")


def test_bad_inputs_are_refused():
    m = HierLoc(synthetic_hierarchy(), input_dim=4, embed_dim=2, hidden_dim=8)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        m.predict(torch.randn(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        m.predict(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="no encoder"):
        m.predict(["a caption"])
    with pytest.raises(ValueError, match="method"):
        m.level_probabilities(torch.randn(1, 4), "greedy")
    with pytest.raises(ValueError, match="level_weights"):
        HierLoc(synthetic_hierarchy(), input_dim=4, level_weights=[1.0])


def test_geo_initialisation_puts_near_entities_near_each_other():
    from scipy.stats import spearmanr

    from geodiffloc.models.hierloc import lorentz_distance
    from geodiffloc.sphere.distance import pairwise_haversine_km

    h = synthetic_hierarchy()
    towns = torch.as_tensor(h.leaves)
    ll = torch.as_tensor(h.latlon)[towns]
    km = pairwise_haversine_km(ll, ll).numpy()
    iu = np.triu_indices(len(towns), 1)
    rho = {}
    for init in ("geo", "random"):
        m = HierLoc(h, input_dim=4, embed_dim=8, hidden_dim=8, seed=0, entity_init=init)
        pts = m.entity_points().detach()[towns]
        rho[init] = spearmanr(km[iu], lorentz_distance(pts, pts).numpy()[iu]).statistic
    assert rho["geo"] > 0.9 > 0.5 > rho["random"]
    with pytest.raises(ValueError, match="entity_init"):
        HierLoc(h, input_dim=4, entity_init="grid")
