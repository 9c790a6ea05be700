"""Reliability tests: a private cache, this folder importable (one torch thread: the root
conftest's session fixture; training restores the thread count it found)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GEODIFFLOC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
