"""Optional dependencies fail where they are used, with the extra that installs them."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_matplotlib(monkeypatch):
    # None in sys.modules makes `import matplotlib` raise ImportError, as if absent
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)


def test_plot_errors_names_the_plot_extra(no_matplotlib):
    from geodiffloc.metrics import plot_errors

    with pytest.raises(ModuleNotFoundError, match=r"plot_errors needs .*geodiffloc\[plot\]"):
        plot_errors([1.0, 10.0])


def test_plot_field_names_the_plot_extra(no_matplotlib):
    from geodiffloc.geo import plot_field
    from geodiffloc.sphere import LatLonGrid

    g = LatLonGrid.global_(30.0)
    with pytest.raises(ModuleNotFoundError, match=r"plot_field needs .*geodiffloc\[plot\]"):
        plot_field(g.to_dataarray(np.full(g.shape, 1 / 72), kind="mass"), borders=None)


def test_core_dependencies_leave_out_plotting_and_sklearn_but_keep_diffusers():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in deps}
    assert "diffusers" in names
    assert not names & {"matplotlib", "scikit-learn", "folium"}
