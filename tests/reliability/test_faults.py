"""kill -9 at every file-system commit point of ``locate`` and during first-use training.

A child forked by a clean fork server (rel_zygote.py) runs the real code and SIGKILLs
itself at a chosen point (the k-th ``os.replace``: each atomic file, the commit record,
each publishing rename) or after a random delay; the test then checks that nothing
half-made is visible and that the next run completes with outputs identical to those of
an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from PIL import Image
from rel_helpers import HashWords, env, save_tiny_model, tiny_config

from geodiffloc.pipeline import default_model, default_model_path
from geodiffloc.pipeline.locate import OUTPUT_FILES

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
ZYGOTE = Path(__file__).resolve().parent / "rel_zygote.py"


class Zygote:
    """The fork server of rel_zygote.py: one clean process, a child per request."""

    def __init__(self, cache: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ZYGOTE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env(cache, ARROW_DEFAULT_MEMORY_POOL="system"))

    def __call__(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.write(json.dumps({"job": "quit"}) + "\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    z = Zygote(tmp_path_factory.mktemp("zygote-cache"))
    yield z
    z.close()


def _contents(out: Path) -> dict[str, object]:
    """What the four outputs hold (not their bytes: GPKG/PNG embed timestamps/metadata)."""
    with rasterio.open(out / OUTPUT_FILES["raster"]) as ds:
        raster = ds.read()
    preds = gpd.read_file(out / OUTPUT_FILES["predictions"])
    return {"raster": raster,
            "preds": preds.drop(columns="geometry").to_dict("list"),
            "geometry": preds.geometry.to_wkt().tolist(),
            "countries": (out / OUTPUT_FILES["countries"]).read_text(),
            "map": np.asarray(Image.open(out / OUTPUT_FILES["map"]))}


def _same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k]
               for k in a)


def _count_replaces(model: Path, out: Path) -> int:
    """Commit points of one locate run, counted in this process (no fork needed)."""
    from geodiffloc.pipeline import locate

    real, count = os.replace, [0]

    def counting(a, b):
        count[0] += 1
        return real(a, b)

    os.replace = counting
    try:
        locate(["Kyoto temple", "a harbour in Norway"], model=model, encoder=HashWords(),
               out_dir=out, resolution=10.0, n_samples=2, sampler="ddim", steps=2,
               progress=False, countries_scale="lowres")
    finally:
        os.replace = real
    return count[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, zygote):
    root = tmp_path_factory.mktemp("faults")
    model = save_tiny_model(root / "tiny.safetensors")
    res = zygote(job="locate", out=str(root / "reference"), model=str(model))
    assert res["exit"] == 0
    n_points = _count_replaces(model, root / "counted")
    ref = _contents(root / "reference")
    assert _same(_contents(root / "counted"), ref)  # runs are reproducible
    return root, model, ref, n_points, res["seconds"]


def _check_after_kill(zygote, out: Path, model: Path, ref: dict) -> str:
    """The next run's view: complete outputs identical to the reference, no leftovers."""
    existed = sorted(p.name for p in out.iterdir()) if out.exists() else []
    res = zygote(job="locate", out=str(out), model=str(model))
    # exit 4: the next run refused (FileExistsError) because the killed run's outputs
    # had been committed and were completed by the recovery
    assert res["exit"] in (0, 4), res
    how = "rerun" if res["exit"] == 0 else "rolled forward"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(OUTPUT_FILES.values()), (names, existed)  # no temp files
    assert _same(_contents(out), ref)
    return how


def test_kill_at_every_commit_point_of_locate(reference, zygote):
    root, model, ref, n_points, _ = reference
    assert n_points >= len(OUTPUT_FILES) + 1  # files, the commit record, the renames
    seen = set()
    for k in range(1, n_points + 1):
        out = root / f"kill-{k}"
        res = zygote(job="locate", out=str(out), model=str(model), kill_at_replace=k)
        assert res["killed"], res
        visible = [p for p in out.iterdir() if not p.name.startswith(".")] \
            if out.exists() else []
        for p in visible:  # never a half file: only finished outputs are visible
            assert p.name in OUTPUT_FILES.values() and p.stat().st_size > 0
        seen.add(_check_after_kill(zygote, out, model, ref))
    assert seen == {"rerun", "rolled forward"}  # both recovery paths were exercised


def test_kill_at_random_times_during_locate(reference, zygote):
    root, model, ref, _, duration = reference
    rng = random.Random(0)
    for i in range(3):
        out = root / f"random-{i}"
        zygote(job="locate", out=str(out), model=str(model),
               kill_after_s=rng.uniform(0.05, 1.2) * duration)
        _check_after_kill(zygote, out, model, ref)


def _weights_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in model.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_kill_during_first_use_training(tmp_path, zygote):
    cfg, enc = tiny_config(epochs=3), HashWords()
    ref, _ = default_model(config=cfg, encoder=enc, cache_dir=tmp_path / "ref", progress=False)
    cache = tmp_path / "killed"
    models = cache / "models"
    res = zygote(job="train", cache=str(cache), epochs=3,
                 kill_after_train_dir_s=random.Random(1).uniform(0.0, 0.5))
    assert res["killed"], res
    assert list(models.glob(".train-*")), "the kill was meant to hit the training"
    assert not list(models.glob("*.safetensors"))  # nothing half-trained was cached
    again, _ = default_model(config=cfg, encoder=enc, cache_dir=cache, progress=False)
    assert not list(models.glob(".train-*")), "the orphan training folder was not removed"
    path = default_model_path(cfg, encoder_name=enc.name, cache_dir=cache)
    assert sorted(p.name for p in models.iterdir()) == sorted(
        [path.name, path.with_suffix(".json").name, path.with_suffix(".lock").name])
    assert _weights_digest(again) == _weights_digest(ref)


def test_a_damaged_cached_model_is_rebuilt(tmp_path):
    cfg, enc = tiny_config(epochs=1), HashWords()
    first, _ = default_model(config=cfg, encoder=enc, cache_dir=tmp_path, progress=False)
    path = default_model_path(cfg, encoder_name=enc.name, cache_dir=tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF  # one flipped bit in the weights: loads fine, but is not what was cached
    path.write_bytes(bytes(raw))
    again, _ = default_model(config=cfg, encoder=enc, cache_dir=tmp_path, progress=False)
    assert _weights_digest(again) == _weights_digest(first)
