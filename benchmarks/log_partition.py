"""Benchmark ``SHDD.log_partition`` (issue 12, goal 4: L = 127, any field, <= 1 s per 16
vectors, integrating to 1 within 1e-3).

For each kind of field (16 vectors each): deltas at random places, deltas at the poles,
broad fields (0.02 x a delta: ~26 high, 20 km wide at L = 127), noisy deltas (every
coefficient + N(0, 0.05^2)), two-peak mixtures and pure noise. Timed in the same run:

* ours: the partition-of-unity quadrature (a global Gauss-Legendre bulk grid plus
  boxes around peaks the grid cannot resolve);
* the previous release's adaptive cell quadrature (``git show fde8f3c:...``, loaded
  into the package namespace), on the first 2 vectors of each kind (time scaled to 16);
* a dense global Gauss-Legendre grid fine enough for 1e-3 on the same field (its time
  measured on a 1/16 slice of rows and scaled).

Accuracy: ``|log Z - reference|`` where the reference is a 1-D quadrature of the
axisymmetric delta kernel (numpy's Legendre series) for deltas and broad fields;
``log Z`` error is the relative error of the normalisation (goal 1e-3).

Run ``python benchmarks/log_partition.py [--quick] [--L 127] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from geodiffloc import SHDD
from geodiffloc.shdd.quadrature import log_partition
from geodiffloc.shdd.synthesis import synthesize

HERE = Path(__file__).resolve().parent
PREVIOUS = "fde8f3c"  # the last commit with the adaptive cell quadrature


def axisymmetric_log_z(L: int, scale: float) -> float:
    """log Z of ``scale x`` an encoded point by 1-D Gauss-Legendre panels in the angle."""
    coef = scale * (2 * np.arange(L + 1) + 1) / (4 * math.pi)
    x, w = np.polynomial.legendre.leggauss(48)
    edges = np.linspace(0.0, math.pi, 8 * L + 1)
    a, b = edges[:-1, None], edges[1:, None]
    t = (0.5 * (b - a) * x + 0.5 * (a + b)).ravel()
    wt = (0.5 * (b - a) * w).ravel()
    f = np.polynomial.legendre.legval(np.cos(t), coef)
    top = f.max()
    return float(top + math.log(2 * math.pi * np.sum(wt * np.exp(f - top) * np.sin(t))))


def previous_log_partition():
    """The previous release's ``log_partition``, or None outside a git checkout."""
    try:
        src = subprocess.run(["git", "show", f"{PREVIOUS}:geodiffloc/shdd/quadrature.py"],
                             cwd=HERE, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("geodiffloc.shdd._quadrature_previous")
    mod.__package__ = "geodiffloc.shdd"
    exec(compile(src, f"{PREVIOUS}:quadrature.py", "exec"), mod.__dict__)
    return mod.log_partition


def fields(L: int, n: int, seed: int = 0) -> dict[str, tuple[torch.Tensor, float | None]]:
    """Kind -> (coefficients, axisymmetric reference log Z or None)."""
    s = SHDD(L, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)

    def places(k: int) -> torch.Tensor:
        lat = torch.rad2deg(torch.asin(2 * torch.rand(k, generator=g, dtype=torch.float64) - 1))
        return torch.stack([lat, 360 * torch.rand(k, generator=g, dtype=torch.float64) - 180], 1)

    delta = s.encode(latlon=places(n))
    poles = torch.stack([torch.tensor([90.0, -90.0], dtype=torch.float64).repeat(n // 2 + 1)[:n]
                         - torch.sign(torch.tensor([1.0, -1.0]).repeat(n // 2 + 1)[:n])
                         * 0.5 * torch.rand(n, generator=g, dtype=torch.float64),
                         360 * torch.rand(n, generator=g, dtype=torch.float64) - 180], 1)
    noise = torch.randn(n, s.dim, generator=g, dtype=torch.float64)
    return {
        "delta": (delta, axisymmetric_log_z(L, 1.0)),
        "delta at a pole": (s.encode(latlon=poles), axisymmetric_log_z(L, 1.0)),
        "broad (0.02 x delta)": (0.02 * delta, axisymmetric_log_z(L, 0.02)),
        "noisy delta (+0.05 N(0,1))": (delta + 0.05 * noise, None),
        "two-peak mixture": (0.5 * (delta + s.encode(latlon=places(n))), None),
        "pure noise (0.3 N(0,1))": (0.3 * noise, None),
    }


def dense_seconds(c: torch.Tensor, L: int, n_lat: int) -> float:
    """Time of a dense global GL grid with ``n_lat`` rows for one vector (a slice, scaled)."""
    rows = max(8, n_lat // 16)
    x, _ = np.polynomial.legendre.leggauss(n_lat)
    lat = np.degrees(np.arcsin(x[:rows]))
    lon = -180 + (np.arange(2 * n_lat) + 0.5) * 180 / n_lat
    t = time.perf_counter()
    f = synthesize(c[:1], L, lat, lon)
    torch.logsumexp(f.flatten(), 0)
    return (time.perf_counter() - t) * n_lat / rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 vectors per kind, L = 47")
    ap.add_argument("--L", type=int, default=None, help="degree (default 127; quick: 47)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:  # the numba kernels use their own thread pool
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    except ImportError:
        pass
    L = args.L or (47 if args.quick else 127)
    n = 4 if args.quick else 16
    sys.path.insert(0, str(HERE))
    from _record import record

    prev = previous_log_partition()
    with record("log_partition", f"log-partition speed and accuracy, L = {L}",
                quick=args.quick, out=args.out):
        log_partition(fields(L, 2, seed=1)["delta"][0], L)  # compile the kernels once
        rows = []
        for kind, (c, ref) in fields(L, n).items():
            t = time.perf_counter()
            z = log_partition(c, L)
            ours = time.perf_counter() - t
            err = f"{float((z - ref).abs().max()):.1e}" if ref is not None else "-"
            if prev is not None:
                t = time.perf_counter()
                zp = prev(c[:2], L)
                old = (time.perf_counter() - t) * n / 2
                agree = f"{float((zp - z[:2]).abs().max()):.1e}"
            else:
                old, agree = float("nan"), "-"
            # Dense grid: node spacing 0.8 sigma of an encoded point's peak (~1e-4 error).
            sigma = 2 * math.sqrt(4 * math.pi) / (L + 1) ** 2
            n_lat = min(int(math.pi / (0.8 * sigma)), 20000)
            dense = dense_seconds(c, L, n_lat) * n
            rows.append((kind, ours, old, dense, err, agree))
        print(f"16 vectors per kind{' (quick: 4)' if args.quick else ''}, L = {L}, float64; "
              f"times in seconds for all vectors of a kind; error = |log Z - reference| "
              f"(goal <= 1e-3).\n")
        print("kind | ours s | previous s | ratio | dense GL grid s (extrapolated) | ratio | "
              "error vs 1-D reference | |ours - previous| (2 vectors)")
        print("---|---|---|---|---|---|---|---")
        for kind, ours, old, dense, err, agree in rows:
            print(f"{kind} | {ours:.3f} | {old:.2f} | {old / ours:.1f}x | {dense:.1f} | "
                  f"{dense / ours:.0f}x | {err} | {agree}")
        print(f"\nDense grid: {n_lat} Gauss-Legendre rows x {2 * n_lat} longitudes, spacing "
              f"0.8 sigma of an encoded point (width 2 / ((L+1) sqrt(peak)))); previous = "
              f"git {PREVIOUS}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
