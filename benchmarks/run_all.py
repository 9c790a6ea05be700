"""Run every benchmark script and collect their tables into one Markdown file.

Each script in :data:`SCRIPTS` runs as its own subprocess (so one crash or one torch
thread setting does not affect the others), with ``--quick`` when this run is quick and
the script's argparse has that flag. Their stdout (Markdown tables) is collected under
one heading per script, with the command, exit status and wall time; a failed script's
last stderr lines are kept too. The result is written atomically to
``benchmarks/results/RESULTS.md`` under a header giving the machine, the date, torch's
thread count and the load average before and after (benchmarks share the machine with
whatever else runs, and the load average says how much that was).

Run: ``python benchmarks/run_all.py [--quick] [--only accuracy locdiff] [--skip geo]``.
A default run takes about an hour on 2 idle CPU cores (the accuracy benchmark alone
~30 minutes); ``--quick`` about 10-15 minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The benchmark scripts, in the order they run (missing ones are reported and skipped).
SCRIPTS = ("shdd.py", "geoclip_speed.py", "locdiff.py", "geo.py", "accuracy.py")
RESULTS = HERE / "results" / "RESULTS.md"


@dataclass
class Outcome:
    """What one benchmark script did."""

    name: str
    command: list[str]
    returncode: int | None  # None: not run (missing) or timed out
    seconds: float
    stdout: str
    stderr: str
    status: str  # "ok", "failed", "timed out", "missing"


def supports_quick(path: Path) -> bool:
    """Whether a script's argparse defines ``--quick`` (read from its source, not run)."""
    return '"--quick"' in path.read_text(encoding="utf-8")


def run_script(path: Path, *, quick: bool, timeout: float, python: str = sys.executable,
               ) -> Outcome:
    """Run one script from the repository root and capture what it prints.

    Parameters
    ----------
    path
        The script.
    quick
        Pass ``--quick`` if the script supports it.
    timeout
        Seconds before the script is killed.
    python
        Interpreter to run it with.

    Returns
    -------
    Outcome
    """
    if not path.exists():
        return Outcome(path.stem, [], None, 0.0, "", "", "missing")
    cmd = [python, str(path.relative_to(ROOT))]
    if quick and supports_quick(path):
        cmd.append("--quick")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Outcome(path.stem, cmd, None, time.perf_counter() - t, out, err, "timed out")
    status = "ok" if proc.returncode == 0 else "failed"
    return Outcome(path.stem, cmd, proc.returncode, time.perf_counter() - t, proc.stdout,
                   proc.stderr, status)


def machine_header(quick: bool, load_before: tuple[float, ...],
                   load_after: tuple[float, ...]) -> str:
    """The run's provenance (commit, date, machine, threads, load), as for every record."""
    from _record import MARKER, command_line, provenance

    rows = provenance(load_before, load_after, command_line())
    return "\n".join([MARKER, "# Benchmark results", "",
                      f"- mode: {'--quick' if quick else 'default'}",
                      *(f"- {k}: {v}" for k, v in rows)])


def as_markdown(stdout: str) -> str:
    r"""A script's stdout as Markdown: kept as is if it holds Markdown tables, else fenced.

    Examples
    --------
    >>> as_markdown("case  ours  baseline")
    '```text\ncase  ours  baseline\n```'
    >>> as_markdown("| a |\n|---|")
    '| a |\n|---|'
    """
    text = stdout.strip()
    if not text:
        return "(no output)"
    if any(line.lstrip().startswith("|") for line in text.splitlines()):
        return text
    return f"```text\n{text}\n```"


def render(outcomes: list[Outcome], header: str) -> str:
    """The Markdown document: header, a summary table, then each script's output."""
    lines = [header, "", "| script | status | seconds | command |", "|---|---|---|---|"]
    for o in outcomes:
        cmd = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(o.command))
        lines.append(f"| {o.name} | {o.status} | {o.seconds:.0f} | `{cmd}` |")
    for o in outcomes:
        lines += ["", f"## {o.name}", ""]
        if o.status == "missing":
            lines.append(f"`benchmarks/{o.name}.py` does not exist; skipped.")
            continue
        lines.append(as_markdown(o.stdout))
        if o.status != "ok":
            tail = "\n".join(o.stderr.strip().splitlines()[-20:])
            rc = "" if o.returncode is None else f" (exit status {o.returncode})"
            lines += ["", f"**{o.status}{rc}**; last lines of stderr:", "", "```", tail, "```"]
    return "\n".join(lines) + "\n"


def write_atomic(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` via a temporary file and a rename."""
    from _record import _write_atomic

    _write_atomic(text, path)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="pass --quick to every script that has it")
    ap.add_argument("--only", nargs="+", metavar="NAME", default=None,
                    help="run only these scripts (names without .py)")
    ap.add_argument("--skip", nargs="+", metavar="NAME", default=[],
                    help="do not run these scripts")
    ap.add_argument("--timeout", type=float, default=3 * 3600,
                    help="seconds before a script is killed (default 3 h)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="Markdown file to write")
    args = ap.parse_args(argv)
    known = [Path(s).stem for s in SCRIPTS]
    for name in (args.only or []) + args.skip:
        if name not in known:
            ap.error(f"unknown benchmark {name!r}; choose from {', '.join(known)}")
    names = [n for n in known if (args.only is None or n in args.only) and n not in args.skip]

    # a SIGTERM (e.g. from `timeout`) ends the running script too: subprocess.run kills
    # its child on KeyboardInterrupt
    signal.signal(signal.SIGTERM, _interrupt)
    load_before = os.getloadavg()
    outcomes = []
    for name in names:
        print(f"[run_all] {name} ...", file=sys.stderr, flush=True)
        o = run_script(HERE / f"{name}.py", quick=args.quick, timeout=args.timeout)
        print(f"[run_all] {name}: {o.status} in {o.seconds:.0f} s", file=sys.stderr, flush=True)
        outcomes.append(o)
    text = render(outcomes, machine_header(args.quick, load_before, os.getloadavg()))
    print(text)
    write_atomic(text, args.out)
    print(f"[run_all] wrote {args.out}", file=sys.stderr)
    return 0 if all(o.status in ("ok", "missing") for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
