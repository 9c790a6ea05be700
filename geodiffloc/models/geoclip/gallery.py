"""GPS galleries and the cache of their location embeddings.

The official package re-embeds its 100K gallery on every ``predict`` call (seconds to
tens of seconds on a CPU). Here a gallery's embeddings are computed once per
(location-encoder weights, gallery) pair and kept in memory and on disk
(``<cache>/geoclip/gallery-<key>.safetensors``), so later queries only pay for one
matrix product.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..._fingerprint import fingerprint, module_fingerprint
from ...sphere import fibonacci_lattice, gallery_anchors
from ...sphere.grid import LatLonGrid

__all__ = ["Gallery", "GalleryEmbeddingCache", "resolve_gallery", "weights_fingerprint"]


@dataclass(frozen=True, eq=False)
class Gallery:
    """A named set of candidate locations, ``(n, 2)`` ``(lat, lon)`` float64 on CPU.

    Build one with :meth:`from_source`, :meth:`fibonacci`, :meth:`grid` or
    :meth:`mp16`, or let :func:`resolve_gallery` parse a spec.

    Examples
    --------
    >>> g = Gallery.fibonacci(100)
    >>> len(g), g.name
    (100, 'fibonacci:100')
    """

    latlon: torch.Tensor
    name: str = "custom"
    _key: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        ll = self.latlon
        if not isinstance(ll, torch.Tensor) or ll.ndim != 2 or ll.shape[1] != 2:
            raise ValueError("a gallery needs an (n, 2) tensor of (lat, lon) degrees.")
        if ll.shape[0] == 0:
            raise ValueError("the gallery is empty; give at least one (lat, lon) point.")
        object.__setattr__(self, "latlon", ll.detach().to("cpu", torch.float64).contiguous())

    def __len__(self) -> int:
        return int(self.latlon.shape[0])

    @property
    def key(self) -> str:
        """SHA-256 (hex, 24 chars) of the float64 coordinates: equal points, equal key."""
        if not self._key:
            self._key.append(fingerprint(self.latlon, length=24))
        return self._key[0]

    @classmethod
    def from_source(cls, source: Any, name: str = "custom") -> Gallery:
        """From an ``(n, 2)`` array, a CSV (``LAT``/``LON``), a DataFrame or a GeoDataFrame."""
        return cls(gallery_anchors(source), name)

    @classmethod
    def fibonacci(cls, n: int) -> Gallery:
        """``n`` near-uniform points (Fibonacci lattice)."""
        return cls(fibonacci_lattice(n), f"fibonacci:{int(n)}")

    @classmethod
    def grid(cls, resolution: float, bbox: tuple[float, float, float, float] | None = None
             ) -> Gallery:
        """Cell centres of the global (or ``bbox``) lat/lon grid."""
        g = LatLonGrid.global_(resolution) if bbox is None else LatLonGrid.from_bbox(
            resolution, bbox)
        name = f"grid:{resolution}" if bbox is None else f"grid:{resolution}:{tuple(bbox)}"
        return cls(g.latlon(), name)

    @classmethod
    def mp16(cls, path: str | os.PathLike | None = None) -> Gallery:
        """The official MP16 100K gallery (from the ``geoclip`` package or a folder/CSV)."""
        from .official import find_official

        if path is not None and os.path.isfile(path):
            csv = Path(path)
        else:
            found = find_official(path)
            if "gallery" not in found:
                raise ValueError(
                    "the MP16 gallery coordinates_100K.csv was not found next to the weights; "
                    "pass gallery=<csv or array> instead."
                )
            csv = found["gallery"]
        return cls(gallery_anchors(csv), "mp16-100k")


def resolve_gallery(spec: Any, *, official_path: str | os.PathLike | None = None) -> Gallery:
    """Turn a gallery spec into a :class:`Gallery`.

    Parameters
    ----------
    spec
        A :class:`Gallery`; ``"mp16"``; ``"fibonacci:N"``; ``"grid:RES"``; a CSV path;
        an ``(n, 2)`` array/tensor; a DataFrame with ``LAT``/``LON``; a GeoDataFrame.
    official_path
        Folder of the official release (for ``"mp16"``).

    Raises
    ------
    ValueError
        Unknown spec, empty gallery or invalid coordinates.

    Examples
    --------
    >>> resolve_gallery("fibonacci:10").name
    'fibonacci:10'
    """
    if isinstance(spec, Gallery):
        return spec
    if isinstance(spec, str):
        low = spec.strip().lower()
        if low in ("mp16", "mp16-100k", "mp16_100k"):
            return Gallery.mp16(official_path)
        for prefix, build in (("fibonacci:", lambda v: Gallery.fibonacci(int(v))),
                              ("grid:", lambda v: Gallery.grid(float(v)))):
            if low.startswith(prefix):
                try:
                    return build(low[len(prefix):])
                except (TypeError, ValueError) as e:
                    raise ValueError(f"bad gallery spec {spec!r}: {e}") from e
        if not os.path.exists(spec):
            raise ValueError(
                f"unknown gallery {spec!r}: use 'mp16', 'fibonacci:N', 'grid:RES', a CSV path "
                "with LAT/LON columns, an (n, 2) array or a GeoDataFrame of points."
            )
    return Gallery.from_source(spec)


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 (hex, 24 chars) of a module's state (names, shapes, dtypes, values).

    Memoised per module while no tensor changes (``geodiffloc._fingerprint``, the one
    fingerprint of every cache).
    """
    return module_fingerprint(module, length=24)


class GalleryEmbeddingCache:
    """Location embeddings of galleries, cached in memory (LRU) and on disk.

    Parameters
    ----------
    cache_dir
        Folder for the files; ``None`` uses ``$GEODIFFLOC_CACHE_DIR`` or the platform's
        user cache folder (plus ``geoclip/``); ``False`` keeps the cache in memory only.
    max_memory_items
        Galleries kept in memory.
    """

    def __init__(self, cache_dir: str | os.PathLike | bool | None = None,
                 max_memory_items: int = 4) -> None:
        self.cache_dir = cache_dir
        self.max_memory_items = int(max_memory_items)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()

    @property
    def folder(self) -> Path | None:
        """The on-disk folder, or ``None`` when disk caching is off."""
        if self.cache_dir is False:
            return None
        if self.cache_dir is None or self.cache_dir is True:
            from ...data.cache import default_cache_dir

            return default_cache_dir() / "geoclip"
        return Path(self.cache_dir)

    def path_for(self, key: str) -> Path | None:
        folder = self.folder
        return None if folder is None else folder / f"gallery-{key}.safetensors"

    def clear_memory(self) -> None:
        self._memory.clear()

    def get(
        self, key: str, n: int, dim: int, compute: Callable[[], torch.Tensor],
        device: torch.device, *, meta: dict[str, str] | None = None,
    ) -> torch.Tensor:
        """L2-normalised embeddings ``(n, dim)`` on ``device`` for ``key``.

        Memory first, then the disk file, then ``compute()`` (raw embeddings), whose
        result is written to disk atomically.
        """
        mem_key = f"{key}|{device}"
        if mem_key in self._memory:
            self._memory.move_to_end(mem_key)
            return self._memory[mem_key]
        raw = self._read(key, n, dim)
        if raw is None:
            raw = compute().detach().float().cpu()
            self._write(key, raw, meta or {})
        emb = torch.nn.functional.normalize(raw.to(device), dim=1)
        self._memory[mem_key] = emb
        while len(self._memory) > self.max_memory_items:
            self._memory.popitem(last=False)
        return emb

    def _read(self, key: str, n: int, dim: int) -> torch.Tensor | None:
        path = self.path_for(key)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = load_file(path)["embeddings"]
        except (SafetensorError, KeyError, OSError) as e:
            warnings.warn(f"ignoring unreadable gallery cache {path} ({e}); recomputing.",
                          stacklevel=3)
            return None
        if tuple(raw.shape) != (n, dim) or not torch.isfinite(raw).all():
            warnings.warn(f"ignoring gallery cache {path} with unexpected content; recomputing.",
                          stacklevel=3)
            return None
        return raw

    def _write(self, key: str, raw: torch.Tensor, meta: dict[str, str]) -> None:
        path = self.path_for(key)
        if path is None:
            return
        from safetensors.torch import save_file

        from ..._io import atomic_path

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # A stale/corrupt file with this key is replaced: the key fixes the content.
            with atomic_path(path, overwrite=True) as tmp:
                save_file({"embeddings": raw.contiguous()}, str(tmp),
                          metadata={k: str(v) for k, v in meta.items()})
        except OSError as e:
            warnings.warn(f"could not write the gallery cache {path} ({e}); continuing "
                          "with the in-memory cache only.", stacklevel=3)
