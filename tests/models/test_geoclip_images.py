"""GeoCLIP with a (tiny, random) open_clip backbone: image inputs, ten-crop, text maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

open_clip = pytest.importorskip("open_clip")

from geodiffloc.encoders.openclip import OpenCLIPImageEncoder  # noqa: E402
from geodiffloc.models.geoclip import GeoCLIP  # noqa: E402
from geodiffloc.sphere import LatLonGrid  # noqa: E402

NAME = "geodiffloc-tiny-geoclip"
CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16,
                   "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> GeoCLIP:
    path = tmp_path_factory.mktemp("oc") / f"{NAME}.json"
    path.write_text(json.dumps(CFG))
    open_clip.add_model_config(path)
    enc = OpenCLIPImageEncoder(NAME, pretrained=None)
    return GeoCLIP(backbone_dim=16, embed_dim=8, n_freqs=8, hidden_dim=16, queue_size=8,
                   backbone=enc, gallery="fibonacci:500", cache_dir=False, seed=0).eval()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        arr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        p = folder / f"p{i}.jpg"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


def test_predict_from_image_paths_equals_predict_from_features(model, photos):
    from_paths = model.predict(photos, top_k=2)
    feats = model.backbone.encode(photos)
    from_feats = model.predict(feats, top_k=2)
    assert len(from_paths) == 6 and from_paths.crs.to_epsg() == 4326
    assert (from_paths.gallery_index.to_numpy() == from_feats.gallery_index.to_numpy()).all()
    np.testing.assert_allclose(from_paths.prob, from_feats.prob, rtol=1e-5)


def test_ten_crop_averages_view_probabilities(model, photos):
    gdf = model.predict(photos[:2], ten_crop=True)
    assert gdf.attrs["ten_crop"] and len(gdf) == 2
    views = model.backbone.encode_views(photos[:2])  # (2, 10, 16)
    g = model.resolve_gallery().latlon.float()
    with torch.no_grad():
        h = F.normalize(model.project(views), dim=-1)
        loc = F.normalize(model.location_encoder(g), dim=1)
        p = (model.logit_scale.exp() * h @ loc.T).softmax(-1).mean(1)
    assert (gdf.gallery_index.to_numpy() == p.argmax(1).numpy()).all()
    np.testing.assert_allclose(gdf.prob, p.max(1).values.numpy(), rtol=1e-4)


def test_text_similarity_map_uses_text_tower_and_head(model):
    da = model.text_similarity_map(["desert", "Niagara Falls"], resolution=30.0)
    assert da.dims == ("query", "lat", "lon") and da.shape == (2, 6, 12)
    assert list(da["query"].values) == ["desert", "Niagara Falls"]
    text = model.backbone.text_encoder()
    grid = LatLonGrid.global_(30.0)
    with torch.no_grad():
        t = F.normalize(model.project(text.encode(["desert", "Niagara Falls"])), dim=1)
        loc = F.normalize(model.location_encoder(grid.latlon().float()), dim=1)
    ref = (t @ loc.T).reshape(2, 6, 12).numpy()
    np.testing.assert_allclose(da.values, ref, atol=1e-5)
    mass = model.text_similarity_map("desert", resolution=30.0, kind="mass")
    assert float(mass.sum()) == pytest.approx(1.0, abs=1e-9)


def test_backbone_dimension_must_match(model):
    with pytest.raises(ValueError, match="16-d"):
        GeoCLIP(backbone_dim=24, embed_dim=8, n_freqs=4, hidden_dim=8, queue_size=4,
                backbone=model.backbone, cache_dir=False)


def test_lazy_backbone_spec_builds_on_first_use(model):
    m = GeoCLIP(backbone_dim=16, embed_dim=8, n_freqs=4, hidden_dim=8, queue_size=4,
                backbone=f"{NAME}/none", cache_dir=False, seed=0)
    assert m._backbone is None  # nothing built (or downloaded) at construction
    assert m.backbone.name == f"open_clip:{NAME}/random:image"
