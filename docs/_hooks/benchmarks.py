"""MkDocs hook: the Benchmarks page shows the committed benchmark records, not copies.

A line ``<!-- record: NAME -->`` in a page is replaced, at build time, by the file
``benchmarks/results/NAME.md`` that the benchmark scripts write through
``benchmarks/_record.py`` (commit, date, machine, threads and load average first, then
the tables). Its headings are moved down below the page's own. A missing file, or one
written without that header, is shown as a warning box that says how to produce it,
never as numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = "<!-- benchmark record written by benchmarks/_record.py; do not edit by hand -->"
_INCLUDE = re.compile(r"^<!--\s*record:\s*([\w.-]+)\s*-->\s*$", re.MULTILINE)
_HEADING = re.compile(r"^(#{1,5}) ", re.MULTILINE)


def include_record(name: str, results: Path = RESULTS, shift: int = 2) -> str:
    """The Markdown that replaces ``<!-- record: name -->``."""
    path = results / f"{name}.md"
    if not path.is_file():
        return _missing(name, "does not exist yet")
    text = path.read_text(encoding="utf-8")
    first, _, body = text.partition("\n")
    if first.strip() != MARKER:
        return _missing(name, "was written without its provenance header (commit, machine, "
                              "load), so its numbers cannot be tied to a revision")
    return _HEADING.sub(lambda m: "#" * min(6, len(m.group(1)) + shift) + " ", body.strip())


def _missing(name: str, why: str) -> str:
    script = name.removesuffix("_quick")
    quick = " --quick" if name.endswith("_quick") else ""
    return (f'!!! warning "No record: `benchmarks/results/{name}.md`"\n'
            f"    This file {why}. Produce it with "
            f"`python benchmarks/{script}.py{quick}` (or `python benchmarks/run_all.py`) "
            "and commit the file.\n")


def on_page_markdown(markdown: str, page, config, files) -> str:
    return _INCLUDE.sub(lambda m: include_record(m.group(1)), markdown)
