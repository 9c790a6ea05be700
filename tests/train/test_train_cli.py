"""``geodiffloc train locdiff|geoclip --config cfg.yaml`` end to end on tiny data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from train_helpers import make_synthetic, tiny_config

from geodiffloc import GeoCLIP
from geodiffloc.cli.main import main


def _write_npz_config(tmp_path, family="geoclip", **over):
    emb, ll = make_synthetic(96, dim=8, views=2)
    np.savez(tmp_path / "data.npz", embeddings=emb.numpy(), latlon=ll.numpy())
    cfg = tiny_config(family, tmp_path / "unused", **over)
    cfg["data"].update(source="arrays", path=str(tmp_path / "data.npz"), val_fraction=0.25,
                       encoder="my-encoder")
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, emb, ll


def test_cli_trains_from_an_npz_and_exports_a_loadable_model(tmp_path, capsys):
    cfg, emb, _ = _write_npz_config(tmp_path)
    out = tmp_path / "run"
    rc = main(["train", "geoclip", "--config", str(cfg), "--out", str(out), "--max-steps", "4",
               "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "trained geoclip: 4 steps" in text and "val/median_km" in text
    model = GeoCLIP.load(out / "model.safetensors", cache_dir=False)
    assert model.encoder_record == {"name": "my-encoder", "dim": 8}
    assert len(model.predict(emb[:3, 0])) == 3
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 4 and saved["out_dir"] == str(out)
    # --resume with more steps continues the same run in the same folder
    rc = main(["train", "geoclip", "--config", str(cfg), "--out", str(out), "--max-steps", "6",
               "--resume", str(out / "checkpoints" / "last.ckpt"), "--no-progress"])
    assert rc == 0 and "trained geoclip: 6 steps" in capsys.readouterr().out
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_cli_errors_are_clear(tmp_path, capsys):
    cfg, _, _ = _write_npz_config(tmp_path)
    assert main(["train", "locdiff", "--config", str(cfg)]) == 2
    assert "is a 'geoclip' config" in capsys.readouterr().err
    assert main(["train", "geoclip", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("max_steps:", "max_stepz:"))
    assert main(["train", "geoclip", "--config", str(bad)]) == 2
    assert "did you mean 'max_steps'" in capsys.readouterr().err
    # the npz must hold the documented arrays
    np.savez(tmp_path / "data.npz", emb=np.zeros((3, 8)))
    assert main(["train", "geoclip", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    assert "lacks array(s) ['embeddings', 'latlon']" in capsys.readouterr().err


def test_gazetteer_text_task_trains_offline(tmp_path, monkeypatch):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("reverse_geocode")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from geodiffloc.train import train

    cfg = tiny_config("geoclip", tmp_path / "run", trainer={"max_steps": 3})
    cfg["data"] = {"source": "gazetteer", "batch_size": 16,
                   "gazetteer": {"n_train": 48, "n_test": 16, "min_population": 100_000,
                                 "cache_dir": str(tmp_path / "cache")}}
    model, results = train(cfg)
    assert model.encoder_record["name"].startswith("sentence-transformers:")
    assert model.encoder_record["dim"] == 384
    assert results["metrics"]["val/n"] == 16  # the held-out places are the validation set
    assert results["global_step"] == 3
