"""Benchmark records carry their provenance, and the docs include only such records."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


REC = _load("_record", ROOT / "benchmarks" / "_record.py")
HOOK = _load("docs_benchmarks_hook", ROOT / "docs" / "_hooks" / "benchmarks.py")


def test_record_writes_output_under_its_provenance(tmp_path, capsys):
    out = tmp_path / "speed.md"
    with REC.record("speed", "Speed", out=out) as path:
        print("| a | b |\n|---|---|\n| 1 | 2 |")
    assert path == out
    assert "| 1 | 2 |" in capsys.readouterr().out  # still printed to the terminal
    text = out.read_text()
    lines = text.splitlines()
    assert lines[0] == REC.MARKER and lines[1] == "# Speed"
    head = dict(line.strip("|").split("|", 1) for line in lines[3:12] if line.startswith("| "))
    head = {k.strip(): v.strip() for k, v in head.items()}
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert head["commit"].startswith(f"`{commit}`")
    assert str(os.cpu_count()) in head["machine"]
    assert "threads" in head["python / torch"]
    assert head["load average (1/5/15 min)"].startswith("before ")
    assert text.rstrip().endswith("| 1 | 2 |")


def test_record_is_not_written_when_the_benchmark_fails(tmp_path):
    out = tmp_path / "x.md"
    with pytest.raises(RuntimeError), REC.record("x", "X", out=out):
        print("partial")
        raise RuntimeError("boom")
    assert not out.exists()


def test_render_takes_the_title_from_the_body():
    text = REC.render(None, [("commit", "`abc`")], "# Accuracy\n\nbody")
    assert text.splitlines()[1] == "# Accuracy" and text.count("# Accuracy") == 1
    with pytest.raises(ValueError, match="heading"):
        REC.render(None, [], "no heading")


def test_hook_includes_records_and_refuses_the_rest(tmp_path):
    (tmp_path / "good.md").write_text(f"{REC.MARKER}\n# Good\n\n## Table\n\n| 1 |\n")
    (tmp_path / "old.md").write_text("# Old\n\n| 99 |\n")
    good = HOOK.include_record("good", tmp_path)
    assert good.startswith("### Good") and "#### Table" in good and "| 1 |" in good
    old = HOOK.include_record("old", tmp_path)
    assert "| 99 |" not in old and "provenance" in old and old.startswith("!!! warning")
    gone = HOOK.include_record("gone_quick", tmp_path)
    assert "python benchmarks/gone.py --quick" in gone
    assert HOOK.MARKER == REC.MARKER  # the writer and the reader agree


def test_benchmarks_page_has_no_hand_copied_tables():
    page = (ROOT / "docs" / "benchmarks.md").read_text()
    results = page[page.index("## Results"):]
    assert "<!-- record: shdd -->" in results
    # a table row with a number would be a copy; the records bring their own
    assert not [line for line in results.splitlines() if line.startswith("|")]
