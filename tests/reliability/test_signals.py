"""SIGTERM / SIGINT stop ``geodiffloc locate`` cleanly; two processes train the default once.

Every scenario runs the real CLI in its own subprocess (``rel_driver.py``: stand-in text
encoder, tiny default config); the scenarios run at the same time to keep the wall time
down. A scenario waits for its marker file (the step has started and is held open), then
sends the signal.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from rel_helpers import HashWords, save_tiny_model, start

from geodiffloc.pipeline import locate
from geodiffloc.pipeline.locate import OUTPUT_FILES

LOCATE = ["locate", "Kyoto temple", "--no-progress", "--samples", "2", "--sampler", "ddim",
          "--steps", "2", "--resolution", "10"]
WAIT_S = 400  # generous: the machine running the tests may be heavily loaded


def _wait_for(path: Path, proc, what: str) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"{what}: the process ended ({proc.returncode}) before the "
                                 f"step started: {err[-2000:]}")
        if time.monotonic() - t0 > WAIT_S:
            proc.kill()
            raise AssertionError(f"{what}: the step did not start within {WAIT_S} s")
        time.sleep(0.2)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Launch all scenarios together; return {name: (returncode, stderr, folders)}."""
    root = tmp_path_factory.mktemp("signals")
    model = save_tiny_model(root / "tiny.safetensors")
    # scenario "write": outputs of an earlier run already there
    old = root / "out-write"
    locate(["Kyoto temple"], model=model, encoder=HashWords(), out_dir=old, resolution=10.0,
           n_samples=2, sampler="ddim", steps=2, progress=False, countries_scale="lowres")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    hold = {"REL_HOLD": "600"}
    spec = {
        "train": (["-o", str(root / "out-train")], signal.SIGTERM, "REL_MARK_TRAIN",
                  {"REL_EPOCHS": "2"}),
        "sample": (["-o", str(root / "out-sample"), "--model", str(model)], signal.SIGINT,
                   "REL_MARK_SAMPLE", {}),
        "write": (["-o", str(old), "--model", str(model), "--overwrite", "--seed", "1"],
                  signal.SIGTERM, "REL_MARK_WRITE", {}),
    }
    procs = {}
    for name, (args, _, hook, extra) in spec.items():
        marker = root / f"{name}.mark"
        procs[name] = (start([*LOCATE, *args], root / f"cache-{name}",
                             **{hook: str(marker), **hold, **extra}), marker)
    train_log = root / "trainings.log"
    for name in ("twin-a", "twin-b"):  # two processes, one empty cache
        procs[name] = (start([*LOCATE, "-o", str(root / f"out-{name}")], root / "cache-twins",
                             REL_TRAIN_LOG=str(train_log)), None)
    results = {}
    for name, (proc, marker) in procs.items():
        if marker is not None:
            _wait_for(marker, proc, name)
            proc.send_signal(spec[name][1])
        _, err = proc.communicate(timeout=WAIT_S)
        results[name] = (proc.returncode, err)
    return root, results, before, train_log


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and "Warning" not in ln
             and not ln.startswith(" ")]
    assert "Traceback" not in err, err
    return lines[-1]


def test_sigterm_during_first_use_training(runs):
    root, results, _, _ = runs
    code, err = results["train"]
    assert code == 143, err
    line = _one_line(err)
    assert "interrupted by SIGTERM while training the default model" in line
    models = root / "cache-train" / "models"
    assert not list(models.glob(".train-*")), "the temporary training folder was left"
    assert not list(models.glob("*.safetensors")), "an unfinished model was cached"
    assert _visible(root / "out-train") == []


def test_sigint_during_sampling(runs):
    root, results, _, _ = runs
    code, err = results["sample"]
    assert code == 130, err
    assert "interrupted by SIGINT while sampling the predictions" in _one_line(err)
    assert _visible(root / "out-sample") == []


def test_sigterm_while_writing_keeps_the_earlier_outputs(runs):
    root, results, before, _ = runs
    code, err = results["write"]
    assert code == 143, err
    assert "interrupted by SIGTERM while writing the outputs" in _one_line(err)
    out = root / "out-write"
    assert _visible(out) == sorted(OUTPUT_FILES.values())  # no .staging-* left
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_two_processes_on_an_empty_cache_train_once(runs):
    root, results, _, train_log = runs
    for name in ("twin-a", "twin-b"):
        assert results[name][0] == 0, results[name][1][-2000:]
    assert len(train_log.read_text().split()) == 1
    a, b = (root / f"out-twin-{x}" / "countries.csv" for x in "ab")
    assert a.read_text() == b.read_text()  # the same model, the same seed
    models = root / "cache-twins" / "models"
    assert len(list(models.glob("*.safetensors"))) == 1
    assert not list(models.glob(".train-*"))
