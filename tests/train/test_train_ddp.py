"""Multi-process training: Lightning's DDP strategy, 2 CPU processes over gloo.

Run through the CLI in a subprocess: ``strategy="ddp"`` re-launches the running
command once per extra rank, which is the ``geodiffloc train`` command here (inside
pytest it would re-launch pytest itself).

The GeoCLIP case runs in the default CI job (~25-50 s, almost all of it two Python
start-ups importing torch and Lightning one after the other; training and the gathered
validation take ~2 s); LocDiff and HierLoc, which add nothing to the gather and
bookkeeping checks but their own unused-parameter hazards, are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from train_helpers import make_synthetic, tiny_config

N, N_VAL = 125, 25  # an odd validation set: the distributed sampler pads one rank


@pytest.mark.parametrize("family", [
    "geoclip",
    pytest.param("locdiff", marks=pytest.mark.slow),
    pytest.param("hierloc", marks=pytest.mark.slow)])
def test_ddp_two_cpu_processes(tmp_path, family):
    emb, ll = make_synthetic(N, dim=8)
    np.savez(tmp_path / "data.npz", embeddings=emb[:-N_VAL].numpy(),
             latlon=ll[:-N_VAL].numpy(), val_embeddings=emb[-N_VAL:].numpy(),
             val_latlon=ll[-N_VAL:].numpy())
    cfg = tiny_config(family, tmp_path / "run",
                      trainer={"strategy": "ddp", "devices": 2, "max_steps": 6})
    cfg["data"].update(source="arrays", path=str(tmp_path / "data.npz"), batch_size=16)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "geodiffloc", "train", family, "--config", "cfg.yaml",
         "--no-progress"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "distributed_backend=gloo" in log and "All distributed processes registered" in log
    # printed once (rank 0 only)
    assert proc.stdout.count(f"trained {family}: 6 steps") == 1
    out = tmp_path / "run"
    metrics = json.loads((out / "metrics.json").read_text())
    # each rank saw half of every batch, optimiser steps are shared
    assert metrics["global_step"] == 6
    # 25 validation items over 2 ranks: the padded duplicate is counted once
    assert metrics["metrics"]["val/n"] == N_VAL
    if family == "geoclip":
        from geodiffloc import GeoCLIP
        from geodiffloc.metrics import summarize

        model = GeoCLIP.load(out / "model.safetensors", cache_dir=False)
        gdf = model.predict(emb[-N_VAL:])
        ref = summarize(np.c_[gdf["lat"], gdf["lon"]], ll[-N_VAL:].numpy())
        assert metrics["metrics"]["val/median_km"] == pytest.approx(ref["median_km"], rel=1e-9)
    elif family == "hierloc":
        from geodiffloc import HierLoc

        model = HierLoc.load(out / "model.safetensors")
        assert model.input_dim == 8 and model.n_negatives == 8
    else:
        from geodiffloc import LocDiff

        assert LocDiff.load(out / "model.safetensors").cond_dim == 8
