"""Repository-wide pytest configuration (doctest collection, threads, offline mode)."""

import os

import pytest

# ``python -m geodiffloc`` runs the CLI on import; it is not a doctest module.
collect_ignore = ["geodiffloc/__main__.py"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    """Names available in every docstring example without an import line."""
    import math

    import numpy as np
    import torch

    doctest_namespace.update(np=np, torch=torch, math=math)
