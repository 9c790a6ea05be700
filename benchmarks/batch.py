"""Batch geolocation (``locate_batch``): throughput, time to first result, peak memory.

With a tiny untrained LocDiff on a hash-of-words text encoder (so the numbers measure the
batch machinery, chunking, Dask and the writers, not a model), over generated
descriptions:

* throughput (queries/s) and time to the first written part, in this process
  (``scheduler="serial"``) and on a ``LocalCluster`` with 1 and 2 worker processes
  (started, and their imports warmed, before the clock starts);
* peak memory of the driver for ``--small`` vs ``--large`` inputs (serial run, each in a
  fresh subprocess; ``ru_maxrss``): it should not grow with the number of inputs.

With ``--default-model N`` it measures the built-in default model instead (it must be
cached: run ``geodiffloc locate`` once first): ``N`` generated place descriptions
(gazetteer captions) with ``locate_batch``'s defaults (32 samples, DPM-Solver++ 20
steps, names read against the gazetteers), on a LocalCluster with 1 and with 2 workers,
written to ``results/batch_default.md``; the time for 10,000 descriptions (the issue's
goal) is extrapolated from the faster of the two.

Run: ``python benchmarks/batch.py [--small 1000] [--large 10000] [--quick]`` or
``python benchmarks/batch.py --default-model 1000``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _model():
    import hashlib

    import numpy as np
    import torch

    from geodiffloc import LocDiff

    class HashWords:
        """Bag of words, a fixed random vector per word (instant, picklable by name)."""

        modality, name, dim = "text", "bench:hash-words", 32
        device = torch.device("cpu")

        def encode(self, inputs, batch_size=64, augment=False, progress=False):
            texts = [inputs] if isinstance(inputs, str) else list(inputs)
            out = np.zeros((len(texts), self.dim))
            for i, t in enumerate(texts):
                for w in t.split():
                    seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
                    out[i] += np.random.default_rng(seed).standard_normal(self.dim)
                out[i] /= max(np.linalg.norm(out[i]), 1e-9)
            return torch.as_tensor(out, dtype=torch.float32)

    torch.manual_seed(0)
    enc = HashWords()
    return LocDiff(L=8, cond_dim=enc.dim, widths=(64, 32), encoder=enc).eval(), enc


def _source(n: int, folder: Path) -> Path:
    p = folder / f"descriptions_{n}.txt"
    words = ["harbour", "temple", "market", "village", "church", "station", "beach", "park"]
    with p.open("w") as fh:
        for i in range(n):
            fh.write(f"a {words[i % len(words)]} in town {i} of region {i % 97}\n")
    return p


SETTINGS = {"n_samples": 4, "steps": 10, "chunk_size": 50, "progress": False,
            "countries_scale": "lowres", "dashboard": False}


def _descriptions(n: int, folder: Path) -> Path:
    from geodiffloc.data import describe_places, load_gazetteer, sample_places

    places = sample_places(load_gazetteer(), n, seed=1)
    p = folder / f"places_{n}.txt"
    p.write_text("\n".join(describe_places(places, seed=1)) + "\n", encoding="utf-8")
    return p


DEFAULT_SETTINGS = {"progress": False, "countries_scale": "lowres", "dashboard": False}


def _one_run(n: int, scheduler: str, workers: int | None, default: bool = False) -> dict:
    from geodiffloc.pipeline import locate_batch

    model, enc = ("default", None) if default else _model()
    with tempfile.TemporaryDirectory() as tmp:
        src = (_descriptions if default else _source)(n, Path(tmp))
        kw = dict(DEFAULT_SETTINGS if default else SETTINGS)
        t0 = time.perf_counter()
        if scheduler == "serial":
            res = locate_batch(src, Path(tmp) / "out", model=model, encoder=enc,
                               scheduler="serial", **kw)
        else:
            from geodiffloc.pipeline.batch import local_client

            # the cluster locate_batch itself would start (same worker environment)
            with local_client(workers) as client:
                # cluster start-up and the workers' first imports (torch, geodiffloc) are
                # not the job's time: a long-lived cluster pays them once
                client.run(importlib.import_module, "geodiffloc.pipeline.batch")
                t0 = time.perf_counter()
                res = locate_batch(src, Path(tmp) / "out", model=model, encoder=enc,
                                   scheduler=client, **kw)
        wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"n": n, "done": res.n_done, "wall_s": wall, "qps": res.n_done / wall,
            "first_s": res.timings.get("first_result_s", float("nan")), "peak_mb": peak_mb}


def _subprocess(n: int, scheduler: str, workers: int | None, default: bool = False) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(n), scheduler, str(workers or 0),
         str(int(default))],
        capture_output=True, text=True, check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=10000)
    ap.add_argument("--quick", action="store_true", help="200 and 1000 inputs")
    ap.add_argument("--default-model", type=int, default=None, metavar="N",
                    help="measure the cached default model on N descriptions instead")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, sched, w, default = args.child
        print(json.dumps(_one_run(int(n), sched, int(w) or None, default == "1")))
        return
    from _record import record

    if args.default_model:
        _default_model(args.default_model, record)
        return
    small, large = (200, 1000) if args.quick else (args.small, args.large)

    with record("batch", "Batch geolocation (locate_batch)", quick=args.quick):
        print(f"Tiny LocDiff (L=8), {SETTINGS['n_samples']} samples x "
              f"{SETTINGS['steps']} DPM-Solver++ steps per input, chunks of "
              f"{SETTINGS['chunk_size']}, no fields. Each run in a fresh process.\n")
        print("| run | inputs | wall (s) | queries/s | first part (s) | driver peak RSS (MB) |")
        print("|---|---:|---:|---:|---:|---:|")
        rows = {}
        for label, sched, w, n in (("serial", "serial", None, small),
                                   ("LocalCluster, 1 worker", "dask", 1, small),
                                   ("LocalCluster, 2 workers", "dask", 2, small),
                                   ("serial", "serial", None, large)):
            r = _subprocess(n, sched, w)
            rows[(label, n)] = r
            print(f"| {label} | {n:,} | {r['wall_s']:.1f} | {r['qps']:.1f} | "
                  f"{r['first_s']:.2f} | {r['peak_mb']:.0f} |", flush=True)
        one = rows[("LocalCluster, 1 worker", small)]["qps"]
        two = rows[("LocalCluster, 2 workers", small)]["qps"]
        mem = rows[("serial", large)]["peak_mb"] / rows[("serial", small)]["peak_mb"]
        print(f"\n2 workers / 1 worker: {two / one:.2f}x (goal >= 1.7x on 2 quiet cores); "
              f"peak memory {large:,} / {small:,} inputs: {mem:.2f}x (goal <= 1.2x).")


def _default_model(n: int, record) -> None:
    with record("batch_default", "Batch geolocation with the built-in default model"):
        print(f"The cached default model on {n:,} generated place descriptions (gazetteer "
              "captions), locate_batch's defaults (32 samples, DPM-Solver++ 20 steps, names "
              "read, chunks of 64), no fields. Each run in a fresh process; the workers' "
              "imports are warmed before the clock starts, their model load is timed.\n")
        print("| run | inputs | wall (s) | queries/s | first part (s) |")
        print("|---|---:|---:|---:|---:|")
        qps = {}
        for w in (1, 2):
            r = _subprocess(n, "dask", w, default=True)
            qps[w] = r["qps"]
            print(f"| LocalCluster, {w} worker{'s' * (w > 1)} | {n:,} | {r['wall_s']:.1f} | "
                  f"{r['qps']:.2f} | {r['first_s']:.1f} |", flush=True)
        best = max(qps.values())
        print(f"\n2 workers / 1 worker: {qps[2] / qps[1]:.2f}x (goal >= 1.7x on 2 quiet cores);"
              f" 10,000 descriptions at the faster rate: {10_000 / best / 60:.1f} min "
              "(goal <= 10 min).")


if __name__ == "__main__":
    main()
