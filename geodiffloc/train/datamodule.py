"""A LightningDataModule over precomputed condition embeddings and their locations.

Training reads embeddings, never raw images: encode once into a
:class:`~geodiffloc.data.FeatureStore` (memory-mapped, several augmented views per
item) or hand over in-memory tensors. In training every access draws one view at
random (the paper's augmentation, paid for once at encoding time); validation always
uses view 0, the clean embedding, so validation metrics are comparable across epochs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypedDict

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..sphere import check_latlon_tensor


class EncoderRecord(TypedDict):
    """The encoder a data module's embeddings came from (recorded in checkpoints)."""

    name: str
    dim: int

__all__ = ["EmbeddingDataset", "GeoDataModule", "split_indices"]


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random train/validation split of ``range(n)``, reproducible from ``seed``.

    Parameters
    ----------
    n
        Number of items.
    val_fraction
        Share of items for validation, in ``[0, 1)``; a positive share keeps at least
        one item on each side.
    seed
        Seed of the permutation.

    Returns
    -------
    (train, val)
        Sorted, disjoint index arrays covering ``range(n)``.

    Raises
    ------
    ValueError
        ``val_fraction`` outside ``[0, 1)``, or too few items to split.

    Examples
    --------
    >>> tr, va = split_indices(10, 0.2, seed=0)
    >>> len(tr), len(va), sorted(set(tr) | set(va)) == list(range(10))
    (8, 2, True)
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}.")
    if n < 1:
        raise ValueError("the dataset is empty; nothing to train on.")
    if val_fraction == 0:
        return np.arange(n), np.arange(0)
    if n < 2:
        raise ValueError(f"need at least 2 items to hold out a validation set; got {n}.")
    n_val = min(max(1, round(float(val_fraction) * n)), n - 1)
    perm = np.random.default_rng(int(seed)).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class EmbeddingDataset(Dataset):
    """In-memory ``(embedding, latlon)`` pairs, with optional augmented views.

    Parameters
    ----------
    embeddings
        ``(n, dim)`` or ``(n, views, dim)``; view 0 is the clean embedding.
    latlon
        ``(n, 2)`` ``(lat, lon)`` degrees.
    view
        ``"random"`` (one view drawn per access with torch's RNG) or a view index.

    Raises
    ------
    ValueError
        Bad shapes, NaN embeddings, invalid coordinates or view.

    Examples
    --------
    >>> ds = EmbeddingDataset(torch.zeros(3, 2, 4), torch.zeros(3, 2), view=0)
    >>> x, ll = ds[1]
    >>> x.shape, ll.dtype
    (torch.Size([4]), torch.float64)
    """

    def __init__(self, embeddings: Any, latlon: Any, *, view: int | str = "random") -> None:
        x = torch.as_tensor(np.asarray(embeddings, dtype=np.float32)) if not isinstance(
            embeddings, torch.Tensor) else embeddings.detach().to("cpu", torch.float32)
        if x.ndim == 2:
            x = x[:, None]
        if x.ndim != 3 or x.shape[0] == 0:
            raise ValueError(
                f"embeddings must have shape (n, dim) or (n, views, dim) with n >= 1; got "
                f"{tuple(x.shape)}."
            )
        if not torch.isfinite(x).all():
            bad = int(torch.nonzero(~torch.isfinite(x).reshape(x.shape[0], -1).all(1))[0])
            raise ValueError(f"embedding row {bad} contains NaN or inf.")
        ll = torch.as_tensor(latlon).detach().to("cpu", torch.float64)
        ll = check_latlon_tensor(ll)
        if ll.shape[0] != x.shape[0]:
            raise ValueError(f"{x.shape[0]} embeddings but {ll.shape[0]} coordinates.")
        if not (view == "random" or (isinstance(view, int) and 0 <= view < x.shape[1])):
            raise ValueError(f"view must be 'random' or 0..{x.shape[1] - 1}; got {view!r}.")
        self.embeddings, self.latlon, self.view = x.contiguous(), ll.contiguous(), view

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[-1])

    @property
    def views(self) -> int:
        """Views per item."""
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        v = int(torch.randint(self.views, ())) if self.view == "random" else int(self.view)
        return self.embeddings[i, v], self.latlon[i]

    def __getitems__(self, indices: Sequence[int]) -> _Batch:
        """A whole batch by one gather (the DataLoader calls this instead of per item)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.view == "random":
            v = torch.randint(self.views, (len(idx),))
        else:
            v = torch.full((len(idx),), int(self.view), dtype=torch.long)
        return _Batch((self.embeddings[idx, v], self.latlon[idx]))


class _Batch(tuple):
    """A batch already stacked by a dataset's ``__getitems__`` (collate leaves it as is)."""


class _Indexed(Dataset):
    """Adds the item's index to each validation item, so that items a distributed
    sampler pads (repeats) to even out the ranks are counted once in the metrics."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, ll = self.dataset[i]
        return x, ll, i

    def __getitems__(self, indices: Sequence[int]) -> Any:
        got = (self.dataset.__getitems__(indices) if hasattr(self.dataset, "__getitems__")
               else [self.dataset[i] for i in indices])
        if not isinstance(got, _Batch):  # per-item results (e.g. a feature store)
            return [(x, ll, i) for (x, ll), i in zip(got, indices, strict=True)]
        return _Batch((*got, torch.as_tensor(indices, dtype=torch.long)))


class _Subset(Dataset):
    """``dataset`` restricted to ``indices`` (keeps the store's memory maps shared)."""

    def __init__(self, dataset: Any, indices: np.ndarray) -> None:
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[int(self.indices[i])]

    def __getitems__(self, indices: Sequence[int]) -> Any:
        inner = [int(self.indices[i]) for i in indices]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(inner)
        return [self.dataset[i] for i in inner]


class GeoDataModule(pl.LightningDataModule):
    """Train/validation loaders of ``(embedding, latlon)`` batches.

    Build with :meth:`from_store` (a :class:`~geodiffloc.data.FeatureStore` folder) or
    :meth:`from_tensors` (in-memory arrays). Batches are ``(x, latlon)`` with ``x``
    ``(B, dim)`` float32 and ``latlon`` ``(B, 2)`` float64.

    Parameters
    ----------
    train, val
        Datasets yielding ``(embedding (dim,), latlon (2,))``; ``val`` may be ``None``.
    train_latlon, val_latlon
        ``(n, 2)`` coordinates of the two sides (for GeoCLIP's gallery, reports).
    encoder
        ``{"name", "dim"}`` of the encoder that made the embeddings (recorded in the
        trained model).
    batch_size, val_batch_size
        Batch sizes (``val_batch_size`` defaults to ``batch_size``).
    num_workers
        DataLoader workers (0 by default: the data are already embeddings, and small
        machines have few cores).
    pin_memory
        Pin host memory (helps GPU training).
    samples_per_epoch, seed
        Optional: an epoch of ``samples_per_epoch`` items drawn with replacement from a
        seeded generator instead of one shuffled pass (used by in-memory ``fit``).

    Raises
    ------
    ValueError
        Non-positive batch size, negative workers.
    """

    def __init__(
        self,
        train: Dataset,
        val: Dataset | None,
        *,
        train_latlon: torch.Tensor,
        val_latlon: torch.Tensor | None,
        encoder: dict[str, Any],
        batch_size: int = 256,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        samples_per_epoch: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if int(batch_size) < 1 or (val_batch_size is not None and int(val_batch_size) < 1):
            raise ValueError(f"batch sizes must be >= 1; got {batch_size}, {val_batch_size}.")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0; got {num_workers}.")
        self.train_set, self.val_set = train, val
        self.train_latlon, self.val_latlon = train_latlon, val_latlon
        self.encoder: EncoderRecord = {"name": str(encoder["name"]),
                                       "dim": int(encoder["dim"])}
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        if samples_per_epoch is not None and int(samples_per_epoch) < 1:
            raise ValueError(f"samples_per_epoch must be >= 1; got {samples_per_epoch}.")
        self.samples_per_epoch = None if samples_per_epoch is None else int(samples_per_epoch)
        self.seed = int(seed)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return self.encoder["dim"]

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def from_store(
        cls,
        store: str | os.PathLike | Any,
        *,
        val_store: str | os.PathLike | Any | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        **kwargs: Any,
    ) -> GeoDataModule:
        """Loaders over a feature store (random view in training, view 0 in validation).

        Parameters
        ----------
        store
            A :class:`~geodiffloc.data.FeatureStore` or its folder.
        val_store
            A separate validation store (same encoder); otherwise ``val_fraction`` of
            ``store`` is held out at random (seeded).
        val_fraction, seed
            See :func:`split_indices`.
        **kwargs
            ``batch_size``, ``val_batch_size``, ``num_workers``, ``pin_memory``.

        Raises
        ------
        ValueError
            Not a feature store, an empty store, or stores from different encoders.

        Examples
        --------
        >>> import tempfile
        >>> from geodiffloc.data import FeatureStore
        >>> from geodiffloc.encoders import PrecomputedEmbeddings
        >>> root = tempfile.mkdtemp() + "/s"
        >>> _ = FeatureStore.build(root, np.eye(4, dtype=np.float32), np.zeros((4, 2)),
        ...                        PrecomputedEmbeddings(4), progress=False)
        >>> dm = GeoDataModule.from_store(root, val_fraction=0.25, batch_size=2)
        >>> len(dm.train_set), len(dm.val_set), dm.dim
        (3, 1, 4)
        """
        from ..data import FeatureStore

        path = store.root if isinstance(store, FeatureStore) else store
        train_view = FeatureStore(path, view="random")
        if len(train_view) == 0:
            raise ValueError(f"the feature store {os.fspath(path)} holds no finished items.")
        encoder = {"name": train_view.encoder_name, "dim": train_view.dim}
        latlon = train_view.latlon
        if val_store is not None:
            vpath = val_store.root if isinstance(val_store, FeatureStore) else val_store
            val = FeatureStore(vpath, view=0)
            if (val.encoder_name, val.dim) != (encoder["name"], encoder["dim"]):
                raise ValueError(
                    f"the validation store holds {val.dim}-d embeddings from "
                    f"{val.encoder_name!r} but the training store {encoder['dim']}-d from "
                    f"{encoder['name']!r}; build both with the same encoder."
                )
            return cls(train_view, val if len(val) else None, train_latlon=latlon,
                       val_latlon=val.latlon if len(val) else None, encoder=encoder, **kwargs)
        tr, va = split_indices(len(train_view), val_fraction, seed)
        val_set = _Subset(FeatureStore(path, view=0), va) if len(va) else None
        return cls(_Subset(train_view, tr), val_set, train_latlon=latlon[tr],
                   val_latlon=latlon[va] if len(va) else None, encoder=encoder, **kwargs)

    @classmethod
    def from_tensors(
        cls,
        embeddings: Any,
        latlon: Any,
        *,
        val_embeddings: Any = None,
        val_latlon: Any = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        encoder: dict[str, Any] | str | None = None,
        **kwargs: Any,
    ) -> GeoDataModule:
        """Loaders over in-memory embeddings.

        Parameters
        ----------
        embeddings
            ``(n, dim)`` or ``(n, views, dim)`` (view 0 clean, the others augmented).
        latlon
            ``(n, 2)`` ``(lat, lon)`` degrees.
        val_embeddings, val_latlon
            An explicit validation set; otherwise ``val_fraction`` of the data is held
            out (seeded).
        val_fraction, seed
            See :func:`split_indices`.
        encoder
            Name (or ``{"name", "dim"}``) of the encoder that made the embeddings;
            default ``"precomputed"``.
        **kwargs
            ``batch_size``, ``val_batch_size``, ``num_workers``, ``pin_memory``.

        Raises
        ------
        ValueError
            Bad shapes or coordinates; only one of ``val_embeddings``/``val_latlon``.

        Examples
        --------
        >>> dm = GeoDataModule.from_tensors(torch.randn(10, 3), torch.zeros(10, 2),
        ...                                 val_fraction=0.2, batch_size=4)
        >>> next(iter(dm.train_dataloader()))[0].shape
        torch.Size([4, 3])
        """
        full = EmbeddingDataset(embeddings, latlon, view="random")
        record: dict[str, Any]
        if isinstance(encoder, str):
            record = {"name": encoder, "dim": full.dim}
        else:
            record = dict(encoder or {"name": "precomputed", "dim": full.dim})
        if int(record.get("dim", full.dim)) != full.dim:
            raise ValueError(f"encoder {record} does not match {full.dim}-d embeddings.")
        record["dim"] = full.dim
        if (val_embeddings is None) != (val_latlon is None):
            raise ValueError("give both val_embeddings and val_latlon, or neither.")
        if val_embeddings is not None:
            val = EmbeddingDataset(val_embeddings, val_latlon, view=0)
            if val.dim != full.dim:
                raise ValueError(
                    f"validation embeddings are {val.dim}-d but training ones {full.dim}-d."
                )
            return cls(full, val, train_latlon=full.latlon, val_latlon=val.latlon,
                       encoder=record, **kwargs)
        tr, va = split_indices(len(full), val_fraction, seed)
        train = EmbeddingDataset(full.embeddings[tr], full.latlon[tr], view="random")
        val_set = (EmbeddingDataset(full.embeddings[va], full.latlon[va], view=0)
                   if len(va) else None)
        return cls(train, val_set, train_latlon=train.latlon,
                   val_latlon=val_set.latlon if val_set is not None else None,
                   encoder=record, **kwargs)

    # -- loaders ------------------------------------------------------------------------
    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
            collate_fn=_collate,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (Lightning adds a DistributedSampler under DDP).

        With ``samples_per_epoch``, an epoch is that many items drawn with replacement
        (seeded), so a short run on a small data set is one epoch of any length.
        """
        if self.samples_per_epoch is None:
            return self._loader(self.train_set, self.batch_size, shuffle=True)
        from torch.utils.data import RandomSampler

        sampler = RandomSampler(self.train_set, replacement=True,  # type: ignore[arg-type]
                                num_samples=self.samples_per_epoch,
                                generator=torch.Generator().manual_seed(self.seed))
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, collate_fn=_collate)

    def val_dataloader(self) -> DataLoader | list[Any]:
        """Validation batches ``(x, latlon, index)`` in a fixed order (``[]`` without a val set)."""
        if self.val_set is None:
            return []
        return self._loader(_Indexed(self.val_set), self.val_batch_size, shuffle=False)

    def __repr__(self) -> str:
        n_val = 0 if self.val_set is None else len(self.val_set)  # type: ignore[arg-type]
        return (f"GeoDataModule(train={len(self.train_set)}, val={n_val}, "  # type: ignore[arg-type]
                f"dim={self.dim}, encoder={self.encoder['name']!r}, "
                f"batch_size={self.batch_size})")


def _collate(items: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(items, _Batch):
        x, ll, *rest = items
        return (x.to(torch.float32), ll.to(torch.float64), *rest)
    x = torch.stack([i[0] for i in items]).to(torch.float32)
    ll = torch.stack([i[1] for i in items]).to(torch.float64)
    if len(items[0]) == 3:
        return x, ll, torch.tensor([int(i[2]) for i in items], dtype=torch.long)
    return x, ll
