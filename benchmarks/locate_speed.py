"""Benchmark ``geodiffloc.locate`` with the cached default model (issue 12, goal 5:
4 descriptions in <= 10 s on a quiet 2-core machine, >= 10x faster than the first
release's path in the same run).

Timed in the same process, on the same 4 descriptions and the same loaded model:

* ``locate`` as shipped: each query sampled once (DPM-Solver++ 20 steps, 32 samples at
  0.5 degrees), predictions, fields, country table and place-name reading derived from
  that one set of samples; with and without writing the GIS files;
* the first release's path: ``model.predict`` and then ``model.probability_map`` with
  the DDPM sampler over all T steps (the same diffusion sampled twice), as
  ``pipeline/locate.py`` did then.

The in-process paths run 3 times each, interleaved; the table gives each median.

Also the wall time of the ``geodiffloc locate`` command in a fresh process (imports and
model loading included). The default model must be cached (run ``geodiffloc locate``
once first); nothing is trained here.

Run ``python benchmarks/locate_speed.py [--threads 2] [--skip-baseline]``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
QUERIES = ["a fishing harbour in northern Norway", "Kyoto temple",
           "vineyards near Bordeaux", "a safari lodge in the Serengeti"]
CLI_RUNS = 3
REPEATS = 3  # in-process paths, interleaved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-baseline", action="store_true",
                    help="skip the first release's DDPM path (minutes on 2 cores)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    from _record import record

    import geodiffloc
    from geodiffloc.pipeline import default_model

    with record("locate_speed", "locate speed with the cached default model",
                out=args.out):
        t = time.perf_counter()
        model, encoder = default_model(progress=False)
        load_s = time.perf_counter() - t
        geodiffloc.locate(QUERIES[:1], model=model, encoder=encoder, progress=False)  # warm
        runs: dict[str, list[float]] = {"memory": [], "files": [], "base": []}

        def clock(key: str, fn: Any) -> None:
            t = time.perf_counter()
            fn()
            runs[key].append(time.perf_counter() - t)

        x = encoder.encode(QUERIES)

        def first_release() -> None:
            model.predict(x, n_views=32, sampler="ddpm", steps=None)
            model.probability_map(x, resolution=0.5, n_views=32, sampler="ddpm", steps=None)

        if not args.skip_baseline:
            first_release()  # warm too: its first call imports diffusers (seconds)
        with tempfile.TemporaryDirectory() as tmp:
            # interleaved repeats: drift in the machine's speed hits every path alike
            for r in range(REPEATS):
                clock("memory", lambda: geodiffloc.locate(QUERIES, model=model, encoder=encoder,
                                                          progress=False))
                clock("files", lambda r=r: geodiffloc.locate(
                    QUERIES, model=model, encoder=encoder, progress=False,
                    out_dir=Path(tmp) / f"out{r}"))
                if not args.skip_baseline:
                    clock("base", first_release)
            cli_runs = []
            for run in range(CLI_RUNS):  # a fresh process is noisy on 2 cores: the median
                t = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "geodiffloc", "locate", *QUERIES,
                                       "-o", str(Path(tmp) / f"cli{run}")],
                                      capture_output=True, text=True)
                cli_runs.append(time.perf_counter() - t)
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1

        def median(key: str) -> tuple[str, float]:
            vals = runs[key] if key != "cli" else cli_runs
            return ", ".join(f"{v:.2f}" for v in vals), statistics.median(vals)

        rows = []
        for key, name in (("memory", "locate (in memory), DPM-Solver++ 20, 32 samples, 0.5 deg"),
                          ("files", "locate + GeoTIFF/GeoPackage/CSV/map written"),
                          ("cli", "geodiffloc locate (fresh process: imports, model load, "
                                  "files)")):
            each, med = median(key)
            rows.append((f"{name}; median of {each} s", med))
        base = None
        if not args.skip_baseline:
            each, base = median("base")
            rows.append((f"first release's path: predict + probability_map, DDPM over all "
                         f"T steps (sampled twice); median of {each} s", base))
        print(f"{len(QUERIES)} descriptions: {'; '.join(QUERIES)}. Default model loaded from "
              f"the cache in {load_s:.1f} s (not included below).\n")
        print("path | seconds | vs the first release's path")
        print("---|---|---")
        for name, sec in rows:
            ratio = f"{base / sec:.1f}x faster" if base else "-"
            print(f"{name} | {sec:.2f} | {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
