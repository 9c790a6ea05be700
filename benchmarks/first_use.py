"""How long a user waits the first time: ``geodiffloc locate`` with nothing cached.

Runs ``geodiffloc locate "Kyoto temple"`` as a fresh process with
``GEODIFFLOC_CACHE_DIR`` pointing at an empty temporary folder, exactly what a new user
on a new machine runs: the toponym index is built, the gazetteer captions are embedded
with MiniLM, the default LocDiff is trained with the library's own training code and
cached, and the query is answered. Then runs the same command again on the now-filled
cache (the baseline: what every later call costs). Prints the wall times and the
stages the default model's manifest records (embedding, training).

Run: ``python benchmarks/first_use.py [--threads 2]`` on a quiet machine; writes
``results/first_use.md``. (The goal of issue 11: <= 5 minutes on a quiet 2-core CPU.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import record


def _locate(cache: Path, out: Path, threads: int) -> float:
    env = {**os.environ, "GEODIFFLOC_CACHE_DIR": str(cache), "OMP_NUM_THREADS": str(threads),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "geodiffloc", "locate", "Kyoto temple", "-o", str(out)]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="OMP/torch threads of the runs")
    args = p.parse_args(argv)
    with record("first_use", "First use of `geodiffloc locate`: nothing cached"), \
            tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        first = _locate(cache, Path(tmp) / "out1", args.threads)
        again = _locate(cache, Path(tmp) / "out2", args.threads)
        (manifest,) = sorted((cache / "models").glob("default-locdiff-*.json"))
        info = json.loads(manifest.read_text())
        stages = info.get("timings_s", {})
        steps = info.get("metrics", {}).get("global_step")
        print(f"`geodiffloc locate \"Kyoto temple\"`, {args.threads} threads, default model "
              f"`{manifest.stem}` ({steps} training steps).\n")
        print("| run | seconds | minutes |\n|---|---:|---:|")
        print(f"| first use (empty cache) | {first:.0f} | {first / 60:.1f} |")
        for name, sec in stages.items():
            print(f"| of which: {name} (from the manifest) | {sec:.0f} | {sec / 60:.1f} |")
        print(f"| again (everything cached; baseline) | {again:.0f} | {again / 60:.1f} |")
        print(f"\nFirst use costs {first - again:.0f} s more than a cached call "
              f"({first / again:.1f}x).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
