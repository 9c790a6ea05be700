"""One-shot device check of the SHDD engine: same results on ``--device`` as on CPU, and timings.

Self-contained on purpose: it imports only ``geodiffloc.harmonics``, ``geodiffloc.sphere``
(numpy/torch only) and ``geodiffloc.shdd`` (numpy, torch, scipy), never geopandas,
rioxarray, pyproj or diffusers, so it runs on a bare GPU box with just torch + numpy +
scipy (numba optional: without it the CPU side uses the torch path too). Finishes in
well under two minutes on an H200::

    python benchmarks/gpu_check.py            # cuda if available
    python benchmarks/gpu_check.py --device cpu

For each step it prints the CPU time, the device time and the largest disagreement;
the exit status is 1 if any step disagrees beyond its tolerance.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from geodiffloc import _sh_numba
from geodiffloc.harmonics import real_sph_harm
from geodiffloc.shdd.core import SHDD
from geodiffloc.shdd.synthesis import synthesize
from geodiffloc.sphere import LatLonGrid, fibonacci_lattice, uniform_random

R_KM = 6371.0088


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], object], dev: torch.device, repeat: int = 3) -> tuple[float, object]:
    """Best of ``repeat`` after one warm-up call (compiles, allocator, caches)."""
    out = fn()
    _sync(dev)
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t)
    return best, out


def gc_km(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = torch.deg2rad(a.double().cpu()), torch.deg2rad(b.double().cpu())
    s = (torch.sin((b[:, 0] - a[:, 0]) / 2) ** 2
         + torch.cos(a[:, 0]) * torch.cos(b[:, 0]) * torch.sin((b[:, 1] - a[:, 1]) / 2) ** 2)
    return 2 * R_KM * torch.asin(torch.sqrt(s.clamp(0, 1)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=min(16, os.cpu_count() or 1))
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    args = p.parse_args()
    dev = torch.device(args.device)
    cpu = torch.device("cpu")
    torch.set_num_threads(args.threads)
    q = args.quick
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"# SHDD device check: torch {torch.__version__}, device {dev} ({name}), "
          f"{args.threads} CPU threads, numba kernel: {_sh_numba.available()}, "
          f"load {os.getloadavg()[0]:.1f}")
    rows: list[list[str]] = []
    failed = False

    def record(step: str, t_cpu: float, t_dev: float, err: float, tol: float, unit: str) -> None:
        nonlocal failed
        ok = err <= tol
        failed |= not ok
        rows.append([step, f"{t_cpu:.4f}", f"{t_dev:.4f}", f"{t_cpu / t_dev:.1f}x",
                     f"{err:.2e} {unit}", f"<= {tol:.0e}", "ok" if ok else "FAIL"])

    g = torch.Generator().manual_seed(0)
    # 1. real SH / encode, L = 47 and 127, float32 output.
    for L, n in ((47, 20_000 if q else 100_000), (127, 5_000 if q else 20_000)):
        pts = uniform_random(n, generator=g, dtype=torch.float64)
        pts_d = pts.to(dev)
        t_c, y_c = timed(lambda pts=pts, L=L: real_sph_harm(pts, L, dtype=torch.float32), cpu)
        t_d, y_d = timed(lambda p=pts_d, L=L: real_sph_harm(p, L, dtype=torch.float32), dev)
        err = float((y_d.cpu() - y_c).abs().max())
        record(f"real_sph_harm L={L}, {n:,} pts, f32", t_c, t_d, err, 2e-5, "abs")
        del y_c, y_d
    s47 = SHDD(47)
    pts = uniform_random(2_000, generator=g, dtype=torch.float64)
    t_c, e_c = timed(lambda: s47.encode(latlon=pts.float()), cpu)
    t_d, e_d = timed(lambda: s47.encode(latlon=pts.float().to(dev)), dev)
    record("SHDD(47).encode 2,000 pts", t_c, t_d, float((e_d.cpu() - e_c).abs().max()), 2e-5,
           "abs")
    # autograd path on the device
    ll = pts[:64].clone().to(dev).requires_grad_(True)
    (real_sph_harm(ll, 20) ** 2).sum().backward()
    record("autograd real_sph_harm L=20 (grad finite)", 0.0 + 1e-9, 1e-9,
           0.0 if bool(torch.isfinite(ll.grad).all()) else math.inf, 0.0, "")

    # 2. field values: 16 vectors, L = 47, 0.25 degree global grid, cell masses.
    n_vec = 4 if q else 16
    truth = uniform_random(n_vec, generator=g, dtype=torch.float64)
    coeffs = s47.encode(latlon=truth).float() + 0.5 * torch.randn(n_vec, s47.dim, generator=g)
    grid = LatLonGrid.global_(0.25)
    log_area = torch.log(torch.as_tensor(grid.cell_area_sr()))[:, None]

    def masses(c: torch.Tensor) -> torch.Tensor:
        return s47._grid_log_mass(c, grid, log_area.to(c.device), "mass")

    t_c, m_c = timed(lambda: masses(coeffs), cpu)
    t_d, m_d = timed(lambda: masses(coeffs.to(dev)), dev)
    err = float(((m_d.cpu() - m_c).abs().amax((1, 2)) / m_c.amax((1, 2))).max())
    record(f"field masses {n_vec} x 720 x 1440, L=47", t_c, t_d, err, 1e-4, "rel. peak")
    sums = m_d.sum((1, 2)).double().cpu()
    record("field masses sum to 1 (device)", 1e-9, 1e-9, float((sums - 1).abs().max()), 1e-4,
           "abs")
    c127 = SHDD(127).encode(latlon=truth[:4]).double()
    t_c, f_c = timed(lambda: synthesize(c127, 127, grid.lat, grid.lon), cpu, repeat=1)
    t_d, f_d = timed(lambda: synthesize(c127.to(dev), 127, grid.lat, grid.lon), dev, repeat=1)
    err = float((f_d.cpu() - f_c).abs().max() / f_c.abs().max())
    record("synthesize f64 4 x 720 x 1440, L=127", t_c, t_d, err, 1e-10, "rel. peak")

    # 3. decode: noisy vectors against 100k anchors (search on CPU, refinement on device).
    try:
        import scipy  # noqa: F401
    except ImportError:
        print("# scipy missing: decode and log_partition skipped")
    else:
        n_dec = 128 if q else 512
        truth = uniform_random(n_dec, generator=g, dtype=torch.float64)
        noisy = s47.encode(latlon=truth).float() + 0.5 * torch.randn(n_dec, s47.dim, generator=g)
        anchors = fibonacci_lattice(100_000)
        t_c, d_c = timed(lambda: s47.decode(noisy, anchors), cpu, repeat=1)
        t_d, d_d = timed(lambda: s47.decode(noisy.to(dev), anchors), dev, repeat=1)
        err = float(gc_km(d_c, d_d).max()) * 1000
        record(f"decode {n_dec} vectors, 100k anchors, L=47", t_c, t_d, err, 10.0, "m")
        clean = s47.encode(latlon=truth[:64]).float()
        t_c, _ = timed(lambda: s47.decode(clean, anchors), cpu, repeat=1)
        t_d, r_d = timed(lambda: s47.decode(clean.to(dev), anchors), dev, repeat=1)
        err = float(gc_km(truth[:64], r_d).max()) * 1000
        record("round trip decode(encode(p)) 64 pts, max", t_c, t_d, err, 1000.0, "m")
        # 4. log partition (a sharp and a broad field).
        c = torch.cat([s47.encode(lat=[10.0], lon=[20.0]).double(),
                       0.05 * s47.encode(lat=[-40.0], lon=[100.0]).double()])
        t_c, z_c = timed(lambda: s47.log_partition(c), cpu, repeat=1)
        t_d, z_d = timed(lambda: s47.log_partition(c.to(dev)), dev, repeat=1)
        record("log_partition 2 vectors, L=47", t_c, t_d, float((z_d.cpu() - z_c).abs().max()),
               1e-6, "abs")

    widths = [max(len(r[i]) for r in [*rows, HEADER]) for i in range(len(HEADER))]
    print(" | ".join(h.ljust(w) for h, w in zip(HEADER, widths)))
    print("-|-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    print("RESULT:", "FAIL" if failed else "all steps agree")
    return 1 if failed else 0


HEADER = ["step", "cpu s", "device s", "cpu/device", "max disagreement", "tolerance", ""]

if __name__ == "__main__":
    sys.exit(main())
