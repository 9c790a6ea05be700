"""GeoCLIP model: official head, retrieval, caching, maps, checkpoints and error paths."""

from __future__ import annotations

import importlib.util
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geodiffloc.models.geoclip import Gallery, GeoCLIP, find_official
from geodiffloc.sphere import LatLonGrid

TINY = dict(backbone_dim=12, embed_dim=8, n_freqs=8, hidden_dim=16, queue_size=32, seed=0)


def tiny(tmp_path: Path | None = None, **kw) -> GeoCLIP:
    cfg = {**TINY, **kw}
    return GeoCLIP(cache_dir=tmp_path if tmp_path is not None else False, **cfg).eval()


class CountingEmbed:
    """Wraps a location encoder's ``embed`` to count how often galleries are embedded."""

    def __init__(self, model: GeoCLIP) -> None:
        self.calls = 0
        self._orig = model.location_encoder.embed

        def wrapped(*a, **k):
            self.calls += 1
            return self._orig(*a, **k)

        model.location_encoder.embed = wrapped  # type: ignore[method-assign]


# -- official weights -----------------------------------------------------------------

@pytest.fixture(scope="module")
def official_files():
    if importlib.util.find_spec("geoclip") is None:
        pytest.skip("the geoclip package (official weights) is not installed")
    return find_official()


def test_from_official_loads_head_and_scale_unchanged(official_files):
    m = GeoCLIP.from_official(backbone=None, cache_dir=False)
    head = torch.load(official_files["image_head"], weights_only=True)
    scale = torch.load(official_files["logit_scale"], weights_only=True)
    for k, v in head.items():
        assert torch.equal(m.image_head.state_dict()[k], v)
    assert m.logit_scale.item() == pytest.approx(float(scale))
    assert (m.backbone_dim, m.embed_dim) == (768, 512)
    assert not m.training


def test_official_logits_match_an_independent_computation(official_files):
    geoclip = pytest.importorskip("geoclip")
    m = GeoCLIP.from_official(backbone=None, cache_dir=False)
    head = torch.load(official_files["image_head"], weights_only=True)
    scale = torch.load(official_files["logit_scale"], weights_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loc_enc = geoclip.LocationEncoder().eval()
    feats = torch.randn(4, 768, generator=torch.Generator().manual_seed(0))
    gps = torch.tensor([[48.85, 2.35], [40.7, -74.0], [-33.9, 151.2], [35.7, 139.7]])
    with torch.no_grad():
        h = F.linear(F.relu(F.linear(feats, head["0.weight"], head["0.bias"])),
                     head["2.weight"], head["2.bias"])
        ref = scale.exp() * F.normalize(h, dim=1) @ F.normalize(loc_enc(gps), dim=1).T
        got = m(feats, gps)
    assert torch.allclose(got, ref, atol=1e-4)


def test_from_official_user_folder_and_flat_layout(official_files, tmp_path):
    for p in official_files.values():
        shutil.copy(p, tmp_path / Path(p).name)
    m = GeoCLIP.from_official(tmp_path, backbone=None, cache_dir=False)
    assert len(m.resolve_gallery()) == 100_000
    assert m.official_path == str(tmp_path)


def test_from_official_missing_folder_and_files(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        GeoCLIP.from_official(tmp_path / "nope", backbone=None)
    with pytest.raises(ValueError, match="missing"):
        GeoCLIP.from_official(tmp_path, backbone=None)


def test_mismatched_weight_shapes_raise(official_files, tmp_path):
    for p in official_files.values():
        shutil.copy(p, tmp_path / Path(p).name)
    head = torch.load(tmp_path / "image_encoder_mlp_weights.pth", weights_only=True)
    head["2.weight"] = head["2.weight"][:, :100]
    torch.save(head, tmp_path / "image_encoder_mlp_weights.pth")
    with pytest.raises(ValueError, match=r"2\.weight"):
        GeoCLIP.from_official(tmp_path, backbone=None)


# -- retrieval ---------------------------------------------------------------------------

def test_predict_geodataframe_contract():
    m = tiny()
    x = torch.randn(3, 12)
    gdf = m.predict(x, gallery="fibonacci:200")
    assert len(gdf) == 3 and gdf.crs.to_epsg() == 4326 and "rank" not in gdf
    assert np.allclose(gdf.geometry.x, gdf.lon) and np.allclose(gdf.geometry.y, gdf.lat)
    assert ((gdf.prob > 0) & (gdf.prob <= 1)).all()
    # the best point is the argmax of an independent similarity computation
    g = Gallery.fibonacci(200).latlon
    with torch.no_grad():
        sims = F.normalize(m.project(x), dim=1) @ F.normalize(m.location_encoder(g.float()),
                                                              dim=1).T
        probs = (m.logit_scale.exp() * sims).softmax(1)
    assert (gdf.gallery_index.to_numpy() == sims.argmax(1).numpy()).all()
    np.testing.assert_allclose(gdf.similarity, sims.max(1).values.numpy(), atol=1e-5)
    np.testing.assert_allclose(gdf.prob, probs.max(1).values.numpy(), rtol=1e-4)


def test_predict_top_k_rows_and_ranks():
    m = tiny()
    gdf = m.predict(torch.randn(2, 12), top_k=5, gallery="fibonacci:100")
    assert len(gdf) == 10 and list(gdf["rank"][:5]) == [1, 2, 3, 4, 5]
    for _, grp in gdf.groupby("query"):
        assert (np.diff(grp.prob.to_numpy()) <= 1e-12).all()


def test_predict_head_embeddings_and_views():
    m = tiny()
    x = torch.randn(2, 12)
    with torch.no_grad():
        head = m.project(x)
    a = m.predict(x, gallery="fibonacci:50")
    b = m.predict(head, gallery="fibonacci:50", input_kind="head")
    assert (a.gallery_index.to_numpy() == b.gallery_index.to_numpy()).all()
    # two identical views give the same answer as one
    v = m.predict(torch.stack([x, x], 1), gallery="fibonacci:50", input_kind="backbone")
    np.testing.assert_allclose(v.prob, a.prob, rtol=1e-5)


def test_predict_user_gallery_csv_and_geodataframe(tmp_path):
    import geopandas as gpd
    import pandas as pd

    pts = pd.DataFrame({"LAT": [10.0, -20.0, 60.0], "LON": [20.0, 170.0, -100.0]})
    pts.to_csv(tmp_path / "g.csv", index=False)
    gdf_pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(pts.LON, pts.LAT), crs=4326)
    m = tiny()
    a = m.predict(torch.randn(4, 12), top_k=3, gallery=str(tmp_path / "g.csv"))
    b = m.predict(torch.randn(4, 12), top_k=3, gallery=gdf_pts)
    for r in (a, b):
        assert set(map(tuple, r[["lat", "lon"]].to_numpy())) <= set(
            map(tuple, pts[["LAT", "LON"]].to_numpy()))


def test_gallery_cache_memory_and_disk(tmp_path):
    m = tiny(tmp_path)
    counter = CountingEmbed(m)
    x = torch.randn(2, 12)
    first = m.predict(x, gallery="fibonacci:300")
    second = m.predict(x, gallery="fibonacci:300")
    assert counter.calls == 1  # the gallery was embedded once
    assert first.equals(second)
    files = list(tmp_path.glob("gallery-*.safetensors"))
    assert len(files) == 1
    # a fresh model with the same weights reuses the disk cache
    fresh = tiny(tmp_path)
    fresh_counter = CountingEmbed(fresh)
    third = fresh.predict(x, gallery="fibonacci:300")
    assert fresh_counter.calls == 0
    assert np.allclose(third.prob, first.prob)
    # changed weights -> new key -> recomputed
    with torch.no_grad():
        fresh.location_encoder.LocEnc0.head[0].bias.add_(0.1)
    fresh.predict(x, gallery="fibonacci:300")
    assert fresh_counter.calls == 1
    assert len(list(tmp_path.glob("gallery-*.safetensors"))) == 2


def test_corrupt_cache_file_is_recomputed(tmp_path):
    m = tiny(tmp_path)
    m.gallery_embeddings("fibonacci:40")
    (path,) = tmp_path.glob("gallery-*.safetensors")
    path.write_bytes(b"garbage")
    fresh = tiny(tmp_path)
    counter = CountingEmbed(fresh)
    with pytest.warns(UserWarning, match="unreadable"):
        emb = fresh.gallery_embeddings("fibonacci:40")
    assert counter.calls == 1 and emb.shape == (40, 8)


# -- maps --------------------------------------------------------------------------------

def test_probability_map_mass_is_area_aware_softmax():
    m = tiny()
    x = torch.randn(2, 12)
    da = m.probability_map(x, resolution=10.0)
    assert da.dims == ("query", "lat", "lon") and da.shape == (2, 18, 36)
    assert da.rio.crs.to_epsg() == 4326 and da.attrs["units"] == "1"
    np.testing.assert_allclose(da.sum(("lat", "lon")).values, 1.0, atol=1e-9)
    # independent reference: exp(scale * cos) * cell area, normalised
    grid = LatLonGrid.global_(10.0)
    sim = m.probability_map(x, resolution=10.0, kind="similarity").values
    w = np.exp(m.logit_scale.exp().item() * sim) * grid.cell_area_sr()[None, :, None]
    np.testing.assert_allclose(da.values, w / w.sum((1, 2), keepdims=True), rtol=1e-4)


def test_probability_map_bbox_and_kind_errors():
    m = tiny()
    da = m.probability_map(torch.randn(1, 12), resolution=5.0, bbox=(170, -10, -170, 10))
    assert da.shape == (1, 4, 4)
    assert float(da.sum()) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="kind"):
        m.probability_map(torch.randn(1, 12), resolution=10.0, kind="density")


# -- checkpoints -------------------------------------------------------------------------

def test_save_load_roundtrip(tmp_path):
    m = tiny(sigmas=(1.0, 32.0), gallery="fibonacci:64")
    with torch.no_grad():
        m.logit_scale.fill_(2.5)
    m.queue.push(torch.tensor([[1.0, 2.0]]))
    path = m.save(tmp_path / "m.safetensors")
    back = GeoCLIP.load(path, cache_dir=False)
    for (k, v), (k2, v2) in zip(m.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert back.location_encoder.sigmas == (1.0, 32.0) and back.gallery == "fibonacci:64"
    x = torch.randn(3, 12)
    assert m.predict(x).equals(back.predict(x))
    with pytest.raises(FileExistsError):
        m.save(path)
    m.save(path, overwrite=True)


def test_load_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a geodiffloc GeoCLIP"):
        GeoCLIP.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="safetensors"):
        GeoCLIP.load(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="does not exist"):
        GeoCLIP.load(tmp_path / "missing.safetensors")


def test_load_with_wrong_shapes_raises(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = tiny().save(tmp_path / "m.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    cfg = json.loads(meta["config"])
    cfg["hidden_dim"] = 32
    meta["config"] = json.dumps(cfg)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="do not fit"):
        GeoCLIP.load(tmp_path / "bad.safetensors")


# -- errors ------------------------------------------------------------------------------

def test_error_paths():
    m = tiny()
    with pytest.raises(ValueError, match="top_k"):
        m.predict(torch.randn(1, 12), top_k=11, gallery="fibonacci:10")
    with pytest.raises(ValueError, match="top_k"):
        m.predict(torch.randn(1, 12), top_k=0, gallery="fibonacci:10")
    with pytest.raises(ValueError, match="empty"):
        m.predict(torch.randn(1, 12), gallery=np.zeros((0, 2)))
    with pytest.raises(ValueError, match="empty"):
        Gallery(torch.zeros(0, 2))
    x = torch.randn(3, 12)
    x[1, 4] = float("nan")
    with pytest.raises(ValueError, match="query 1 has NaN"):
        m.predict(x, gallery="fibonacci:10")
    with pytest.raises(ValueError, match="input_kind='head'"):
        m.predict(torch.randn(2, 8), gallery="fibonacci:10")
    with pytest.raises(ValueError, match="no image backbone"):
        m.predict(["photo.jpg"], gallery="fibonacci:10")
    with pytest.raises(ValueError, match="unknown gallery"):
        m.predict(torch.randn(1, 12), gallery="mars")
    with pytest.raises(ValueError, match="on meta"):
        m(torch.zeros(1, 12, device="meta"), torch.zeros(1, 2))
