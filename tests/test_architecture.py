"""The layers of docs/concepts/architecture.md hold: no upward imports, static or by string."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "geodiffloc"


def _layers() -> list[list[str]]:
    """The layers contract from pyproject.toml, top first, each a list of siblings."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [[m.strip() for m in line.split("|")] for line in contract["layers"]]


def _layer_of(module: str) -> tuple[int, str] | None:
    """(depth from the top, sibling) of the layer holding ``module``; None outside layers."""
    for depth, siblings in enumerate(_layers()):
        for sibling in siblings:
            if module == sibling or module.startswith(sibling + "."):
                return depth, sibling
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _string_imports(path: Path) -> list[tuple[int, str]]:
    """``importlib.import_module("geodiffloc...")`` and ``__import__`` targets in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        arg = node.args[0]
        if name in ("import_module", "__import__", "find_spec") and isinstance(
            arg, ast.Constant
        ) and isinstance(arg.value, str) and arg.value.startswith("geodiffloc"):
            found.append((node.lineno, arg.value))
    return found


def test_layers_contract_lists_every_subpackage():
    # A new public part left out of the contract would be checked by nothing. Outside
    # the layers: private utilities (_io, _hooks, ...), show_versions and __main__.
    listed = {s for siblings in _layers() for s in siblings}
    parts = {f"geodiffloc.{p.stem}" for p in PACKAGE.iterdir()
             if ((p / "__init__.py").exists() or p.suffix == ".py")
             and not p.name.startswith("_") and p.stem != "show_versions"}
    assert parts == listed


def test_import_linter_contracts_are_kept(monkeypatch):
    from importlinter import cli as importlinter_cli  # in the [test] extra
    monkeypatch.chdir(ROOT)
    assert importlinter_cli.lint_imports(no_cache=True, no_logo=True) == 0


def test_no_string_import_crosses_a_layer_upward_or_sideways():
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _layer_of(_module_name(path))
        for line, target in _string_imports(path):
            if source is None:  # the package root: the lazy facade above every layer
                continue
            dest = _layer_of(target)
            if dest is None or dest[1] == source[1]:
                continue
            if dest[0] <= source[0]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {target!r}")
    assert not bad, "string imports against the layers:\n" + "\n".join(bad)


def test_string_import_scan_finds_what_it_should(tmp_path):
    # The scan above must see a string import when there is one.
    probe = tmp_path / "probe.py"
    probe.write_text('import importlib\nimportlib.import_module("geodiffloc.geo.accessor")\n')
    assert _string_imports(probe) == [(2, "geodiffloc.geo.accessor")]


def test_field_carries_accessor_without_loading_the_rest_of_geo():
    # A fresh interpreter: the first field registers da.geoloc through the package root
    # and loads the accessor module (and its small validation helpers) only, not
    # plotting, rasters or vectors.
    code = (
        "import sys, numpy as np\n"
        "from geodiffloc.sphere import LatLonGrid\n"
        "assert 'geodiffloc.geo' not in sys.modules\n"
        "g = LatLonGrid.global_(30.0)\n"
        "da = g.to_dataarray(np.full(g.shape, 1 / 72), kind='mass')\n"
        "assert hasattr(da, 'geoloc')\n"
        "print(sorted(m for m in sys.modules if m.startswith('geodiffloc.geo')))\n"
        "print(sorted(m for m in ('matplotlib', 'folium', 'geopandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout.splitlines()
    assert out == [
        "['geodiffloc.geo', 'geodiffloc.geo._field', 'geodiffloc.geo._validate', "
        "'geodiffloc.geo.accessor']",
        "[]",
    ]
