"""Training GeoCLIP with ``geodiffloc.train.train`` on tiny synthetic data (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from train_helpers import Recorder, make_synthetic, tiny_config

from geodiffloc import GeoCLIP
from geodiffloc.metrics import summarize
from geodiffloc.train import GeoDataModule, train

N, N_VAL = 200, 40


def _datamodule(emb, ll):
    return GeoDataModule.from_tensors(emb[:-N_VAL], ll[:-N_VAL], val_embeddings=emb[-N_VAL:],
                                      val_latlon=ll[-N_VAL:], encoder="synthetic",
                                      batch_size=32, val_batch_size=256)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(N, dim=16, seed=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory, data):
    emb, ll = data
    out = tmp_path_factory.mktemp("geoclip")
    rec = Recorder(emb[:-N_VAL], ll[:-N_VAL])
    cfg = tiny_config("geoclip", out, trainer={"max_steps": 15}, optim={"lr": 1e-2})
    model, results = train(cfg, datamodule=_datamodule(emb, ll), callbacks=[rec])
    return out, model, results, rec


def test_loss_decreases_and_checkpoints_are_written(run):
    out, _, results, rec = run
    assert results["global_step"] == 15 and rec.steps == list(range(15))
    assert rec.losses["end"] < rec.losses["start"] - 0.1, rec.losses
    names = {p.name for p in (out / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in names and any(n.startswith("best-") for n in names)


def test_optimizer_and_schedule_follow_the_paper(run):
    _, _, results, _ = run
    # StepLR x0.87 per epoch: after 3 finished epochs (5 batches each) the rate is
    # 1e-2 * 0.87**3; read it back from the last checkpoint's scheduler state
    state = torch.load(results["last_checkpoint"], weights_only=True)
    assert state["optimizer_states"][0]["param_groups"][0]["weight_decay"] == 1e-6
    sched = state["lr_schedulers"][0]
    assert sched["gamma"] == 0.87 and sched["step_size"] == 1
    assert sched["_last_lr"][0] == pytest.approx(1e-2 * 0.87 ** sched["last_epoch"])


def test_retrieval_metrics_over_the_training_gallery(run, data):
    out, _, results, _ = run
    emb, ll = data
    model = GeoCLIP.load(results["model_path"], cache_dir=False)
    # the exported model's default gallery is the training locations, written next to it
    gallery = pd.read_csv(out / "gallery.csv")
    assert len(gallery) == N - N_VAL
    np.testing.assert_allclose(np.sort(gallery["LAT"]), np.sort(ll[:-N_VAL, 0].numpy()))
    gdf = model.predict(emb[-N_VAL:])
    assert gdf.attrs["gallery_size"] == N - N_VAL
    ref = summarize(np.c_[gdf["lat"], gdf["lon"]], ll[-N_VAL:].numpy())
    m = results["metrics"]
    assert m["val/n"] == N_VAL
    assert m["val/median_km"] == pytest.approx(ref["median_km"], rel=1e-9)
    assert m["val/acc@750km"] == pytest.approx(ref["acc@750km_%"])
    # learned something: better than the median error of random guessing (~10 000 km)
    assert m["val/median_km"] < 7000


def test_exported_model_loads_and_predicts_identically(run, data):
    _, model, results, _ = run
    emb, _ = data
    loaded = GeoCLIP.load(results["model_path"], cache_dir=False)
    assert loaded.encoder_record == {"name": "synthetic", "dim": 16}
    best = torch.load(results["best_checkpoint"], weights_only=True)["state_dict"]
    for k, v in load_file(results["model_path"]).items():
        torch.testing.assert_close(v, best[f"model.{k}"], rtol=0, atol=0)
    a = model.predict(emb[:7], top_k=3, gallery="fibonacci:500")
    b = loaded.predict(emb[:7], top_k=3, gallery="fibonacci:500")
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="geometry")),
                                  pd.DataFrame(b.drop(columns="geometry")))


def test_same_seed_same_model_and_resume(run, data, tmp_path):
    _, _, results, _ = run
    emb, ll = data
    cfg = tiny_config("geoclip", tmp_path, trainer={"max_steps": 15}, optim={"lr": 1e-2})
    _, again = train(cfg, datamodule=_datamodule(emb, ll))
    w1, w2 = load_file(results["model_path"]), load_file(again["model_path"])
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=0)
    # resume the second run for 5 more steps: it starts at step 15, the queue comes back
    rec = Recorder()
    last = torch.load(again["last_checkpoint"], weights_only=True)["state_dict"]
    _, res3 = train(cfg, datamodule=_datamodule(emb, ll), resume=again["last_checkpoint"],
                    max_steps=20, callbacks=[rec])
    assert rec.steps == list(range(15, 20)) and res3["global_step"] == 20
    final = torch.load(res3["last_checkpoint"], weights_only=True)["state_dict"]
    # the queue continued from the saved pointer: 5 batches of 32 pushed into 64 slots
    assert int(final["model.queue.ptr"]) == (int(last["model.queue.ptr"]) + 5 * 32) % 64


def test_a_diverging_run_stops_with_a_clear_error(data, tmp_path):
    emb, ll = data
    cfg = tiny_config("geoclip", tmp_path, trainer={"max_steps": 10}, optim={"lr": 1e30})
    with pytest.raises(FloatingPointError, match="NaN or infinite in epoch 0"):
        train(cfg, datamodule=_datamodule(emb, ll))
