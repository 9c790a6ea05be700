"""Helpers of the reliability tests: a stand-in encoder, a tiny default config, a driver.

Nothing here downloads or trains anything big: the text encoder is a bag of hashed
words (instant), the "default" model a LocDiff of L = 4 trained for a few steps.
"""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
DRIVER = HERE / "rel_driver.py"
ENCODER_NAME = "test:hash-words"


class HashWords:
    """Bag of words with a fixed random vector per word (no model to load)."""

    modality = "text"
    device = torch.device("cpu")

    def __init__(self, *args, dim: int = 32, name: str = ENCODER_NAME, **kwargs) -> None:
        self.dim, self.name = dim, name

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(w.lower().encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim)

    def encode(self, inputs, batch_size=64, augment=False, progress=False):
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            for w in t.replace(",", " ").split():
                out[i] += self._word(w)
            out[i] /= max(np.linalg.norm(out[i]), 1e-9)
        return torch.as_tensor(out, dtype=torch.float32)


def tiny_config(epochs: int = 2) -> dict:
    """The default-model config shrunk to seconds of training on one CPU thread."""
    from geodiffloc.pipeline import DEFAULT_MODEL_CONFIG

    cfg = copy.deepcopy(DEFAULT_MODEL_CONFIG)
    cfg["data"].update(n_train=96, n_test=16)
    cfg["model"] = {"L": 4, "widths": [32, 16], "time_dim": 16}
    cfg["train"] = {"epochs": int(epochs), "batch_size": 32, "lr": 3e-3, "warmup_steps": 0}
    cfg["validation"] = {"sampler": "dpm++", "steps": 4, "n_samples": 1}
    return cfg


def env(cache: Path, **extra: str) -> dict[str, str]:
    """Environment of a driver subprocess: this checkout, one thread, offline, a cache."""
    e = dict(os.environ)
    e.update(PYTHONPATH=str(REPO), GEODIFFLOC_CACHE_DIR=str(cache), OMP_NUM_THREADS="1",
             MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
             MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    e.pop("GEODIFFLOC_DEBUG", None)
    e.update(extra)
    return e


def start(args: list[str], cache: Path, **extra: str) -> subprocess.Popen:
    """``geodiffloc ARGS`` in a subprocess, through the driver (see rel_driver.py)."""
    return subprocess.Popen([sys.executable, str(DRIVER), *args], env=env(cache, **extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run(args: list[str], cache: Path, timeout: float = 300, **extra: str
        ) -> subprocess.CompletedProcess:
    p = start(args, cache, **extra)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def save_tiny_model(path: Path, seed: int = 0) -> Path:
    """A small untrained LocDiff recording the stand-in encoder (loads with --model)."""
    from geodiffloc import LocDiff

    torch.manual_seed(seed)
    LocDiff(L=4, cond_dim=32, widths=(32, 16), time_dim=16,
            encoder={"name": ENCODER_NAME, "dim": 32}).save(path)
    return path
