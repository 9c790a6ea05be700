"""Benchmark records that can be tied to a revision and a machine.

Every benchmark script writes its results through :func:`record`: what the script
prints (Markdown tables) goes to the terminal and, when the script finishes without
an error, to ``benchmarks/results/<name>.md`` (``<name>_quick.md`` for ``--quick``
runs), headed by the provenance the numbers depend on: commit (and whether the working
tree had uncommitted changes), date, machine (CPU model, cores), Python and torch
versions, torch's thread count, and the load average before and after the run.

The docs build (``docs/_hooks/benchmarks.py``) includes these files into the
Benchmarks page, so the tables there are the committed records, never hand copies.

Usage, in a script::

    from _record import record

    with record("geoclip_speed", "GeoCLIP retrieval speed", quick=args.quick):
        ...  # print the Markdown tables
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
#: First line of every record; the docs hook checks for it.
MARKER = "<!-- benchmark record written by benchmarks/_record.py; do not edit by hand -->"


def git_commit(root: Path = ROOT) -> tuple[str, bool | None]:
    """``(short hash, working tree dirty?)``.

    ``GEODIFFLOC_BENCH_COMMIT`` overrides git: a tree copied to another machine (a GPU
    box) may carry a stale ``.git``, so the sender names the commit its files are at.
    Outside git and without it: ``("unknown", None)``.
    """
    copied = os.environ.get("GEODIFFLOC_BENCH_COMMIT", "")
    if copied:
        return f"{copied} (files copied from it to this machine)", None

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None
    return commit, dirty


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def provenance(load_before: tuple[float, ...], load_after: tuple[float, ...],
               command: str) -> list[tuple[str, str]]:
    """The header rows of a record, as ``(field, value)`` pairs."""
    try:
        import torch

        torch_info = f"{torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:  # pragma: no cover - torch is a core dependency
        torch_info = "not installed"
    commit, dirty = git_commit()
    state = {True: "uncommitted changes present", False: "clean", None: "not a git checkout"}
    loads = "before {}; after {}".format(*("/".join(f"{v:.2f}" for v in lv)
                                           for lv in (load_before, load_after)))
    return [
        ("commit", f"`{commit}` ({state[dirty]})"),
        ("date", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("machine", f"{cpu_model()}, {os.cpu_count()} logical cores, {platform.system()} "
                    f"{platform.release()}"),
        ("python / torch", f"{platform.python_version()} / {torch_info}"),
        ("threads", f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"),
        ("load average (1/5/15 min)", loads),
        ("command", f"`{command}`"),
    ]


def render(title: str | None, rows: list[tuple[str, str]], body: str) -> str:
    """A record: marker, title, provenance table, then the script's output.

    With ``title=None`` the body's first line, a ``# heading``, is the title.
    """
    body = body.strip()
    if title is None:
        first, _, body = body.partition("\n")
        if not first.startswith("# "):
            raise ValueError("title=None needs a body that starts with a '# heading' line.")
        title = first[2:]
    lines = [MARKER, f"# {title}", "", "| recorded | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines) + "\n\n" + body.strip() + "\n"


def command_line() -> str:
    """How this script was run, with its path relative to the repository root."""
    argv = [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]] if sys.argv else []
    return shlex.join(["python", *argv])


def write_record(path: Path, body: str, *, load_before: tuple[float, ...],
                 title: str | None = None) -> Path:
    """Write ``body`` as a record at ``path`` (atomically), headed by its provenance."""
    text = render(title, provenance(load_before, os.getloadavg(), command_line()), body)
    _write_atomic(text, path)
    print(f"[record] wrote {path}", file=sys.stderr)
    return path


def results_path(name: str, quick: bool = False) -> Path:
    """``benchmarks/results/<name>.md``, or ``<name>_quick.md`` for quick runs."""
    return RESULTS / f"{name}{'_quick' if quick else ''}.md"


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()


@contextlib.contextmanager
def record(name: str, title: str, *, quick: bool = False,
           out: Path | None = None) -> Iterator[Path]:
    """Tee stdout while the block runs, then write it as a record (only on success).

    Parameters
    ----------
    name
        File stem under ``benchmarks/results/``.
    title
        The record's heading.
    quick
        A ``--quick`` run: written to ``<name>_quick.md``.
    out
        Another path to write to (tests).

    Yields
    ------
    pathlib.Path
        Where the record will be written.
    """
    path = out or results_path(name, quick)
    load_before = os.getloadavg()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buffer)):
        yield path
    write_record(path, buffer.getvalue(), load_before=load_before, title=title)


def _write_atomic(text: str, path: Path) -> None:
    from geodiffloc._io import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
