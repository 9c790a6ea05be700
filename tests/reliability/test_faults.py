"""kill -9 at every file-system commit point of ``locate`` and during first-use training.

A forked child runs the real code and SIGKILLs itself at a chosen point (the k-th
``os.replace``: each atomic file, the commit record, each publishing rename) or after
a random delay; the parent then checks that nothing half-made is visible and that the
next run completes with outputs identical to those of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rel_helpers import HashWords, save_tiny_model, tiny_config

from geodiffloc.pipeline import default_model, default_model_path, locate
from geodiffloc.pipeline.locate import OUTPUT_FILES

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
QUERIES = ["Kyoto temple", "a harbour in Norway"]


def _locate(model: Path, out: Path) -> None:
    locate(QUERIES, model=model, encoder=HashWords(), out_dir=out, resolution=10.0,
           n_samples=2, sampler="ddim", steps=2, progress=False, countries_scale="lowres")


def _in_child(fn, *, kill_at_replace: int | None = None, kill_after_s: float | None = None
              ) -> int:
    """Run ``fn`` in a forked child that SIGKILLs itself at the chosen point; return the
    child's wait status."""
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            if kill_at_replace is not None:
                real, count = os.replace, [0]

                def replace(a, b):
                    count[0] += 1
                    if count[0] == kill_at_replace:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return real(a, b)

                os.replace = replace
            if kill_after_s is not None:
                signal.signal(signal.SIGALRM, lambda *a: os.kill(os.getpid(), signal.SIGKILL))
                signal.setitimer(signal.ITIMER_REAL, kill_after_s)
            fn()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return status


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


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    model = save_tiny_model(root / "tiny.safetensors")
    out = root / "reference"
    real, count = os.replace, [0]

    def counting(a, b):
        count[0] += 1
        return real(a, b)

    os.replace = counting
    t0 = time.perf_counter()
    try:
        _locate(model, out)
    finally:
        os.replace = real
    return root, model, _contents(out), count[0], time.perf_counter() - t0


def _check_after_kill(out: Path, model: Path, ref: dict) -> str:
    """The next run's view: complete outputs identical to the reference, no leftovers."""
    try:
        _locate(model, out)  # recovers a committed set first, or writes afresh
        how = "rerun"
    except FileExistsError:  # the killed run had committed: its set was completed
        how = "rolled forward"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(OUTPUT_FILES.values()), names  # no temp files, no staging
    assert _same(_contents(out), ref)
    return how


def test_kill_at_every_commit_point_of_locate(reference):
    root, model, ref, n_points, _ = reference
    assert n_points >= len(OUTPUT_FILES) + 1  # files, the commit record, the renames
    seen = set()
    for k in range(1, n_points + 1):
        out = root / f"kill-{k}"
        status = _in_child(lambda out=out: _locate(model, out), kill_at_replace=k)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        visible = [p for p in out.iterdir() if not p.name.startswith(".")] \
            if out.exists() else []
        # never a half file: whatever is visible opens and is a finished output
        for p in visible:
            assert p.name in OUTPUT_FILES.values() and p.stat().st_size > 0
        seen.add(_check_after_kill(out, model, ref))
    assert seen == {"rerun", "rolled forward"}  # both recovery paths were exercised


def test_kill_at_random_times_during_locate(reference):
    root, model, ref, _, duration = reference
    rng = random.Random(0)
    for i in range(3):
        out = root / f"random-{i}"
        _in_child(lambda out=out: _locate(model, out),
                  kill_after_s=rng.uniform(0.05, 1.2) * duration)
        _check_after_kill(out, model, ref)


def _weights_digest(model) -> str:
    h = hashlib.sha256()
    for k, v in model.net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def test_kill_during_first_use_training(tmp_path):
    cfg, enc = tiny_config(epochs=3), HashWords()
    ref, _ = default_model(config=cfg, encoder=enc, cache_dir=tmp_path / "ref", progress=False)
    cache = tmp_path / "killed"
    models = cache / "models"

    def train():
        torch.set_num_threads(1)
        default_model(config=cfg, encoder=enc, cache_dir=cache, progress=False)

    pid = os.fork()
    if pid == 0:
        try:
            train()
        finally:
            os._exit(0)
    t0 = time.monotonic()
    while not list(models.glob(".train-*")) and time.monotonic() - t0 < 300:
        time.sleep(0.05)
    time.sleep(random.Random(1).uniform(0.0, 0.5))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
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
