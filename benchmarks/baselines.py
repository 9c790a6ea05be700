"""Two simple geolocation baselines on embeddings, for the accuracy benchmark.

* :func:`nearest_neighbour` -- predict the location of the most similar training
  embedding (cosine similarity). No training; the classic retrieval baseline of the
  geolocation literature (Hays & Efros' IM2GPS).
* :class:`CellClassifier` -- a softmax classifier over near-equal-area cells of the
  sphere (:class:`EqualAreaCells`: the spherical Voronoi cells of a Fibonacci lattice,
  as PlaNet-style classification baselines do with S2 cells). Predicts the centre of
  the most probable cell, the mean of the training places in it, or the
  probability-weighted spherical mean of all cell centres.

Both take ``(n, d)`` float embeddings and ``(n, 2)`` ``(lat, lon)`` degrees, as torch
tensors or numpy arrays, and return ``(m, 2)`` float64 ``(lat, lon)`` numpy arrays.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from geodiffloc.sphere import (
    check_latlon_tensor,
    fibonacci_lattice,
    latlon_to_xyz,
    spherical_mean,
)

__all__ = ["PREDICTIONS", "CellClassifier", "EqualAreaCells", "nearest_neighbour"]

#: How :meth:`CellClassifier.predict` turns cell probabilities into a place.
PREDICTIONS = ("centre", "cell_mean", "weighted_mean")


def _embeddings(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float32)) if not torch.is_tensor(x) else x
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty (n, dim) array; got shape {tuple(t.shape)}.")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf.")
    return t.detach().to("cpu", torch.float32)


def _latlon(x: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64)) if not torch.is_tensor(x) else x
    return check_latlon_tensor(t.detach().to("cpu", torch.float64), name)


def nearest_neighbour(
    train_emb: Any, train_latlon: Any, query_emb: Any, *, batch_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict each query's location as that of its most cosine-similar training embedding.

    Parameters
    ----------
    train_emb
        ``(n, d)`` training embeddings.
    train_latlon
        ``(n, 2)`` their ``(lat, lon)`` degrees.
    query_emb
        ``(m, d)`` query embeddings.
    batch_size
        Queries per similarity block (bounds memory at ``batch_size * n`` floats).

    Returns
    -------
    (latlon, index)
        ``(m, 2)`` float64 predicted ``(lat, lon)`` and ``(m,)`` int64 index of the
        neighbour in the training set (ties go to the lowest index).

    Raises
    ------
    ValueError
        Mismatched shapes, NaN/inf embeddings or invalid coordinates.

    Examples
    --------
    >>> ll, idx = nearest_neighbour([[1.0, 0.0], [0.0, 1.0]], [[10.0, 20.0], [-5.0, 7.0]],
    ...                             [[0.1, 2.0]])
    >>> ll.tolist(), idx.tolist()
    ([[-5.0, 7.0]], [1])
    """
    xtr = _embeddings(train_emb, "train_emb")
    ytr = _latlon(train_latlon, "train_latlon")
    xq = _embeddings(query_emb, "query_emb")
    if ytr.shape[0] != xtr.shape[0]:
        raise ValueError(
            f"train_emb has {xtr.shape[0]} rows but train_latlon has {ytr.shape[0]}; give one "
            "location per training embedding."
        )
    if xq.shape[1] != xtr.shape[1]:
        raise ValueError(
            f"query_emb is {xq.shape[1]}-d but train_emb is {xtr.shape[1]}-d; embed both with "
            "the same encoder."
        )
    a = nn.functional.normalize(xtr, dim=1)
    idx = []
    for s in range(0, xq.shape[0], max(1, int(batch_size))):
        q = nn.functional.normalize(xq[s:s + int(batch_size)], dim=1)
        idx.append((q @ a.T).argmax(dim=1))
    index = torch.cat(idx).numpy().astype(np.int64)
    return ytr.numpy()[index], index


class EqualAreaCells:
    """A partition of the sphere into ``n`` near-equal-area cells.

    The cells are the spherical Voronoi cells of an ``n``-point Fibonacci lattice: a
    point belongs to the cell of its nearest lattice point (great-circle distance,
    computed as the largest dot product of unit vectors, so there is no antimeridian
    or pole special case). The lattice is equal-area in ``z``, so each cell covers
    ``4 pi / n`` steradians to within about 10 percent.

    Parameters
    ----------
    n_cells
        Number of cells (>= 2).

    Raises
    ------
    ValueError
        If ``n_cells < 2``.

    Examples
    --------
    >>> cells = EqualAreaCells(100)
    >>> cells.assign([[90.0, 0.0], [-90.0, 0.0]]).tolist()
    [0, 99]
    """

    def __init__(self, n_cells: int) -> None:
        if int(n_cells) < 2:
            raise ValueError(f"n_cells must be >= 2; got {n_cells}.")
        self.n_cells = int(n_cells)
        self.centres = fibonacci_lattice(self.n_cells)  # (n, 2) float64
        self._xyz = latlon_to_xyz(self.centres)

    def __len__(self) -> int:
        return self.n_cells

    def __repr__(self) -> str:
        return f"EqualAreaCells({self.n_cells})"

    def assign(self, latlon: Any, *, batch_size: int = 8192) -> np.ndarray:
        """Cell index of each ``(m, 2)`` ``(lat, lon)`` point -> ``(m,)`` int64.

        Raises
        ------
        ValueError
            Invalid coordinates.
        """
        ll = _latlon(latlon, "latlon")
        xyz = latlon_to_xyz(ll)
        out = [(xyz[s:s + batch_size] @ self._xyz.T).argmax(dim=1)
               for s in range(0, xyz.shape[0], batch_size)]
        return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


class CellClassifier:
    """Softmax classifier from embeddings to :class:`EqualAreaCells`.

    A linear layer (``hidden=0``) or a one-hidden-layer MLP, trained with full-batch-
    per-epoch shuffled mini-batches of Adam on the cross-entropy of the true cell.

    Parameters
    ----------
    n_cells
        Number of cells (a few hundred to a few thousand; ~``sqrt(4 pi / n)`` radians
        across, 1024 cells are ~700 km wide).
    hidden
        Hidden width of the MLP (0 = linear softmax regression).
    epochs, batch_size, lr, weight_decay
        Training.
    seed
        Seeds the initial weights and the batch order.

    Raises
    ------
    ValueError
        Non-positive sizes.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> emb = rng.normal(size=(40, 3)).astype(np.float32)
    >>> ll = np.where(emb[:, :1] > 0, [[45.0, 5.0]], [[-30.0, 140.0]])
    >>> clf = CellClassifier(50, hidden=0, epochs=50, lr=0.05, seed=0).fit(emb, ll)
    >>> clf.predict(np.array([[3.0, 0, 0], [-3.0, 0, 0]], np.float32), "cell_mean").round(1)
    array([[ 45.,   5.],
           [-30., 140.]])
    """

    def __init__(self, n_cells: int = 1024, *, hidden: int = 512, epochs: int = 30,
                 batch_size: int = 256, lr: float = 1e-3, weight_decay: float = 1e-4,
                 seed: int = 0) -> None:
        for name, v in (("epochs", epochs), ("batch_size", batch_size)):
            if int(v) < 1:
                raise ValueError(f"{name} must be >= 1; got {v}.")
        if int(hidden) < 0 or not lr > 0:
            raise ValueError(f"need hidden >= 0 and lr > 0; got {hidden}, {lr}.")
        self.cells = EqualAreaCells(n_cells)
        self.hidden, self.epochs, self.batch_size = int(hidden), int(epochs), int(batch_size)
        self.lr, self.weight_decay, self.seed = float(lr), float(weight_decay), int(seed)
        self.net: nn.Module | None = None
        self.cell_means: torch.Tensor | None = None

    def _build(self, dim: int) -> nn.Module:
        n = self.cells.n_cells
        if self.hidden == 0:
            return nn.Linear(dim, n)
        return nn.Sequential(nn.Linear(dim, self.hidden), nn.ReLU(), nn.Linear(self.hidden, n))

    def fit(self, emb: Any, latlon: Any) -> CellClassifier:
        """Train on ``(n, d)`` embeddings and their ``(n, 2)`` locations; returns ``self``.

        Raises
        ------
        ValueError
            Mismatched shapes, NaN embeddings or invalid coordinates.
        """
        x = _embeddings(emb, "emb")
        ll = _latlon(latlon, "latlon")
        if ll.shape[0] != x.shape[0]:
            raise ValueError(f"emb has {x.shape[0]} rows but latlon has {ll.shape[0]}.")
        y = torch.from_numpy(self.cells.assign(ll))
        # the mean of the training places of each cell (the centre where a cell is empty):
        # a better point answer than the cell's geometric centre where data cluster
        means = self.cells.centres.clone()
        for c in torch.unique(y).tolist():
            means[c] = spherical_mean(ll[y == c][None])[0]
        self.cell_means = means
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = self._build(x.shape[1])
        g = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        net.train()
        for _ in range(self.epochs):
            perm = torch.randperm(x.shape[0], generator=g)
            for s in range(0, x.shape[0], self.batch_size):
                b = perm[s:s + self.batch_size]
                loss = nn.functional.cross_entropy(net(x[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.net = net.eval()
        return self

    @torch.no_grad()
    def predict_proba(self, emb: Any) -> torch.Tensor:
        """``(m, n_cells)`` float64 cell probabilities.

        Raises
        ------
        ValueError
            Not fitted, or embeddings of the wrong shape.
        """
        if self.net is None:
            raise ValueError("the classifier is not fitted; call fit(emb, latlon) first.")
        x = _embeddings(emb, "emb")
        first = self.net if isinstance(self.net, nn.Linear) else self.net[0]
        if x.shape[1] != first.in_features:
            raise ValueError(
                f"emb is {x.shape[1]}-d but the classifier was fitted on "
                f"{first.in_features}-d embeddings."
            )
        return self.net(x).double().softmax(dim=1)

    def predict(self, emb: Any,
                how: Literal["centre", "cell_mean", "weighted_mean"] = "centre") -> np.ndarray:
        """One ``(lat, lon)`` per embedding -> ``(m, 2)`` float64.

        Parameters
        ----------
        emb
            ``(m, d)`` embeddings.
        how
            ``"centre"``: lattice point of the most probable cell; ``"cell_mean"``:
            spherical mean of the training places in that cell; ``"weighted_mean"``:
            spherical mean of all cell centres weighted by their probabilities.

        Raises
        ------
        ValueError
            Unknown ``how``, not fitted, bad embeddings.
        """
        if how not in PREDICTIONS:
            raise ValueError(f"how must be one of {PREDICTIONS}; got {how!r}.")
        p = self.predict_proba(emb)
        if how == "weighted_mean":
            c = self.cells.centres[None].expand(p.shape[0], -1, -1)
            return spherical_mean(c, weights=p).numpy()
        best = p.argmax(dim=1)
        assert self.cell_means is not None
        table = self.cells.centres if how == "centre" else self.cell_means
        return table[best].numpy()
