"""Training LocDiff with ``geodiffloc.train.train`` on tiny synthetic data (CPU, seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import Recorder, make_synthetic, tiny_config

from geodiffloc import LocDiff
from geodiffloc.metrics import summarize
from geodiffloc.train import GeoDataModule, train

N, N_VAL = 160, 32


def _datamodule(emb, ll):
    return GeoDataModule.from_tensors(emb[:-N_VAL], ll[:-N_VAL], val_embeddings=emb[-N_VAL:],
                                      val_latlon=ll[-N_VAL:], encoder="synthetic",
                                      batch_size=32, val_batch_size=256)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(N, dim=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    emb, ll = data
    out = tmp_path_factory.mktemp("locdiff")
    rec = Recorder(emb[:-N_VAL], ll[:-N_VAL])
    model, results = train(tiny_config("locdiff", out), datamodule=_datamodule(emb, ll),
                           callbacks=[rec])
    return out, model, results, rec


def test_loss_decreases_and_steps_are_counted(run):
    _, _, results, rec = run
    assert results["global_step"] == 8
    assert rec.steps == list(range(8))
    # the model's own loss on the training data with fixed noise, before vs after
    assert rec.losses["end"] < 0.9 * rec.losses["start"], rec.losses


def test_outputs_best_and_last_checkpoints(run):
    out, _, results, _ = run
    ckpts = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts
    assert any(n.startswith("best-") for n in ckpts)
    assert Path(results["best_checkpoint"]).is_file()
    assert Path(results["last_checkpoint"]).name == "last.ckpt"
    assert (out / "config.yaml").is_file() and (out / "metrics.json").is_file()
    # checkpoints hold only plain data: they load with weights_only=True
    state = torch.load(results["last_checkpoint"], weights_only=True)
    assert state["global_step"] == 8


def test_metrics_are_the_exported_models_and_can_be_recomputed(run, data):
    _, _, results, _ = run
    emb, ll = data
    m = results["metrics"]
    accs = [m[f"val/acc@{t}km"] for t in (1, 25, 200, 750, 2500)]
    assert all(0.0 <= a <= 100.0 for a in accs)
    assert accs == sorted(accs)
    assert m["val/n"] == N_VAL and np.isfinite(m["val/loss"])
    # independent recomputation: the exported model, the validation sampler settings
    # (dpm++, 4 steps, one sample, seed 0 * 7919 + batch 0), metrics.summarize
    model = LocDiff.load(results["model_path"])
    gdf = model.predict(emb[-N_VAL:], n_views=1, aggregate="centroid", sampler="dpm++",
                        steps=4, seed=0)
    ref = summarize(np.c_[gdf["lat"], gdf["lon"]], ll[-N_VAL:].numpy())
    assert m["val/median_km"] == pytest.approx(ref["median_km"], rel=1e-9)
    assert m["val/acc@2500km"] == pytest.approx(ref["acc@2500km_%"])


def test_exported_model_equals_best_checkpoint_and_predicts_identically(run, data):
    _, model, results, _ = run
    emb, _ = data
    assert results["weights"] == "best"
    loaded = LocDiff.load(results["model_path"])
    assert loaded.encoder_record == {"name": "synthetic", "dim": 16}
    best = torch.load(results["best_checkpoint"], weights_only=True)["state_dict"]
    for k, v in load_file(results["model_path"]).items():
        torch.testing.assert_close(v, best[f"model.net.{k}"], rtol=0, atol=0)
    a = model.predict(emb[:5], n_views=2, sampler="ddim", steps=5, seed=3)
    b = loaded.predict(emb[:5], n_views=2, sampler="ddim", steps=5, seed=3)
    np.testing.assert_array_equal(a[["lat", "lon"]].to_numpy(), b[["lat", "lon"]].to_numpy())


def test_same_seed_same_model(run, data, tmp_path):
    _, _, results, _ = run
    emb, ll = data
    _, again = train(tiny_config("locdiff", tmp_path), datamodule=_datamodule(emb, ll))
    w1, w2 = load_file(results["model_path"]), load_file(again["model_path"])
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=0)
    assert again["metrics"]["val/median_km"] == results["metrics"]["val/median_km"]


def test_resume_continues_from_the_saved_step(run, data):
    out, _, results, _ = run
    emb, ll = data
    rec = Recorder()
    _, res2 = train(tiny_config("locdiff", out), datamodule=_datamodule(emb, ll),
                    resume=results["last_checkpoint"], max_steps=12, callbacks=[rec])
    assert rec.steps[0] == 8 and rec.steps == list(range(8, 12))
    assert res2["global_step"] == 12
    assert torch.load(res2["last_checkpoint"], weights_only=True)["global_step"] == 12
    assert LocDiff.load(res2["model_path"]).L == 3


def test_refuses_to_mix_runs_in_one_folder(run, data):
    out, _, _, _ = run
    emb, ll = data
    with pytest.raises(ValueError, match=r"already holds checkpoints.*[Rr]esume"):
        train(tiny_config("locdiff", out), datamodule=_datamodule(emb, ll))
    with pytest.raises(FileNotFoundError, match="resume checkpoint"):
        train(tiny_config("locdiff", out), datamodule=_datamodule(emb, ll),
              resume=out / "nope.ckpt")


def test_checkpoints_are_written_atomically(run, data, monkeypatch):
    """A save that dies half-way leaves the previous last.ckpt intact and no temp file."""
    import subprocess

    import geodiffloc.train.checkpoint_io as cio

    out, _, results, _ = run
    emb, ll = data
    ckpts = out / "checkpoints"
    before = (ckpts / "last.ckpt").read_bytes()
    step = torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"]
    # a temporary of a killed run (its pid is gone) is removed when the next run starts
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = ckpts / f"{cio.TMP_PREFIX}{dead.pid}-last.ckpt.abc.tmp"
    stale.write_bytes(b"half a checkpoint")

    def dies_half_way(obj, fh, *a, **kw):
        fh.write(b"PK\x03\x04 torn")  # a partial write, then the process "dies"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cio.torch, "save", dies_half_way)
    with pytest.raises(OSError, match="No space"):
        train(tiny_config("locdiff", out), datamodule=_datamodule(emb, ll),
              resume=results["last_checkpoint"], max_steps=step + 4)
    assert not stale.exists()
    assert (ckpts / "last.ckpt").read_bytes() == before  # the old state, whole
    assert not [p.name for p in ckpts.iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == step
