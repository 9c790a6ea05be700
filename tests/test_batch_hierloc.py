"""HierLoc behind ``locate`` / ``locate_batch`` / ``geodiffloc locate --model hierloc:PATH``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pipeline_helpers import HashWordEncoder

from geodiffloc import HierLoc
from geodiffloc.cli.main import main
from geodiffloc.data import EntityHierarchy
from geodiffloc.pipeline import locate, locate_batch, resolve_runner
from geodiffloc.sphere.distance import geodesic_km

pytest.importorskip("lightning")
pytest.importorskip("zarr")

TOWNS = {  # town: (country, lat, lon)
    "Lyon": ("France", 45.76, 4.84), "Marseille": ("France", 43.30, 5.37),
    "Bergen": ("Norway", 60.39, 5.32), "Tromsø": ("Norway", 69.65, 18.96),
}
FAST = {"resolution": 10.0, "progress": False, "countries_scale": "lowres"}


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny HierLoc (2 countries > 4 towns) trained on captions; saved to a checkpoint."""
    enc = HashWordEncoder()
    recs = [{"entity_id": c, "name": c, "lat": lat, "lon": lon}
            for c, lat, lon in (("France", 44.5, 5.1), ("Norway", 65.0, 12.0))]
    recs += [{"entity_id": t, "name": t, "parent": c, "lat": lat, "lon": lon}
             for t, (c, lat, lon) in TOWNS.items()]
    h = EntityHierarchy.from_records(recs, level_names=("country", "city"))
    caps = [f"{pre} {t}, {c}" for t, (c, _, _) in TOWNS.items()
            for pre in ("a street in", "near", "the harbour of", "old town")]
    ll = torch.tensor([[TOWNS[c.split(" ")[-2].rstrip(",")][1],
                        TOWNS[c.split(" ")[-2].rstrip(",")][2]] for c in caps],
                      dtype=torch.float64)
    m = HierLoc(h, input_dim=enc.dim, embed_dim=4, hidden_dim=32, encoder=enc, seed=0)
    m.fit(enc.encode(caps), ll, steps=80, batch_size=16, lr=1e-2, entity_lr=3e-2,
          progress=False)
    path = m.save(tmp_path_factory.mktemp("hl") / "hierloc.safetensors")
    return path, enc


def test_locate_with_a_hierloc_checkpoint(trained):
    path, enc = trained
    for spec in (f"hierloc:{path}", str(path)):  # named, or detected from the file
        runner = resolve_runner(spec, encoder=enc)
        assert runner.kind == "hierloc"
    res = locate(["Lyon, France", "harbour of Bergen, Norway"], model=f"hierloc:{path}",
                 encoder=enc, **FAST)
    p = res.predictions
    assert p.crs.to_epsg() == 4326 and list(p["query"]) == ["Lyon, France",
                                                              "harbour of Bergen, Norway"]
    # the top entity is the right town: its centroid, its name and its country
    d = geodesic_km(p["lat"].to_numpy(), p["lon"].to_numpy(), np.array([45.76, 60.39]),
                    np.array([4.84, 5.32]))
    assert (d < 1.0).all()
    assert list(p["place"]) == ["Lyon, France", "Bergen, Norway"]
    assert list(p["country"]) == ["France", "Norway"]
    assert ((p["confidence"] > 0.25) & (p["confidence"] <= 1.0)).all()
    # the field is the leaf masses on the grid: cell masses summing to 1 per query
    np.testing.assert_allclose(res.field.sum(dim=("lat", "lon")).values, 1.0, rtol=1e-6)
    top = res.top_countries(1)
    assert list(top["country"]) == ["France", "Norway"]


def test_locate_batch_and_the_cli_with_hierloc(trained, tmp_path, monkeypatch, capsys):
    path, enc = trained
    src = tmp_path / "d.txt"
    src.write_text("near Marseille, France\n\nold town Tromsø, Norway\n", encoding="utf-8")
    res = locate_batch(src, tmp_path / "out", model=str(path), encoder=enc, fields=True,
                       scheduler="serial", chunk_size=1, **FAST)
    assert (res.n_new, res.n_skipped) == (2, 1)
    gdf = res.predictions().sort_values("row")
    assert list(gdf["country"]) == ["France", "Norway"]
    assert res.fields().shape == (2, 18, 36)
    # the CLI: the encoder is rebuilt from the name the checkpoint records
    import geodiffloc.pipeline.models as models

    monkeypatch.setattr(models, "_encoder_for", lambda m: enc)
    out = tmp_path / "cli"
    assert main(["locate", "near Marseille, France", "--model", f"hierloc:{path}", "-o",
                 str(out), "--resolution", "10", "--no-progress"]) == 0
    assert (out / "predictions.gpkg").exists()


def test_hierloc_model_names_are_checked(trained, tmp_path):
    path, enc = trained
    with pytest.raises(ValueError, match="hierloc:PATH"):
        resolve_runner("hierloc")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_runner(f"hierloc:{tmp_path / 'missing.safetensors'}")
    # an object works too, with the encoder it records checked against the one given
    model = HierLoc.load(path)
    assert resolve_runner(model, encoder=enc).kind == "hierloc"
    with pytest.raises(ValueError):
        resolve_runner(model, encoder=HashWordEncoder(dim=32, name="test:other"))
