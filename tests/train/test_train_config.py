"""Training configs: defaults merged, every key checked, clear errors."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from geodiffloc.train import default_config, load_config

REPO = Path(__file__).resolve().parents[2]


def _base(family="locdiff", **over):
    cfg = {"family": family, "data": {"source": "gazetteer"}}
    cfg.update(over)
    return cfg


def test_partial_config_is_completed_with_defaults():
    cfg = load_config(_base(trainer={"max_epochs": 3}))
    assert cfg["trainer"]["max_epochs"] == 3
    assert cfg["trainer"]["accelerator"] == "auto"  # untouched default
    assert cfg["data"]["gazetteer"]["n_train"] == default_config("locdiff")["data"][
        "gazetteer"]["n_train"]
    assert cfg["out_dir"] == str(Path("runs") / "locdiff")
    assert "loss" in cfg and "loss" not in load_config(_base("geoclip"))


def test_model_defaults_follow_the_model_constructors():
    from geodiffloc import GeoCLIP, LocDiff

    ld = load_config(_base())["model"]
    assert ld["L"] == inspect.signature(LocDiff).parameters["L"].default
    gc = load_config(_base("geoclip"))["model"]
    sig = inspect.signature(GeoCLIP).parameters
    assert gc["queue_size"] == sig["queue_size"].default
    assert gc["sigmas"] == list(sig["sigmas"].default)
    # the widths the data decide are not settable
    with pytest.raises(ValueError, match=r"unknown key.*cond_dim"):
        load_config(_base(model={"cond_dim": 8}))
    with pytest.raises(ValueError, match=r"unknown key.*backbone_dim"):
        load_config(_base("geoclip", model={"backbone_dim": 8}))


def test_geoclip_defaults_are_the_papers():
    o = load_config(_base("geoclip"))["optim"]
    assert (o["lr"], o["weight_decay"], o["gamma"], o["step_size"]) == (3e-5, 1e-6, 0.87, 1)


def test_unknown_keys_name_the_allowed_ones_and_a_close_match():
    with pytest.raises(ValueError, match=r"unknown key\(s\) in trainer: 'max_epoch' "
                                         r"\(did you mean 'max_epochs'\?\)"):
        load_config(_base(trainer={"max_epoch": 3}))
    with pytest.raises(ValueError, match=r"unknown key.*'colour'.*Allowed: .*family"):
        load_config(_base(colour="red"))
    with pytest.raises(ValueError, match=r"in data.gazetteer: 'ntrain'"):
        load_config(_base(data={"source": "gazetteer", "gazetteer": {"ntrain": 5}}))


def test_missing_and_conditional_required_keys():
    with pytest.raises(ValueError, match="no 'family'"):
        load_config({"data": {"source": "gazetteer"}})
    with pytest.raises(ValueError, match=r"missing required key\(s\): data.source"):
        load_config({"family": "locdiff"})
    with pytest.raises(ValueError, match=r"data.path is required.*feature store folder"):
        load_config(_base(data={"source": "feature_store"}))
    with pytest.raises(ValueError, match=r"data.encoder is required"):
        load_config(_base(data={"source": "csv", "path": "x.csv"}))
    with pytest.raises(ValueError, match="family must be one of"):
        load_config({"family": "diffusion", "data": {"source": "gazetteer"}})


@pytest.mark.parametrize("section,key,value,msg", [
    ("data", "batch_size", 0, "data.batch_size must be >= 1"),
    ("data", "batch_size", 2.5, "data.batch_size must be an integer"),
    ("data", "source", "parquet", "data.source must be one of"),
    ("optim", "lr", "fast", "optim.lr must be a number"),
    ("optim", "lr", -1.0, "optim.lr must be > 0"),
    ("trainer", "precision", "16-true", "half-precision"),
    ("trainer", "accelerator", "quantum", "trainer.accelerator must be one of"),
    ("validation", "sampler", "euler", "validation.sampler must be one of"),
    ("validation", "steps", 500, "cannot exceed"),
    ("checkpoint", "mode", "best", "checkpoint.mode must be one of"),
    ("export", "weights", "final", "export.weights must be one of"),
    ("validation", "sampler", "heun", r"one of 'ddpm', 'ddim' or 'dpm\+\+'; got 'heun'"),
    ("loss", "aux_weight", -1.0, "loss.aux_weight must be >= 0"),
    ("loss", "anchors", "local", "loss.anchors must be one of 'uniform' or 'mixed'"),
    ("optim", "betas", [0.9], "optim.betas"),
    ("trainer", "logger", "wandb", "trainer.logger must be one of 'csv', 'tensorboard'"),
    ("data", "pin_memory", "maybe", "data.pin_memory must be true or false"),
])
def test_bad_values_are_rejected_with_the_key_name(section, key, value, msg):
    cfg = _base()
    cfg.setdefault(section, {})[key] = value
    if section == "data":
        cfg["data"] = {"source": "gazetteer", **cfg["data"]}
    with pytest.raises(ValueError, match=msg):
        load_config(cfg)


def test_training_must_stop():
    with pytest.raises(ValueError, match=r"max_epochs or trainer.max_steps"):
        load_config(_base(trainer={"max_epochs": None, "max_steps": -1}))


def test_yaml_exponent_strings_are_numbers(tmp_path):
    # PyYAML reads "3e-5" (no dot) as a string; a config must still mean the number
    p = tmp_path / "c.yaml"
    p.write_text("family: geoclip\ndata: {source: gazetteer}\noptim: {lr: 3e-5}\n")
    assert yaml.safe_load(p.read_text())["optim"]["lr"] == "3e-5"
    assert load_config(p)["optim"]["lr"] == pytest.approx(3e-5)


def test_overrides_are_merged_and_validated():
    cfg = load_config(_base(trainer={"max_epochs": 3, "devices": 1}),
                      overrides={"trainer": {"max_epochs": 7}})
    assert (cfg["trainer"]["max_epochs"], cfg["trainer"]["devices"]) == (7, 1)
    with pytest.raises(ValueError, match="unknown key"):
        load_config(_base(), overrides={"trainer": {"epochs": 1}})


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(lst)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg["family"] in ("locdiff", "geoclip", "hierloc", "g3")
    # every key the file sets survives unchanged (numbers up to coercion)
    raw = yaml.safe_load(path.read_text())
    for section, values in raw.items():
        if isinstance(values, dict):
            for k, v in values.items():
                if not isinstance(v, dict | float | int) or isinstance(v, bool):
                    assert cfg[section][k] == v, (section, k)


def test_several_problems_are_reported_together():
    with pytest.raises(ValueError) as e:
        load_config(_base(optim={"lr": 0, "warmup_steps": 1.5}, trainer={"devcies": 2}))
    msg = str(e.value)
    for part in ("'devcies' (did you mean 'devices'?)", "optim.lr must be > 0",
                 "optim.warmup_steps must be an integer"):
        assert part in msg


def test_file_errors_name_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("family: locdiff\ndata: {source: gazetteer}\nmodel: {L: 0}\n")
    with pytest.raises(ValueError, match=r"c\.yaml: model\.L must be >= 1; got 0"):
        load_config(p)


def test_the_schema_classes_give_the_same_config():
    from geodiffloc.train import GeoCLIPConfig, LocDiffConfig

    for fam, cls in (("locdiff", LocDiffConfig), ("geoclip", GeoCLIPConfig)):
        direct = cls.model_validate({"data": {"source": "gazetteer"}}).model_dump()
        assert direct == load_config(_base(fam))
