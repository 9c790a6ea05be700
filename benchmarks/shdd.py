"""Benchmark the SHDD stack: harmonics, encode, decode, field synthesis, round trips.

Every table holds a baseline measured in the same run:

1. SH evaluation (L = 47, 100k random points, float32) against, in the same run: a
   plain torch normalised-Legendre recursion (fully vectorised over points, one pass
   over (l, m)), the library's own torch path (what runs on GPUs / without numba),
   the memory-write floor (allocating and filling the same output), and scipy's
   ``sph_harm_y_all`` (on a subset, time extrapolated per point) for accuracy;
2. encode throughput vs the same scipy baseline;
3. decode: 512 noisy vectors at L = 47 against 100,000 Fibonacci anchors, the dense
   search vs coarse-to-fine (which sends heavy-noise vectors to the grid search) and vs
   the grid search (the default), with the share of vectors where each picks the dense
   anchor, and the default decode with its refinement;
4. field synthesis: 16 vectors at L = 47 on a 0.25 degree grid via ``SHDD.field``
   (cell masses) and the bare float32 synthesis vs torch-harmonics ``InverseRealSHT``
   on a 720 x 1440 equiangular grid (same number of cells; its grids have no
   cell-centre rows, so it is the yardstick, not the engine) and vs a dense basis
   matrix (built on a 1 degree grid and extrapolated by the cell count);
5. round-trip error decode(encode(p)) for L = 15, 23, 47, 63, 127 next to the
   20000 / L km rule of thumb and ``SHDD.width_km``.

Run ``python benchmarks/shdd.py`` (a few minutes on 2 idle cores) or ``--quick``
(under 2 minutes). The tables are printed and written to ``benchmarks/results/shdd.md``
(``shdd_quick.md``) under a header with the commit, date, machine, threads and load.
Timings on a shared machine vary with its load: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

import geodiffloc.harmonics as H
from geodiffloc import SHDD
from geodiffloc.harmonics import _recurrence, degree_order, real_sph_harm
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


def plain_torch_sh(latlon: torch.Tensor, L: int) -> torch.Tensor:
    """Baseline: plain float32 normalised-Legendre recursion, vectorised over points and m.

    One pass over degrees l; each step updates all orders at once and writes the
    degree's (2l+1)-wide block of the output.
    """
    a_np, b_np, sect_np = _recurrence(L)
    a = torch.as_tensor(a_np[:, L:], dtype=torch.float32)  # [l, m], m >= 0
    b = torch.as_tensor(b_np[:, L:], dtype=torch.float32)
    lat, lon = torch.deg2rad(latlon[:, 0]).float(), torch.deg2rad(latlon[:, 1]).float()
    x, s = torch.sin(lat)[:, None], torch.cos(lat)
    m = torch.arange(1, L + 1, dtype=torch.float32)
    cos_m, sin_m = math.sqrt(2) * torch.cos(lon[:, None] * m), math.sqrt(2) * torch.sin(
        lon[:, None] * m)
    sect = torch.cumprod(torch.as_tensor(sect_np, dtype=torch.float32)[1:] * s[:, None], 1)
    sect = torch.cat([torch.ones_like(s)[:, None], sect], 1) / math.sqrt(4 * math.pi)
    out = torch.empty(latlon.shape[0], (L + 1) ** 2)
    p_prev2 = torch.zeros(latlon.shape[0], L + 1)
    p_prev = torch.zeros(latlon.shape[0], L + 1)
    for l in range(L + 1):
        p = a[l] * x * p_prev - b[l] * p_prev2
        p[:, l] = sect[:, l]
        blk = out[:, l * l : (l + 1) * (l + 1)]
        blk[:, l] = p[:, 0]
        if l:
            blk[:, l + 1 :] = p[:, 1 : l + 1] * cos_m[:, :l]
            blk[:, :l] = (p[:, 1 : l + 1] * sin_m[:, :l]).flip(1)
        p_prev2, p_prev = p_prev, p
    return out


def bench_harmonics(n: int, n_ref: int, L: int = 47) -> float:
    g = torch.Generator().manual_seed(0)
    pts = uniform_random(n, generator=g, dtype=torch.float64)
    sub = pts[:n_ref].numpy()
    t_ref, ref = timed(lambda: scipy_real(sub, L))
    t_ref_full = t_ref / n_ref * n
    real_sph_harm(pts[:10], L, dtype=torch.float32)  # numba compiles (or loads its cache)
    t_ours, y = timed(lambda: real_sph_harm(pts, L, dtype=torch.float32), repeat=3)
    err = np.abs(y[:n_ref].double().numpy() - ref).max()
    del y
    t_floor, _ = timed(lambda: torch.empty(n, (L + 1) ** 2).fill_(1.0), repeat=3)
    t_plain, yp = timed(lambda: plain_torch_sh(pts, L))
    err_plain = np.abs(yp[:n_ref].double().numpy() - ref).max()
    del yp
    use = H._use_numba
    H._use_numba = lambda out: False
    try:
        t_torch, yt = timed(lambda: real_sph_harm(pts, L, dtype=torch.float32))
    finally:
        H._use_numba = use
    err_torch = np.abs(yt[:n_ref].double().numpy() - ref).max()
    del yt
    kernel = "numba kernel" if H._sh_numba.available() else "torch path (numba missing)"
    rows = [
        [f"ours: real_sph_harm ({kernel})", f"{t_ours:.3f}", "1.0x", f"{err:.1e}"],
        ["memory-write floor: empty + fill_ of the output", f"{t_floor:.3f}",
         f"{t_floor / t_ours:.2f}x", "-"],
        ["plain torch recursion, float32", f"{t_plain:.3f}", f"{t_plain / t_ours:.1f}x",
         f"{err_plain:.1e}"],
        ["ours, torch path (GPU / no numba), float64 recurrence", f"{t_torch:.3f}",
         f"{t_torch / t_ours:.1f}x", f"{err_torch:.1e}"],
        [f"scipy sph_harm_y_all float64 ({n_ref:,} pts, extrapolated)", f"{t_ref_full:.2f}",
         f"{t_ref_full / t_ours:.0f}x", "reference"],
    ]
    table(f"SH evaluation, L = {L} ({(L + 1) ** 2} functions), {n:,} random points, float32 "
          f"output (ratio = time / ours)",
          ["method", "time s", "ratio", "max abs err vs scipy"], rows)
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


def bench_decode(n_vec: int, n_anchors: int, L: int = 47, quick: bool = False) -> None:
    s = SHDD(L)
    g = torch.Generator().manual_seed(2)
    truth = uniform_random(n_vec, generator=g, dtype=torch.float64)
    clean = s.encode(latlon=truth).float()
    anchors = fibonacci_lattice(n_anchors)
    t_index, _ = timed(lambda: s.decode(clean[:4], anchors, refine=False))  # builds caches
    s.decode(clean[:4], anchors, method="grid")  # one-time costs (numba compiles) not timed
    rows, agreements = [], []
    for sigma in (0.5,) if quick else (0.5, 2.0, 5.0):
        noisy = clean + sigma * torch.randn(clean.shape, generator=g)
        t_d, dense = timed(lambda x=noisy: s.decode(x, anchors, refine=False, method="dense"))
        t_c, fast = timed(lambda x=noisy: s.decode(x, anchors, refine=False,
                                                   method="coarse_to_fine"), repeat=2)
        t_g, grid = timed(lambda x=noisy: s.decode(x, anchors, refine=False, method="grid"),
                          repeat=2)
        t_r, refined = timed(lambda x=noisy: s.decode(x, anchors))
        agree = (gc_km(fast.numpy(), dense.numpy()) < 1.0).mean()
        agree_g = (gc_km(grid.numpy(), dense.numpy()) < 1.0).mean()
        agreements.append(agree)
        err = gc_km(truth.numpy(), refined.numpy())
        err_dense = gc_km(truth.numpy(), dense.numpy())
        rows.append([f"{sigma}", f"{t_d:.3f}", f"{t_c:.3f}", f"{t_d / t_c:.1f}x",
                     f"{agree:.1%}", f"{t_g:.3f}", f"{t_d / t_g:.1f}x", f"{agree_g:.1%}",
                     f"{np.median(err_dense):.1f}", f"{t_r:.2f}",
                     f"{max(t_r - t_g, 0.0) / t_g:.2f}", f"{np.median(err):.1f}"])
    table(f"decode: {n_vec} noisy vectors (encode + N(0, sigma^2) per coefficient), L = {L}, "
          f"{n_anchors:,} Fibonacci anchors (index + harmonics cache built once: "
          f"{t_index:.1f} s)",
          ["sigma", "dense s", "coarse_to_fine s", "speed-up", "same anchor", "grid s",
           "grid speed-up", "grid same anchor", "dense anchor median err km",
           "default (grid) + refine s",
           "refine / grid search", "default + refine median err km"],
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
    from geodiffloc.shdd.synthesis import synthesize

    t_syn, f32 = timed(lambda: synthesize(e, L, LatLonGrid.global_(res).lat,
                                          LatLonGrid.global_(res).lon, dtype=torch.float32),
                       repeat=2)
    f64 = synthesize(e, L, LatLonGrid.global_(res).lat, LatLonGrid.global_(res).lon)
    f32_err = float((f32.double() - f64).abs().max() / f64.abs().max())
    del f32, f64
    try:
        import torch_harmonics as th

        n_lat, n_lon = LatLonGrid.global_(res).shape
        isht = th.InverseRealSHT(n_lat, n_lon, lmax=L + 1, mmax=L + 1, grid="equiangular")
        spec = torch.randn(n_vec, L + 1, L + 1, dtype=torch.complex64, generator=g)
        t_isht, _ = timed(lambda: isht(spec), repeat=2)
        isht_name = f"torch-harmonics {th.__version__} InverseRealSHT {n_lat} x {n_lon}"
    except ImportError:
        t_isht, isht_name = math.nan, "torch-harmonics not installed"
    ours_coarse = s.field(e, resolution=dense_res).values
    err = np.abs(ours_coarse - ref.double().numpy()).max() / ref.max().item()
    scale = (dense_res / res) ** 2
    n_cells = LatLonGrid.global_(res).shape
    rows = [
        [f"dense basis, {dense_res} deg grid (measured)", f"{t_basis:.2f}", f"{t_dense:.3f}",
         "-"],
        [f"dense basis, {res} deg grid (extrapolated x{scale:.0f} cells)",
         f"{t_basis * scale:.1f}", f"{t_dense * scale:.2f}", "1.0x"],
        [f"SHDD.field, {res} deg grid ({n_cells[1]} x {n_cells[0]}), cell masses", "-",
         f"{t_field:.3f}", f"{t_dense * scale / t_field:.0f}x"],
        [f"ours: float32 synthesize only (max err {f32_err:.1e} of |f| peak vs float64)", "-",
         f"{t_syn:.3f}", f"{t_dense * scale / t_syn:.0f}x"],
        [isht_name, "-", f"{t_isht:.3f}", f"{t_dense * scale / t_isht:.0f}x"],
    ]
    print(f"\nfield / InverseRealSHT = {t_field / t_isht:.2f}x, synthesize / InverseRealSHT "
          f"= {t_syn / t_isht:.2f}x (same number of cells, same run)")
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
    parser.add_argument("--quick", action="store_true", help="smaller sizes (< 2 min)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch (and numba) threads; 2 = this machine's cores")
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default benchmarks/results/shdd[_quick].md)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from _record import record

    # the record (benchmarks/_record.py) heads the file with commit, machine, threads, load
    with record("shdd", "SHDD speed and resolution (shdd.py)", quick=args.quick, out=args.out):
        q = args.quick
        per_point = bench_harmonics(n=100_000, n_ref=500 if q else 2000)
        bench_encode(20_000 if q else 100_000, per_point)
        bench_decode(n_vec=128 if q else 512, n_anchors=100_000, quick=q)
        bench_field(n_vec=16)
        bench_round_trip(n=200 if q else 1000, n_127=50 if q else 200)


if __name__ == "__main__":
    main()
