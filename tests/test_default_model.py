"""The built-in default model's train-once-then-cache logic, on a tiny injected config."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging

import pytest
import torch
from pipeline_helpers import HashWordEncoder, tiny_default_config

from geodiffloc import LocDiff
from geodiffloc.pipeline import default_model, default_model_path, read_manifest

# the package re-exports the function under the module's name: fetch the module itself
dm_mod = importlib.import_module("geodiffloc.pipeline.default_model")


@pytest.fixture(autouse=True)
def _env(tmp_path_factory, monkeypatch):
    # one torch thread comes from the root conftest's session fixture (training restores
    # the count it found), so only the cache is private here
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real (tiny) first-use training run into a fresh cache folder."""
    cache = tmp_path_factory.mktemp("trained-cache")
    enc = HashWordEncoder()
    cfg = tiny_default_config()
    model, enc_out = default_model(config=cfg, encoder=enc, cache_dir=cache, progress=False)
    return cache, cfg, enc, model, enc_out


def test_first_use_trains_and_writes_checkpoint_and_manifest(trained):
    cache, cfg, enc, model, enc_out = trained
    path = default_model_path(cfg, encoder_name=enc.name, cache_dir=cache)
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert enc_out is enc
    assert isinstance(model, LocDiff) and model.L == cfg["model"]["L"]
    assert model.encoder_record == {"name": enc.name, "dim": enc.dim}
    man = read_manifest(path)
    assert man["config"] == json.loads(json.dumps(cfg))
    assert man["seed"] == cfg["seed"]
    assert man["data"]["n_train"] == cfg["data"]["n_train"]
    assert man["data"]["n_test"] == cfg["data"]["n_test"]
    held = man["metrics"]["held_out"]
    for t in (1, 25, 200, 750, 2500):
        assert 0.0 <= held[f"acc@{t}km"] <= 100.0
    # accuracy can only grow with the threshold
    accs = [held[f"acc@{t}km"] for t in (1, 25, 200, 750, 2500)]
    assert accs == sorted(accs)
    assert 0.0 <= held["median_km"] <= 20_040.0
    # the temporary Lightning run folder is gone; the checkpoint, its manifest and the
    # (empty) lock file that serialises first-use training remain
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(
        [path.name, path.with_suffix(".json").name, path.with_suffix(".lock").name])
    assert man["model_size"] == path.stat().st_size
    assert man["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_cache_hit_loads_without_training(trained, monkeypatch):
    cache, cfg, enc, model, _ = trained

    def boom(*a, **k):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(dm_mod, "train_default_model", boom)
    again, _ = default_model(config=cfg, encoder=enc, cache_dir=cache, progress=False)
    for (k, a), (_, b) in zip(model.net.state_dict().items(), again.net.state_dict().items()):
        assert torch.equal(a, b), k


def test_path_depends_on_config_and_encoder(tmp_path, monkeypatch):
    cfg = tiny_default_config()
    p = default_model_path(cfg, encoder_name="a", cache_dir=tmp_path)
    assert p == default_model_path(tiny_default_config(), encoder_name="a", cache_dir=tmp_path)
    assert p != default_model_path(cfg, encoder_name="b", cache_dir=tmp_path)
    assert p != default_model_path(tiny_default_config(seed=1), encoder_name="a",
                                   cache_dir=tmp_path)
    assert p.parent == tmp_path / "models"
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path / "env"))
    assert default_model_path(cfg, encoder_name="a").parent == tmp_path / "env" / "models"


def _stub_training(calls, model):
    def stub(cfg, *, encoder, path, overwrite, progress, embedding_cache):
        calls.append({"path": path, "overwrite": overwrite})
        return model, {}
    return stub


def test_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    cfg = tiny_default_config()
    enc = HashWordEncoder()
    path = default_model_path(cfg, encoder_name=enc.name, cache_dir=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a safetensors file")
    calls: list = []
    dummy = LocDiff(L=2, cond_dim=enc.dim, widths=(16,), encoder=enc)
    monkeypatch.setattr(dm_mod, "train_default_model", _stub_training(calls, dummy))
    # listen on our logger itself: what earlier tests or libraries did to the root logger
    # (handlers, levels, disable_existing_loggers) must not decide this test
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = seen.append  # type: ignore[method-assign]
    monkeypatch.setattr(dm_mod.log, "disabled", False)
    monkeypatch.setattr(dm_mod.log, "level", logging.WARNING)
    dm_mod.log.addHandler(handler)
    try:
        model, _ = default_model(config=cfg, encoder=enc, cache_dir=tmp_path, progress=False)
    finally:
        dm_mod.log.removeHandler(handler)
    assert any("not usable" in r.getMessage() for r in seen)
    assert model is dummy
    assert calls == [{"path": path, "overwrite": True}]


def test_retrain_replaces_a_valid_cached_model(trained, monkeypatch):
    cache, cfg, enc, _, _ = trained
    calls: list = []
    dummy = LocDiff(L=2, cond_dim=enc.dim, widths=(16,), encoder=enc)
    monkeypatch.setattr(dm_mod, "train_default_model", _stub_training(calls, dummy))
    model, _ = default_model(config=cfg, encoder=enc, cache_dir=cache, retrain=True,
                             progress=False)
    assert model is dummy and len(calls) == 1


def test_train_refuses_to_clobber_before_any_work(tmp_path):
    target = tmp_path / "m.safetensors"
    target.write_bytes(b"x")

    class Untouchable:
        name, dim, modality = "test:untouchable", 4, "text"

        def encode(self, *a, **k):
            raise AssertionError("nothing may be encoded when the target is refused")

    with pytest.raises(FileExistsError, match="overwrite"):
        dm_mod.train_default_model(tiny_default_config(), encoder=Untouchable(), path=target,
                                   progress=False)
    assert target.read_bytes() == b"x"


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="DEFAULT_MODEL_CONFIG"):
        default_model_path({"version": 1}, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs"):
        default_model_path(tiny_default_config(train={"epochs": 0}), cache_dir=tmp_path)


def test_training_leaves_the_single_torch_thread_in_place(trained):
    """The session's one-thread setting survives a first-use training (Lightning changes it
    for its run and train() restores it), so no test needs its own pinning."""
    assert torch.get_num_threads() == 1
