"""Refuse, before allocating, requests that cannot fit in memory.

A 0.01 degree global field for 512 vectors is 18000 x 36000 x 512 float32 values
(1.3 TB): better a clear ``ValueError`` naming the size and the fix than an
out-of-memory kill minutes later.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..sphere import LatLonGrid

__all__ = ["available_bytes", "check_field_memory", "format_bytes"]

# Peak of a field request relative to its float32 output: the output itself plus the
# half-length complex spectrum the inverse FFT reads (about the same size).
_FIELD_PEAK_FACTOR = 2.0
# Leave this share of the free memory to everything else in the process.
_USABLE_SHARE = 0.8


def format_bytes(n: float) -> str:
    """``1.3 TB``-style size."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000.0
    return f"{n:.1f} TB"  # pragma: no cover


def available_bytes(device: torch.device | str | None = None) -> int:
    """Memory a new allocation can use now: free GPU memory, or available RAM on CPU.

    ``GEODIFFLOC_MAX_BYTES`` overrides it (a cap for shared machines, or tests).
    """
    env = os.environ.get("GEODIFFLOC_MAX_BYTES")
    if env:
        return int(float(env))
    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil ships with most stacks
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62  # unknown: do not refuse


def check_field_memory(n_vectors: int, grid: LatLonGrid, device: torch.device | str) -> None:
    """Raise ``ValueError`` if ``n_vectors`` fields on ``grid`` will not fit in memory."""
    n_lat, n_lon = grid.shape
    out = 4 * n_vectors * n_lat * n_lon
    need = _FIELD_PEAK_FACTOR * out
    have = _USABLE_SHARE * available_bytes(device)
    if need <= have:
        return
    raise ValueError(
        f"a field of {n_vectors} vector(s) on a {grid.resolution} degree grid "
        f"({n_lat} x {n_lon} cells) needs about {format_bytes(need)} "
        f"(output {format_bytes(out)}), but only about {format_bytes(have)} is available "
        f"on {torch.device(device)}. Pass bbox=(west, south, east, north) for a region, "
        f"a coarser resolution, or fewer vectors at a time (e.g. coeffs[:k])."
    )
