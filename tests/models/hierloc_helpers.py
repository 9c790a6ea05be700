"""A synthetic 3-level hierarchy (3 countries x 3 regions x 4 towns) and noisy embeddings."""

from __future__ import annotations

import numpy as np
import torch

from geodiffloc.data import EntityHierarchy


def synthetic_hierarchy() -> EntityHierarchy:
    recs = []
    for a in range(3):
        la, lo = -30.0 + 30 * a, -100.0 + 90 * a
        recs.append({"entity_id": f"C{a}", "lat": la, "lon": lo})
        for b in range(3):
            lb, lob = la + 6 * (b - 1), lo + 6 * (b - 1)
            recs.append({"entity_id": f"C{a}R{b}", "parent": f"C{a}", "lat": lb, "lon": lob})
            for c in range(4):
                recs.append({"entity_id": f"C{a}R{b}T{c}", "parent": f"C{a}R{b}",
                             "lat": lb + 1.5 * (c - 1.5), "lon": lob + 1.0})
    return EntityHierarchy.from_records(recs, level_names=("country", "region", "town"))


def leaf_samples(h: EntityHierarchy, n_per: int, seed: int, dim: int = 16, noise: float = 0.3,
                 ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Embeddings = a fixed random prototype per leaf + noise; returns (x, latlon, leaf ids)."""
    leaves = h.leaves
    proto = torch.randn(len(leaves), dim, generator=torch.Generator().manual_seed(1234))
    gen = torch.Generator().manual_seed(seed)
    idx = torch.arange(len(leaves)).repeat_interleave(n_per)
    x = proto[idx] + noise * torch.randn(len(idx), dim, generator=gen)
    ll = torch.as_tensor(h.latlon[leaves[idx.numpy()]])
    return x, ll, h.ids[leaves[idx.numpy()]]
