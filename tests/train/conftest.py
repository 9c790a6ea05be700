"""Shared fixtures of the training tests: one CPU thread, learnable synthetic data."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Two-core machines run other work too: train on one thread, then restore."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
