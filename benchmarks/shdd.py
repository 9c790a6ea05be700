"""Benchmark the SHDD stack: harmonics, encode, decode, field synthesis, round trips.

Every table holds a baseline measured in the same run:

1. SH evaluation (L = 47, 100k random points) in float32/float64 vs scipy's
   ``sph_harm_y_all`` (run on a subset, time extrapolated per point) with accuracy;
2. encode throughput vs the same scipy baseline;
3. decode: 512 noisy vectors at L = 47 against 100,000 Fibonacci anchors, dense search
   vs coarse-to-fine, with the share of vectors where both pick the same anchor;
4. field synthesis: 16 vectors at L = 47 on a 0.25 degree grid via ``SHDD.field`` vs a
   dense basis matrix (built on a 1 degree grid and extrapolated by the cell count,
   since the 0.25 degree basis would take 9.6 GB);
5. round-trip error decode(encode(p)) for L = 15, 23, 47, 63, 127 next to the
   20000 / L km rule of thumb and ``SHDD.width_km``.

Run ``python benchmarks/shdd.py`` (about 2-3 minutes on 2 idle cores) or ``--quick``.
Timings on a shared machine vary with its load; the load average is printed first.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import torch

from geodiffloc import SHDD
from geodiffloc.harmonics import degree_order, real_sph_harm
from geodiffloc.sphere import fibonacci_lattice, uniform_random

R = 6371.0088


def scipy_real(latlon: np.ndarray, L: int) -> np.ndarray:
    """Real orthonormal harmonics from scipy's complex ones (index l*l + l + m)."""
    from scipy.special import sph_harm_y_all

    Y = sph_harm_y_all(L, L, np.deg2rad(90.0 - latlon[:, 0]), np.deg2rad(latlon[:, 1]))
    l, m = degree_order(L)
    am = np.abs(m)
    sign = (-1.0) ** am[:, None]
    pos = math.sqrt(2) * sign * Y[l, am].real
    neg = math.sqrt(2) * sign * Y[l, am].imag
    return np.where(m[:, None] > 0, pos, np.where(m[:, None] < 0, neg, Y[l, 0 * m].real)).T


def timed(fn, repeat: int = 1):
    """Best wall time of ``repeat`` calls and the last result."""
    best, out = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def gc_km(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.deg2rad(a), np.deg2rad(b)
    dl = b[:, 1] - a[:, 1]
    num = np.hypot(np.cos(b[:, 0]) * np.sin(dl), np.cos(a[:, 0]) * np.sin(b[:, 0])
                   - np.sin(a[:, 0]) * np.cos(b[:, 0]) * np.cos(dl))
    den = np.sin(a[:, 0]) * np.sin(b[:, 0]) + np.cos(a[:, 0]) * np.cos(b[:, 0]) * np.cos(dl)
    return R * np.arctan2(num, den)


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n## {title}\n")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


def bench_harmonics(n: int, n_ref: int, L: int = 47) -> float:
    g = torch.Generator().manual_seed(0)
    pts = uniform_random(n, generator=g, dtype=torch.float64)
    sub = pts[:n_ref].numpy()
    t_ref, ref = timed(lambda: scipy_real(sub, L))
    t_ref_full = t_ref / n_ref * n
    rows = [["scipy sph_harm_y_all (float64)", f"{n_ref:,} -> {n:,} extrapolated",
             f"{t_ref_full:.2f}", "1.0x", "reference"]]
    for name, ll, dtype in [("ours float64", pts, torch.float64),
                            ("ours float32 (float64 in)", pts, torch.float32),
                            ("ours float32 (float32 in)", pts.float(), torch.float32)]:
        t, y = timed(lambda ll=ll, dtype=dtype: real_sph_harm(ll, L, dtype=dtype))
        sub_ll = ll[:n_ref].double().numpy()
        ref_sub = ref if sub_ll.dtype == sub.dtype and np.array_equal(sub_ll, sub) else \
            scipy_real(sub_ll, L)
        err = np.abs(y[:n_ref].double().numpy() - ref_sub).max()
        rows.append([name, f"{n:,}", f"{t:.3f}", f"{t_ref_full / t:.0f}x", f"{err:.1e}"])
        del y
    table(f"SH evaluation, L = {L} ({(L + 1) ** 2} functions), {n:,} random points",
          ["method", "points", "time s", "speed-up", "max abs err vs scipy"], rows)
    return t_ref / n_ref


def bench_encode(n: int, scipy_per_point: float) -> None:
    g = torch.Generator().manual_seed(1)
    pts = uniform_random(n, generator=g, dtype=torch.float64).numpy()
    rows = []
    for L in (15, 47, 127):
        s = SHDD(L)
        m = n if L < 127 else n // 4
        t, e = timed(lambda s=s, m=m: s.encode(lat=pts[:m, 0], lon=pts[:m, 1]))
        base = scipy_per_point * (L + 1) ** 2 / 48**2 * m  # scipy cost scales ~ (L+1)^2
        rows.append([str(L), f"{m:,}", f"{t:.3f}", f"{m / t / 1e3:,.0f}k",
                     f"{t / m * 1e6:.2f}", f"{base / t:.0f}x"])
        del e
    table("encode throughput (float32 output, validation included)",
          ["L", "points", "time s", "points/s", "us/point",
           "vs scipy (per-point time at L=47 scaled by (L+1)^2)"], rows)


def bench_decode(n_vec: int, n_anchors: int, L: int = 47) -> None:
    s = SHDD(L)
    g = torch.Generator().manual_seed(2)
    truth = uniform_random(n_vec, generator=g, dtype=torch.float64)
    clean = s.encode(latlon=truth).float()
    anchors = fibonacci_lattice(n_anchors)
    t_index, _ = timed(lambda: s.decode(clean[:4], anchors, refine=False))  # builds caches
    rows, agreements = [], []
    for sigma in (0.5, 2.0, 5.0):
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        t_d, dense = timed(lambda x=noisy: s.decode(x, anchors, refine=False, method="dense"))
        t_c, fast = timed(lambda x=noisy: s.decode(x, anchors, refine=False), repeat=2)
        t_r, refined = timed(lambda x=noisy: s.decode(x, anchors))
        agree = (gc_km(fast.numpy(), dense.numpy()) < 1.0).mean()
        agreements.append(agree)
        err = gc_km(truth.numpy(), refined.numpy())
        err_dense = gc_km(truth.numpy(), dense.numpy())
        rows.append([f"{sigma}", f"{t_d:.3f}", f"{t_c:.3f}", f"{t_d / t_c:.1f}x",
                     f"{agree:.1%}", f"{np.median(err_dense):.1f}", f"{t_r:.2f}",
                     f"{np.median(err):.1f}"])
    table(f"decode: {n_vec} noisy vectors (encode + N(0, sigma^2) per coefficient), L = {L}, "
          f"{n_anchors:,} Fibonacci anchors (index + harmonics cache built once: "
          f"{t_index:.1f} s)",
          ["sigma", "dense s", "coarse_to_fine s", "speed-up", "same anchor",
           "dense anchor median err km", "c2f + refine s", "c2f + refine median err km"],
          rows)


def bench_field(n_vec: int, L: int = 47, res: float = 0.25, dense_res: float = 1.0) -> None:
    from geodiffloc.sphere import LatLonGrid

    s = SHDD(L)
    g = torch.Generator().manual_seed(3)
    truth = uniform_random(n_vec, generator=g, dtype=torch.float64)
    e = s.encode(latlon=truth).float() + 0.5 * torch.randn(n_vec, s.dim, generator=g)
    t_field, da = timed(lambda: s.field(e, resolution=res), repeat=2)
    assert np.allclose(da.sum(("lat", "lon")).values, 1.0)
    # Dense baseline on a coarser grid: build the basis, one matmul, softmax with areas.
    coarse = LatLonGrid.global_(dense_res)
    t_basis, basis = timed(lambda: real_sph_harm(coarse.latlon(), L, dtype=torch.float32))
    log_area = torch.log(torch.as_tensor(coarse.cell_area_sr(), dtype=torch.float32))

    def dense():
        f = (e @ basis.T).reshape(n_vec, *coarse.shape) + log_area[:, None]
        return torch.softmax(f.flatten(1), 1).reshape(f.shape)

    t_dense, ref = timed(dense, repeat=2)
    ours_coarse = s.field(e, resolution=dense_res).values
    err = np.abs(ours_coarse - ref.double().numpy()).max() / ref.max().item()
    scale = (dense_res / res) ** 2
    n_cells = LatLonGrid.global_(res).shape
    rows = [
        [f"dense basis, {dense_res} deg grid (measured)", f"{t_basis:.2f}", f"{t_dense:.3f}",
         "-"],
        [f"dense basis, {res} deg grid (extrapolated x{scale:.0f} cells)",
         f"{t_basis * scale:.1f}", f"{t_dense * scale:.2f}", "1.0x"],
        [f"SHDD.field, {res} deg grid ({n_cells[1]} x {n_cells[0]})", "-", f"{t_field:.3f}",
         f"{t_dense * scale / t_field:.0f}x"],
    ]
    table(f"field synthesis: {n_vec} vectors, L = {L}, cell masses summing to 1 "
          f"(SHDD.field vs dense on the {dense_res} deg grid: max rel. diff {err:.1e})",
          ["method", "basis build s", "synthesis s", "speed-up (synthesis)"], rows)


def bench_round_trip(n: int, n_127: int) -> None:
    rows = []
    for L in (15, 23, 47, 63, 127):
        s = SHDD(L)
        m = n if L < 127 else n_127
        pts = uniform_random(m, generator=torch.Generator().manual_seed(L), dtype=torch.float64)
        e = s.encode(latlon=pts).float()
        t, back = timed(lambda s=s, e=e: s.decode(e))
        err = gc_km(pts.numpy(), back.numpy())
        anchor = s.decode(e, refine=False)
        err_a = gc_km(pts.numpy(), anchor.numpy())
        rows.append([str(L), f"{m:,}", f"{np.median(err) * 1e3:.2g}",
                     f"{np.percentile(err, 99) * 1e3:.2g}", f"{err.max() * 1e3:.2g}",
                     f"{np.median(err_a):.1f}", f"{20000 / L:.0f}", f"{s.width_km:.1f}",
                     f"{t / m * 1e3:.2f}"])
    table("round trip decode(encode(p)), float32 vectors, default anchors, refine=True "
          "(anchor-only median for comparison)",
          ["L", "points", "median m", "p99 m", "max m", "anchor-only median km",
           "20000/L km", "width_km", "ms/point"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (~30 s)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (2 = this machine's cores; on a loaded machine "
                             "1 thread is often much faster than 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"# SHDD benchmark  (torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
          f"{', --quick' if args.quick else ''})")
    if load[0] > (os.cpu_count() or 1):
        print("# NOTE: the machine is busy with other work; timings are pessimistic.")
    q = args.quick
    per_point = bench_harmonics(n=20_000 if q else 100_000, n_ref=500 if q else 2000)
    bench_encode(20_000 if q else 100_000, per_point)
    bench_decode(n_vec=128 if q else 512, n_anchors=100_000)
    bench_field(n_vec=4 if q else 16)
    bench_round_trip(n=200 if q else 1000, n_127=50 if q else 200)


if __name__ == "__main__":
    from _record import record

    with record("shdd", "SHDD speed and resolution (shdd.py)", quick="--quick" in sys.argv):
        main()
