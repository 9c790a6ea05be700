"""Helpers of the pipeline tests: a fast stand-in text encoder and a tiny default config."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import numpy as np
import torch

from geodiffloc.pipeline import DEFAULT_MODEL_CONFIG


class HashWordEncoder:
    """Bag of words with a fixed random vector per word (no model to load).

    Captions sharing words ("France", "Norway") get similar embeddings, so a tiny model
    has something to learn, and encoding is instantaneous.
    """

    modality = "text"
    device = torch.device("cpu")

    def __init__(self, dim: int = 32, name: str = "test:hash-words") -> None:
        self.dim, self.name = dim, name
        self.calls: list[dict] = []

    def _word(self, w: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(w.lower().encode()).digest()[:8], "little")
        return np.random.default_rng(seed).standard_normal(self.dim)

    def encode(self, inputs, batch_size=64, augment=False, progress=False):
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        self.calls.append({"n": len(texts), "augment": augment})
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            for w in t.replace(",", " ").split():
                out[i] += self._word(w)
            out[i] /= max(np.linalg.norm(out[i]), 1e-9)
        return torch.as_tensor(out, dtype=torch.float32)


class FileBytesImageEncoder:
    """A stand-in *image* encoder: embeds a file's bytes (views differ when augmenting)."""

    modality = "image"
    device = torch.device("cpu")

    def __init__(self, dim: int = 8) -> None:
        self.dim, self.name = dim, "test:file-bytes"
        self.calls: list[dict] = []

    def encode(self, inputs, batch_size=64, augment=False, progress=False):
        paths = list(inputs)
        self.calls.append({"n": len(paths), "augment": augment})
        out = []
        for p in paths:
            seed = int.from_bytes(hashlib.sha256(Path(p).read_bytes()).digest()[:8], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim)
            if augment:
                v = v + 0.05 * np.random.default_rng().standard_normal(self.dim)
            out.append(v)
        return torch.as_tensor(np.array(out), dtype=torch.float32)


def tiny_default_config(**changes) -> dict:
    """DEFAULT_MODEL_CONFIG shrunk to a few seconds of training on one CPU thread."""
    cfg = copy.deepcopy(DEFAULT_MODEL_CONFIG)
    cfg["data"].update(n_train=96, n_test=16)
    cfg["model"] = {"L": 4, "widths": [32, 16], "time_dim": 16}
    cfg["train"] = {"epochs": 2, "batch_size": 32, "lr": 3e-3, "warmup_steps": 0}
    cfg["validation"] = {"sampler": "dpm++", "steps": 4, "n_samples": 1}
    for k, v in changes.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return cfg
