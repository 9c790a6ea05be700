"""Fixtures for the geo tests: headless matplotlib and synthetic fields."""

from __future__ import annotations

import matplotlib
import pytest
from geo_helpers import uniform_mass, vmf_mass

matplotlib.use("Agg")


@pytest.fixture
def make_vmf():
    return vmf_mass


@pytest.fixture
def make_uniform():
    return uniform_mass
