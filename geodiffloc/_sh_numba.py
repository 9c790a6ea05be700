"""Fused numba kernel for real spherical harmonics (the CPU fast path of ``harmonics``).

One pass per point writes its whole output row once: the normalised Legendre
recurrence runs in float64 scalars (registers, no float64 array of the output's size)
and each value is cast on write. Longitude factors come from the Chebyshev recurrence
``cos((m+1) phi) = 2 cos(phi) cos(m phi) - cos((m-1) phi)`` (error ~ m * 1e-16).

Everything here is optional: :func:`available` is False when numba is missing or fails
to import, and ``harmonics`` then uses its pure-torch path (also used on GPUs and for
autograd). Set ``GEODIFFLOC_NO_NUMBA=1`` to force the torch path.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from types import ModuleType

import numpy as np

numba: ModuleType | None
try:  # pragma: no cover - exercised by whichever environment runs the tests
    if os.environ.get("GEODIFFLOC_NO_NUMBA", "") not in ("", "0"):
        raise ImportError("disabled by GEODIFFLOC_NO_NUMBA")
    import numba as _numba
    from numba import prange

    numba = _numba
except Exception:  # numba may fail on import against a newer numpy
    numba = None

__all__ = ["available", "fill_real_sph_harm"]

# numba's default "workqueue" threading layer must not be entered from two Python
# threads at once (e.g. Dask's threaded scheduler); one kernel at a time is safe.
_LOCK = threading.Lock()


def available() -> bool:
    """Whether the numba kernel can be used."""
    return numba is not None


class _Locked:
    """``_LOCK``, and on first entry numba's threads started without touching torch's.

    numba's OpenMP layer sets the process-wide OpenMP thread count to
    ``NUMBA_NUM_THREADS`` when it starts its threads, and torch reads that same count:
    a session pinned to one torch thread found itself on all cores after its first
    harmonics call. The threads are started here once, and torch's count put back.
    """

    started = False

    def __enter__(self) -> None:
        _LOCK.acquire()
        if not _Locked.started and numba is not None:
            import torch

            before = torch.get_num_threads()
            numba.get_num_threads()  # starts the threading layer
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
            _Locked.started = True

    def __exit__(self, *exc: object) -> None:
        _LOCK.release()


_LOCKED = _Locked()


if numba is not None:

    @numba.njit(parallel=True, cache=True, nogil=True)
    def _kernel(lat_deg, lon_deg, L, a, b, sect, w, out):  # pragma: no cover - jitted
        n = lat_deg.shape[0]
        d2r = math.pi / 180.0
        root2 = math.sqrt(2.0)
        seed = 1.0 / math.sqrt(4.0 * math.pi)
        for i in prange(n):
            lat = lat_deg[i] * d2r
            lon = lon_deg[i] * d2r
            x = math.sin(lat)
            s = math.cos(lat)
            c1 = math.cos(lon)
            s1 = math.sin(lon)
            cm, sm = 1.0, 0.0          # cos(m phi), sin(m phi)
            cp, sp = c1, -s1           # cos((m-1) phi), sin((m-1) phi)
            pmm = seed
            for m in range(L + 1):
                if m > 0:
                    pmm = pmm * sect[m] * s
                    cn = 2.0 * c1 * cm - cp
                    sn = 2.0 * c1 * sm - sp
                    cp, sp, cm, sm = cm, sm, cn, sn
                if m == 0:
                    fc, fs = 1.0, 0.0
                else:
                    fc, fs = root2 * cm, root2 * sm
                p2 = 0.0
                p1 = pmm
                for l in range(m, L + 1):
                    if l > m:
                        p = a[l, m] * x * p1 - b[l, m] * p2
                        p2 = p1
                        p1 = p
                    base = l * l + l
                    wl = w[l] * p1
                    out[i, base + m] = wl * fc
                    if m > 0:
                        out[i, base - m] = wl * fs


    @numba.njit(parallel=True, cache=True, nogil=True)
    def _deriv_kernel(lat_deg, lon_deg, c, L, a, b, sect, e_tab, out):  # pragma: no cover - jitted
        """Per point i: f and its lat/lon derivatives up to 2nd order for vector c[i]."""
        n = lat_deg.shape[0]
        d2r = math.pi / 180.0
        root2 = math.sqrt(2.0)
        seed = 1.0 / math.sqrt(4.0 * math.pi)
        for i in prange(n):
            lat = lat_deg[i] * d2r
            lon = lon_deg[i] * d2r
            x = math.sin(lat)
            s = math.cos(lat)
            t = x / s
            c1 = math.cos(lon)
            s1 = math.sin(lon)
            cm, sm = 1.0, 0.0
            cp, sp = c1, -s1
            pmm = seed
            f = ft = fp = ftt = ftp = fpp = 0.0
            for m in range(L + 1):
                if m > 0:
                    pmm = pmm * sect[m] * s
                    cn = 2.0 * c1 * cm - cp
                    sn = 2.0 * c1 * sm - sp
                    cp, sp, cm, sm = cm, sm, cn, sn
                p2 = 0.0
                p1 = pmm
                prev = 0.0
                for l in range(m, L + 1):
                    if l > m:
                        p = a[l, m] * x * p1 - b[l, m] * p2
                        p2 = p1
                        prev = p1
                        p1 = p
                    # d/dlat P_lm(sin lat) and the Legendre equation for the 2nd derivative
                    e = e_tab[l, m]
                    dp = (-l * x * p1 + e * prev) / s
                    d2p = t * dp - (l * (l + 1.0) - m * m / (s * s)) * p1
                    base = l * l + l
                    if m == 0:
                        v, w = c[i, base], 0.0
                    else:
                        cc = root2 * c[i, base + m]
                        cs = root2 * c[i, base - m]
                        v = cc * cm + cs * sm
                        w = m * (cs * cm - cc * sm)
                    f += p1 * v
                    ft += dp * v
                    ftt += d2p * v
                    fp += p1 * w
                    ftp += dp * w
                    fpp -= m * m * p1 * v
            out[i, 0] = f
            out[i, 1] = ft
            out[i, 2] = fp
            out[i, 3] = ftt
            out[i, 4] = ftp
            out[i, 5] = fpp


    @numba.njit(parallel=True, cache=True, nogil=True)
    def _field_kernel(lat_deg, lon_deg, c, L, a, b, sect, out):  # pragma: no cover - jitted
        """out[i] = sum_lm c[lm] Y_lm(point i): the harmonics are never stored."""
        n = lat_deg.shape[0]
        d2r = math.pi / 180.0
        root2 = math.sqrt(2.0)
        seed = 1.0 / math.sqrt(4.0 * math.pi)
        for i in prange(n):
            lat = lat_deg[i] * d2r
            lon = lon_deg[i] * d2r
            x = math.sin(lat)
            s = math.cos(lat)
            c1 = math.cos(lon)
            s1 = math.sin(lon)
            cm, sm = 1.0, 0.0
            cp, sp = c1, -s1
            pmm = seed
            f = 0.0
            for m in range(L + 1):
                if m > 0:
                    pmm = pmm * sect[m] * s
                    cn = 2.0 * c1 * cm - cp
                    sn = 2.0 * c1 * sm - sp
                    cp, sp, cm, sm = cm, sm, cn, sn
                p2 = 0.0
                p1 = pmm
                acc_c = 0.0
                acc_s = 0.0
                for l in range(m, L + 1):
                    if l > m:
                        p = a[l, m] * x * p1 - b[l, m] * p2
                        p2 = p1
                        p1 = p
                    base = l * l + l
                    acc_c += p1 * c[base + m]
                    if m > 0:
                        acc_s += p1 * c[base - m]
                if m == 0:
                    f += acc_c
                else:
                    f += root2 * (acc_c * cm + acc_s * sm)
            out[i] = f


    @numba.njit(parallel=True, cache=True, nogil=True)
    def _fourier_kernel(lat_deg, c, L, a, b, sect, out_a, out_b):  # pragma: no cover - jitted
        """Fourier coefficients of f along the parallel at each latitude:
        f(lat_i, phi) = sum_m out_a[i, m] cos(m phi) + out_b[i, m] sin(m phi)."""
        n = lat_deg.shape[0]
        d2r = math.pi / 180.0
        root2 = math.sqrt(2.0)
        seed = 1.0 / math.sqrt(4.0 * math.pi)
        for i in prange(n):
            lat = lat_deg[i] * d2r
            x = math.sin(lat)
            s = math.cos(lat)
            pmm = seed
            for m in range(L + 1):
                if m > 0:
                    pmm = pmm * sect[m] * s
                p2 = 0.0
                p1 = pmm
                acc_c = 0.0
                acc_s = 0.0
                for l in range(m, L + 1):
                    if l > m:
                        p = a[l, m] * x * p1 - b[l, m] * p2
                        p2 = p1
                        p1 = p
                    base = l * l + l
                    acc_c += p1 * c[base + m]
                    if m > 0:
                        acc_s += p1 * c[base - m]
                if m == 0:
                    out_a[i, 0] = acc_c
                    out_b[i, 0] = 0.0
                else:
                    out_a[i, m] = root2 * acc_c
                    out_b[i, m] = root2 * acc_s


def _tables(L: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from .harmonics import _recurrence

    a_full, b_full, sect = _recurrence(L)
    # The kernel indexes [l, m] for m >= 0; the torch path keeps a mirrored layout.
    return (np.ascontiguousarray(a_full[:, L:]), np.ascontiguousarray(b_full[:, L:]),
            np.ascontiguousarray(sect))


@functools.lru_cache(maxsize=16)
def _derivative_table(L: int) -> np.ndarray:
    """``e[l, m] = sqrt((2l+1)(l^2-m^2)/(2l-1))``: ``cos^2(lat) dP_lm/dx`` needs ``e P_{l-1,m}``."""
    l, m = np.meshgrid(np.arange(L + 1.0), np.arange(L + 1.0), indexing="ij")
    return np.sqrt(np.clip((2 * l + 1) * (l * l - m * m), 0, None) / np.maximum(2 * l - 1, 1.0))


def fill_real_sph_harm(latlon: np.ndarray, L: int, out: np.ndarray,
                       weights: np.ndarray | None = None, threads: int | None = None) -> None:
    """Write ``w_l Y_lm`` of every point of ``latlon`` ``(n, 2)`` into ``out`` ``(n, d)``.

    ``out`` may be float32 or float64 and must be C-contiguous; ``weights`` are per
    degree (``L + 1``; default ones).
    """
    a, b, sect = _tables(L)
    w = np.ones(L + 1) if weights is None else np.ascontiguousarray(weights, np.float64)
    ll = np.asarray(latlon, dtype=np.float64)
    lat = np.ascontiguousarray(ll[:, 0])
    lon = np.ascontiguousarray(ll[:, 1])
    if numba is None:
        raise RuntimeError("the numba kernel is not available; check available() first.")
    with _LOCKED:
        if threads is not None:
            most = int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))  # set at numba's import
            numba.set_num_threads(max(1, min(int(threads), most)))
        _kernel(lat, lon, L, a, b, sect, w, out)



def field_derivatives(latlon: np.ndarray, coeffs: np.ndarray, L: int) -> np.ndarray:
    """``(n, 6)``: ``f, f_lat, f_lon, f_lat_lat, f_lat_lon, f_lon_lon`` (radians) of
    ``f = sum coeffs[i] Y`` at point ``i``. Not for points within ~1e-6 deg of a pole."""
    a, b, sect = _tables(L)
    ll = np.asarray(latlon, dtype=np.float64)
    c = np.ascontiguousarray(coeffs, dtype=np.float64)
    out = np.empty((ll.shape[0], 6))
    with _LOCKED:
        _deriv_kernel(np.ascontiguousarray(ll[:, 0]), np.ascontiguousarray(ll[:, 1]), c, L,
                      a, b, sect, _derivative_table(L), out)
    return out


def field_values(latlon: np.ndarray, coeffs: np.ndarray, L: int) -> np.ndarray:
    """``(n,)`` float64 ``f = sum coeffs Y`` at ``latlon`` ``(n, 2)`` for one ``(d,)`` vector,
    without storing the ``(n, d)`` harmonics (for many points at high L)."""
    a, b, sect = _tables(L)
    ll = np.asarray(latlon, dtype=np.float64)
    out = np.empty(ll.shape[0])
    with _LOCKED:
        _field_kernel(np.ascontiguousarray(ll[:, 0]), np.ascontiguousarray(ll[:, 1]),
                      np.ascontiguousarray(coeffs, dtype=np.float64), L, a, b, sect, out)
    return out


def fourier_rows(lat_deg: np.ndarray, coeffs: np.ndarray, L: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(A, B)``, each ``(n_lat, L+1)``, with ``f(lat_i, phi) = sum_m A[i, m] cos(m phi)
    + B[i, m] sin(m phi)`` for one ``(d,)`` vector (no Legendre table is stored)."""
    a, b, sect = _tables(L)
    lat = np.ascontiguousarray(lat_deg, dtype=np.float64)
    out_a = np.empty((lat.size, L + 1))
    out_b = np.empty((lat.size, L + 1))
    with _LOCKED:
        _fourier_kernel(lat, np.ascontiguousarray(coeffs, dtype=np.float64), L, a, b, sect,
                        out_a, out_b)
    return out_a, out_b
