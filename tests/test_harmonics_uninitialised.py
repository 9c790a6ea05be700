"""Regression: the fast path must not read uninitialised memory.

Entries outside the recurrence band are multiplied by zero coefficients; if the
buffers are allocated uninitialised and happen to hold NaN, ``0 * NaN`` poisons the
result. Torch's deterministic mode fills fresh memory with NaN, which exposes it.
"""

import torch

from geodiffloc.harmonics import real_sph_harm


def test_fast_path_is_finite_when_fresh_memory_holds_nan():
    old_det = torch.are_deterministic_algorithms_enabled()
    old_fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        torch.use_deterministic_algorithms(True)
        torch.utils.deterministic.fill_uninitialized_memory = True
        g = torch.Generator().manual_seed(0)
        latlon = torch.rand(3000, 2, generator=g, dtype=torch.float64)
        latlon[:, 0] = latlon[:, 0] * 180 - 90
        latlon[:, 1] = latlon[:, 1] * 360 - 180
        fast = real_sph_harm(latlon, 23, chunk=512)
        slow = real_sph_harm(latlon.clone().requires_grad_(True), 23).detach()
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.utils.deterministic.fill_uninitialized_memory = old_fill
    assert torch.isfinite(fast).all()
    assert torch.allclose(fast, slow, atol=1e-12, rtol=0)
