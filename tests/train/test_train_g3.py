"""G3 through the one training path: config, train() with exported references, CLI, locate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")

from geodiffloc.train import load_config, train

MINILM = "sentence-transformers:all-MiniLM-L6-v2"


def test_config_schema_and_shipped_config():
    cfg = load_config("configs/g3_gazetteer.yaml")
    assert cfg["family"] == "g3" and cfg["model"]["loss_weights"] == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="description_levels"):
        load_config({"family": "g3", "data": {"source": "gazetteer"},
                     "model": {"description_levels": ["street"]}})
    with pytest.raises(ValueError, match="loss_weights"):
        load_config({"family": "g3", "data": {"source": "gazetteer"},
                     "model": {"loss_weights": [1.0, 1.0]}})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from geodiffloc.data import load_gazetteer

    tmp = tmp_path_factory.mktemp("g3")
    places = load_gazetteer(min_population=500_000).sample(240, random_state=0)
    ll = places[["lat", "lon"]].to_numpy(np.float64)
    rng = np.random.default_rng(0)
    # embeddings that know the place: a random projection of its unit vector, plus noise
    xyz = np.stack([np.cos(np.radians(ll[:, 0])) * np.cos(np.radians(ll[:, 1])),
                    np.cos(np.radians(ll[:, 0])) * np.sin(np.radians(ll[:, 1])),
                    np.sin(np.radians(ll[:, 0]))], 1)
    emb = (np.tanh(xyz @ rng.normal(size=(3, 24)) * 3)
           + 0.05 * rng.normal(size=(len(ll), 24))).astype(np.float32)
    np.savez(tmp / "data.npz", embeddings=emb[:200], latlon=ll[:200],
             val_embeddings=emb[200:], val_latlon=ll[200:])
    model, res = train({
        "family": "g3", "out_dir": str(tmp / "out"), "seed": 0,
        "data": {"source": "arrays", "path": str(tmp / "data.npz"), "batch_size": 32},
        "model": {"embed_dim": 16, "n_freqs": 16, "hidden_dim": 32, "queue_size": 32,
                  "text_encoder": MINILM, "max_references": 150},
        "optim": {"lr": 3e-3},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "enable_progress_bar": False,
                    "logger": "none"},
    })
    return model, res, emb, ll


def test_train_exports_a_loadable_g3_with_its_references(run):
    from geodiffloc import G3

    _, res, emb, _ = run
    m = G3.load(res["model_path"])
    assert m.input_dim == 24 and m.text_dim == 384
    assert m.text_encoder_record["name"] == MINILM
    assert len(m.references) == 150 and m.references.name == "train"
    assert {"val/median_km", "val/acc@2500km"} <= set(res["metrics"])
    assert res["global_step"] == 2 * 7  # 200 items, batches of 32, 2 epochs
    gdf = m.predict(emb[200:205])
    assert len(gdf) == 5 and gdf.crs.to_epsg() == 4326


def test_locate_runs_a_g3_checkpoint(run):
    from geodiffloc.encoders.base import PrecomputedEmbeddings
    from geodiffloc.pipeline import resolve_runner

    _, res, emb, _ = run
    enc = PrecomputedEmbeddings(24)
    for spec in (f"g3:{res['model_path']}", res["model_path"]):
        r = resolve_runner(spec, encoder=enc)
        assert r.kind == "g3"
        preds, fld = r.predict(list(emb[200:203]), field=True, resolution=10.0)
        assert len(preds) == 3 and {"lat", "lon", "confidence"} <= set(preds.columns)
        assert np.allclose(fld.sum(("lat", "lon")).values, 1.0)
    with pytest.raises(ValueError, match="g3:PATH"):
        resolve_runner("g3")
    from geodiffloc import G3

    obj = resolve_runner(G3.load(res["model_path"]), encoder=enc)
    assert obj.kind == "g3" and len(obj.predict(list(emb[:2]))[0]) == 2


def test_cli_accepts_the_g3_family():
    from geodiffloc.cli.main import build_parser

    args = build_parser().parse_args(["train", "g3", "--config", "configs/g3_gazetteer.yaml"])
    assert args.family == "g3"


def test_fit_without_a_text_encoder_says_what_to_do():
    from geodiffloc import G3

    m = G3(input_dim=4, embed_dim=4, n_freqs=4, hidden_dim=8, queue_size=4)
    with pytest.raises(ValueError, match="text encoder"):
        m.fit(torch.randn(8, 4), torch.zeros(8, 2), steps=1, progress=False)
