"""What every geolocation model shares: the predictor interface and checkpoint I/O.

A model family has three parts: the network (an ``nn.Module`` doing the arithmetic),
a predictor (embeddings in, GeoDataFrames and probability rasters out) and I/O
(one safetensors file holding the weights and a JSON config). :class:`Geolocator` is
the small base that ties them together, so a new family (HierLoc, G3, ...) writes only
its network, its ``predict`` / ``probability_map`` and two hooks that turn the model
into a config and back; :meth:`Geolocator.save` and :meth:`Geolocator.load` come for
free, with the same atomic writes, format checks and error messages for every family.

Training is not here: every model trains through the Lightning modules of
:mod:`geodiffloc.train`.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from .._io import atomic_path

__all__ = [
    "CheckpointNotFoundError",
    "Geolocator",
    "load_state_strict",
    "points_frame",
    "read_checkpoint",
    "write_checkpoint",
]

G = TypeVar("G", bound="Geolocator")


class CheckpointNotFoundError(FileNotFoundError, ValueError):
    """No checkpoint at the given path (a ``FileNotFoundError`` and a ``ValueError``)."""


def write_checkpoint(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], *, fmt: str,
    config: Mapping[str, Any], overwrite: bool = False,
) -> Path:
    """Write ``tensors`` and ``config`` (JSON metadata) to a safetensors file, atomically.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.safetensors"
    >>> _ = write_checkpoint(p, {"w": torch.ones(2)}, fmt="demo/1", config={"a": 1})
    >>> t, cfg = read_checkpoint(p, fmt="demo/1", what="demo")
    >>> t["w"].tolist(), cfg["a"]
    ([1.0, 1.0], 1)
    """
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta = {"format": fmt, "config": json.dumps(dict(config))}
    with atomic_path(path, overwrite=overwrite) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def read_checkpoint(
    path: str | os.PathLike, *, fmt: str, what: str, device: str | torch.device = "cpu",
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and config of a checkpoint written by :func:`write_checkpoint`.

    The format tag is read from the file's metadata, or from the config for files
    written before the tag moved there.

    Raises
    ------
    CheckpointNotFoundError
        No file at ``path``.
    ValueError
        Not a safetensors file, or a checkpoint of another format.
    """
    from safetensors import safe_open

    where = os.fspath(path)
    if not os.path.isfile(where):
        raise CheckpointNotFoundError(
            f"checkpoint {where!r} does not exist (no checkpoint at that path).")
    try:
        with safe_open(where, framework="pt", device=str(device)) as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types
        raise ValueError(f"{where!r} is not a safetensors checkpoint: {err}") from err
    try:
        config = json.loads(meta.get("config", "{}"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{where!r} has an unreadable config: {err}") from err
    found = meta.get("format") or config.get("format")
    if found != fmt:
        raise ValueError(
            f"{where!r} is not a geodiffloc {what} checkpoint (format {found!r}, expected "
            f"{fmt!r}); load it with the class that wrote it."
        )
    return tensors, config


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a readable list of mismatches.

    Raises
    ------
    ValueError
        Missing, unexpected or differently shaped tensors (up to six are named).
    """
    own = module.state_dict()
    bad = [f"missing {k}" for k in own if k not in state]
    bad += [f"unexpected {k}" for k in state if k not in own]
    bad += [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
            for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if bad:
        raise ValueError(
            f"the {what} weights do not fit this model ({len(bad)} problem(s): "
            f"{'; '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}). Build the model with the "
            "configuration the weights were trained with."
        )
    module.load_state_dict(dict(state), strict=True)


def points_frame(lat: Any, lon: Any, columns: Mapping[str, Any] | None = None, *,
                 leading: Mapping[str, Any] | None = None,
                 attrs: Mapping[str, Any] | None = None) -> Any:
    """A GeoDataFrame of points (EPSG:4326): ``leading``, ``lat``, ``lon``, ``columns``.

    The one place where model outputs become GeoDataFrames, so every model's rows
    have the same CRS, geometry and column order.

    Examples
    --------
    >>> gdf = points_frame([10.0], [20.0], {"confidence": [0.5]}, attrs={"model": "x"})
    >>> list(gdf.columns), gdf.crs.to_string(), gdf.attrs["model"]
    (['lat', 'lon', 'confidence', 'geometry'], 'EPSG:4326', 'x')
    """
    import geopandas as gpd

    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    data = {**dict(leading or {}), "lat": lat, "lon": lon, **dict(columns or {})}
    gdf = gpd.GeoDataFrame(data, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    gdf.attrs.update(dict(attrs or {}))
    return gdf


class Geolocator(ABC):
    """Base of the model classes (mixed into an ``nn.Module``): predict, maps, save, load.

    A family sets :attr:`checkpoint_format` and :attr:`model_name`, implements
    :meth:`predict` and :meth:`probability_map`, and the two checkpoint hooks
    :meth:`checkpoint_config` / :meth:`from_checkpoint_config`. It may override
    :meth:`checkpoint_tensors` / :meth:`load_checkpoint_tensors` when only part of its
    state belongs in a checkpoint.

    Examples
    --------
    >>> class Const(nn.Module, Geolocator):
    ...     checkpoint_format, model_name = "demo.const/1", "Const"
    ...     def __init__(self, lat=0.0):
    ...         super().__init__()
    ...         self.lat = nn.Parameter(torch.tensor(float(lat)))
    ...     def predict(self, inputs, **kw):
    ...         n = len(inputs)
    ...         return points_frame([float(self.lat)] * n, [0.0] * n)
    ...     def probability_map(self, inputs, **kw):
    ...         raise NotImplementedError
    ...     def checkpoint_config(self):
    ...         return {}
    ...     @classmethod
    ...     def from_checkpoint_config(cls, cfg, **kw):
    ...         return cls()
    >>> import tempfile, pathlib
    >>> p = Const(12.5).save(pathlib.Path(tempfile.mkdtemp()) / "c.safetensors")
    >>> Const.load(p).predict([1, 2])["lat"].tolist()
    [12.5, 12.5]
    """

    checkpoint_format: ClassVar[str]
    model_name: ClassVar[str]

    @abstractmethod
    def predict(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """One or more located points per input, as an EPSG:4326 GeoDataFrame."""

    @abstractmethod
    def probability_map(self, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        """A georeferenced ``xarray.DataArray`` per input (leading ``query`` dim)."""

    @abstractmethod
    def checkpoint_config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model, weights aside (JSON-serialisable)."""

    @classmethod
    @abstractmethod
    def from_checkpoint_config(cls: type[G], cfg: dict[str, Any], *args: Any,
                               **kwargs: Any) -> G:
        """A fresh model built from :meth:`checkpoint_config` (``kwargs`` from :meth:`load`)."""

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint holds (default: the whole state dict)."""
        assert isinstance(self, nn.Module)
        return dict(self.state_dict())

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Put checkpoint tensors into the model (strict, with readable mismatches)."""
        assert isinstance(self, nn.Module)
        load_state_strict(self, tensors, "checkpoint")

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write config + weights to one ``.safetensors`` file, atomically.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        """
        return write_checkpoint(path, self.checkpoint_tensors(), fmt=self.checkpoint_format,
                                config=self.checkpoint_config(), overwrite=overwrite)

    @classmethod
    def check_checkpoint(cls, cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
                         path: str | os.PathLike) -> None:
        """Refuse a damaged or hostile checkpoint before anything is built from it.

        The base refuses NaN/inf weights; a family adds its config checks (keys, types,
        sizes) and a shape check that costs no memory (see ``models/_validate.py``).

        Raises
        ------
        ValueError
            Naming the bad key or tensor.
        """
        from ._validate import check_finite_weights

        check_finite_weights(tensors, path)

    @classmethod
    def load(cls: type[G], path: str | os.PathLike, *,
             device: str | torch.device | None = None, **kwargs: Any) -> G:
        """Load a checkpoint written by :meth:`save` (safetensors: no code execution).

        Raises
        ------
        CheckpointNotFoundError
            No file at ``path`` (also a ``FileNotFoundError`` and a ``ValueError``).
        ValueError
            Not a checkpoint of this family, or weights that do not fit its config.
        """
        tensors, cfg = read_checkpoint(path, fmt=cls.checkpoint_format, what=cls.model_name)
        cls.check_checkpoint(cfg, tensors, path)  # untrusted file: checked before building
        model = cls.from_checkpoint_config(cfg, **kwargs)
        model.load_checkpoint_tensors(tensors)
        assert isinstance(model, nn.Module)
        model.eval()
        return model.to(device) if device is not None else model
