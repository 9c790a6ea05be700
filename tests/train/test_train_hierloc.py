"""HierLoc through the one training path: config schema, train(), CLI family."""

from __future__ import annotations

import geopandas as gpd
import pytest
import torch
from shapely.geometry import Point

pytest.importorskip("lightning")

from geodiffloc.train import GeoDataModule, load_config, train


def test_config_validates_hierarchy_section():
    cfg = load_config({"family": "hierloc", "data": {"source": "gazetteer"}})
    assert cfg["model"]["hierarchy"]["source"] == "gazetteer"
    assert cfg["optim"]["lr"] > 0
    with pytest.raises(ValueError, match=r"model\.hierarchy\.path is required"):
        load_config({"family": "hierloc", "data": {"source": "gazetteer"},
                     "model": {"hierarchy": {"source": "file"}}})
    with pytest.raises(ValueError, match="geo_weight"):
        load_config({"family": "hierloc", "data": {"source": "gazetteer"},
                     "model": {"geo_weight": 2.0}})


def test_shipped_config_is_valid():
    cfg = load_config("configs/hierloc_gazetteer.yaml")
    assert cfg["family"] == "hierloc"


def test_train_from_a_hierarchy_file_exports_a_loadable_model(tmp_path):
    from geodiffloc import HierLoc

    pts = [(0.0, 0.0), (0.0, 20.0), (20.0, 0.0), (20.0, 20.0)]
    g = gpd.GeoDataFrame({"id": ["R", "a", "b", "c", "d"],
                          "parent": [None, "R", "R", "R", "R"],
                          "name": ["root", "A", "B", "C", "D"]},
                         geometry=[Point(10, 10)] + [Point(lon, lat) for lat, lon in pts],
                         crs=4326)
    g.to_file(tmp_path / "h.gpkg")
    gen = torch.Generator().manual_seed(0)
    proto = torch.randn(4, 6, generator=gen)
    idx = torch.arange(4).repeat(30)
    x = proto[idx] + 0.1 * torch.randn(len(idx), 6, generator=gen)
    ll = torch.tensor(pts, dtype=torch.float64)[idx]
    dm = GeoDataModule.from_tensors(x, ll, val_embeddings=x[:8], val_latlon=ll[:8],
                                    batch_size=32)
    cfg = {"family": "hierloc", "data": {"source": "arrays", "path": "x"},
           "model": {"hierarchy": {"source": "file", "path": str(tmp_path / "h.gpkg")},
                     "embed_dim": 4, "hidden_dim": 16},
           "trainer": {"max_epochs": 1, "accelerator": "cpu", "logger": "none",
                       "enable_progress_bar": False, "num_sanity_val_steps": 0}}
    model, res = train(cfg, out_dir=tmp_path / "run", datamodule=dm)
    assert isinstance(model, HierLoc) and model.n_entities == 5
    assert "val/median_km" in res["metrics"]
    loaded = HierLoc.load(res["model_path"])
    assert loaded.hierarchy.frame["name"].tolist() == ["root", "A", "B", "C", "D"]
    assert torch.equal(loaded.entity_logits(x[:3]), model.entity_logits(x[:3]))


def test_cli_accepts_the_hierloc_family():
    from geodiffloc.cli.main import build_parser

    args = build_parser().parse_args(["train", "hierloc", "--config", "c.yaml"])
    assert args.family == "hierloc"
