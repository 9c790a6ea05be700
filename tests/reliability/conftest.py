"""Reliability tests: one CPU thread, a private cache, this folder importable."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _one_thread_private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
