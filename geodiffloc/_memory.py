"""Refuse allocations that cannot fit, before making them.

Sizes that grow with user input (grid resolution x vectors, gallery sizes, zonal
supersampling, checkpoint configs) are estimated first and checked against the memory
this process may still use: the smallest of the memory the OS reports available, a
cgroup limit (containers, batch schedulers) and an address-space ``ulimit -v``. A
request that cannot fit raises :class:`TooLargeError` (a ``ValueError`` and a
``MemoryError``) naming the size and the fix, instead of a failed multi-gigabyte
allocation deep inside NumPy or PyTorch (or the OOM killer).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["TooLargeError", "available_bytes", "check_allocation", "format_bytes"]


class TooLargeError(ValueError, MemoryError):
    """A request that would need more memory than is available (refused before allocating).

    Both a ``ValueError`` (the input asked for too much) and a ``MemoryError`` (so code
    that already handles running out of memory keeps working).
    """


def _cgroup_room() -> int | None:
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        with contextlib.suppress(OSError, ValueError):
            limit = Path(limit_file).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:
                return None
            return max(0, int(limit) - int(Path(usage_file).read_text().strip()))
    return None


def _rlimit_room() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        # VmSize: the address space already used counts against the limit
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return max(0, soft - int(line.split()[1]) * 1024)
    return soft


def available_bytes() -> int:
    """Bytes this process can still allocate (best estimate; never raises).

    Examples
    --------
    >>> available_bytes() > 0
    True
    """
    rooms = [r for r in (_cgroup_room(), _rlimit_room()) if r is not None]
    try:
        import psutil

        rooms.append(int(psutil.virtual_memory().available))
    except Exception:  # psutil missing or unsupported platform: fall back to sysconf
        with contextlib.suppress(ValueError, OSError, AttributeError):
            rooms.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    return min(rooms) if rooms else 1 << 62


def format_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``.

    Examples
    --------
    >>> format_bytes(3 * 2**30)
    '3.0 GiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_allocation(nbytes: float, what: str, fix: str, *, fraction: float = 0.8) -> None:
    """Raise :class:`TooLargeError` if ``nbytes`` exceed ``fraction`` of the available memory.

    Parameters
    ----------
    nbytes
        Estimated peak bytes of the step.
    what
        What needs the memory (``"a 0.001-degree global grid"``).
    fix
        How to make it fit (``"use a coarser resolution"``).
    fraction
        Share of the available memory one step may take.

    Examples
    --------
    >>> check_allocation(1024, "a tiny array", "none needed")
    >>> check_allocation(2.0 ** 70, "a huge array", "ask for less")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    geodiffloc._memory.TooLargeError: a huge array needs about 1048576.0 PiB but ...
    """
    room = available_bytes()
    if nbytes > fraction * room:
        raise TooLargeError(
            f"{what} needs about {format_bytes(nbytes)} but only {format_bytes(room)} of "
            f"memory is available; {fix}."
        )
