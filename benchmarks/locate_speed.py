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

import torch

HERE = Path(__file__).resolve().parent
QUERIES = ["a fishing harbour in northern Norway", "Kyoto temple",
           "vineyards near Bordeaux", "a safari lodge in the Serengeti"]
CLI_RUNS = 3


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
        rows = []
        t = time.perf_counter()
        geodiffloc.locate(QUERIES, model=model, encoder=encoder, progress=False)
        rows.append(("locate (in memory), DPM-Solver++ 20, 32 samples, 0.5 deg",
                     time.perf_counter() - t))
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            geodiffloc.locate(QUERIES, model=model, encoder=encoder, progress=False,
                              out_dir=Path(tmp) / "out")
            rows.append(("locate + GeoTIFF/GeoPackage/CSV/map written", time.perf_counter() - t))
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
            runs = ", ".join(f"{s:.1f}" for s in cli_runs)
            rows.append((f"geodiffloc locate (fresh process: imports, model load, files; "
                         f"median of {CLI_RUNS}: {runs} s)", statistics.median(cli_runs)))
        base = None
        if not args.skip_baseline:
            x = encoder.encode(QUERIES)
            t = time.perf_counter()
            model.predict(x, n_views=32, sampler="ddpm", steps=None)
            model.probability_map(x, resolution=0.5, n_views=32, sampler="ddpm", steps=None)
            base = time.perf_counter() - t
            rows.append(("first release's path: predict + probability_map, DDPM over all "
                         "T steps (sampled twice)", base))
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
