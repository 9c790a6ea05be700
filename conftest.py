"""Repository-wide pytest configuration (doctest collection, threads, offline mode)."""

import os

import pytest

# ``python -m geodiffloc`` runs the CLI on import; it is not a doctest module.
# The reliability driver and fork server patch the library when imported (that is their
# job, in their own processes); --doctest-modules must not import them into this one.
collect_ignore = ["geodiffloc/__main__.py", "tests/reliability/rel_driver.py",
                  "tests/reliability/rel_zygote.py"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Notebooks draw inline, as in Jupyter: their kernels must not inherit Agg.

    nbmake starts each kernel with this process's environment; with ``MPLBACKEND=Agg``
    the figures would never reach the notebook's outputs (which the docs site shows).
    """
    if not getattr(item, "nbmake", False):
        return (yield)
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        return (yield)
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    """Names available in every docstring example without an import line."""
    import math

    import numpy as np
    import torch

    doctest_namespace.update(np=np, torch=torch, math=math)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Every test runs torch on one thread (the one place this is set).

    The tests use tiny tensors, where thread start-up costs more than it saves, and CI
    machines run other work: several threads spinning against each other on two busy
    cores slow the suite down many times over. Session scope: it is in place before any
    module-scoped fixture trains or encodes.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
