"""The one lat/lon grid builder of the library (EPSG:4326, pixel centres).

Every raster the library returns is built here, so they all follow one contract:
dims ``("lat", "lon")``, latitude descending from the north edge, longitude ascending
from the west edge, CF attributes on both coordinates (so rioxarray finds them), CRS
EPSG:4326 and the affine transform written. A regional grid whose west edge is east
of its east edge crosses the antimeridian; its longitudes then continue past 180
(e.g. 170 .. 190) so the coordinate stays monotonic and the transform affine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from .._hooks import run_before_first_field
from .._memory import check_allocation
from .distance import EARTH_RADIUS_KM

__all__ = ["FIELD_KINDS", "LatLonGrid"]

#: Meaning, units and long names of the values a field may hold.
FIELD_KINDS: dict[str, dict[str, str]] = {
    "mass": {"units": "1", "long_name": "probability mass per grid cell"},
    "density": {"units": "km-2", "long_name": "probability density per square kilometre"},
    "log_density": {"units": "log(km-2)", "long_name": "log probability density (per km2)"},
    "similarity": {"units": "1", "long_name": "cosine similarity"},
    "logit": {"units": "1", "long_name": "unnormalised log score"},
}


@dataclass(frozen=True)
class LatLonGrid:
    """A regular lat/lon grid in degrees.

    Parameters
    ----------
    resolution
        Cell size in degrees (same in lat and lon).
    west, south, east, north
        Edges in degrees. ``west > east`` means the grid crosses the antimeridian.

    Examples
    --------
    >>> g = LatLonGrid.global_(1.0)
    >>> g.shape, float(g.lat[0]), float(g.lon[0])
    ((180, 360), 89.5, -179.5)
    """

    resolution: float
    west: float = -180.0
    south: float = -90.0
    east: float = 180.0
    north: float = 90.0

    def __post_init__(self) -> None:
        res = float(self.resolution)
        if not (math.isfinite(res) and 0.0 < res <= 90.0):
            raise ValueError(f"resolution must be in (0, 90] degrees; got {self.resolution}.")
        if not (-90.0 <= self.south < self.north <= 90.0):
            raise ValueError(
                f"need -90 <= south < north <= 90; got south={self.south}, north={self.north}."
            )
        for name in ("west", "east"):
            v = getattr(self, name)
            if not -180.0 <= v <= 180.0:
                raise ValueError(f"{name} must be in [-180, 180] degrees; got {v}.")
        if self.west == self.east:
            raise ValueError(
                f"west == east ({self.west}) gives a grid of zero width; for the whole globe "
                "use bbox=None (or west=-180, east=180), else widen the box."
            )

    @classmethod
    def global_(cls, resolution: float) -> LatLonGrid:
        """The global grid; ``180 / resolution`` must be a whole number."""
        res = float(resolution)
        if not (math.isfinite(res) and 0.0 < res <= 90.0):
            raise ValueError(f"resolution must be in (0, 90] degrees; got {resolution}.")
        n = 180.0 / res
        if not n < 1e9:  # finer than ~0.1 mm: 180 / res overflows or is not a cell count
            raise ValueError(f"resolution {resolution} is absurdly fine; use 0.001 degrees "
                             "or coarser.")
        if abs(n - round(n)) > 1e-9:
            raise ValueError(
                f"a global grid needs 180 / resolution to be a whole number; got resolution="
                f"{resolution} (180/res = {n:.6g}). Try 1, 0.5, 0.25 or 0.1."
            )
        return cls(float(resolution))

    @classmethod
    def from_bbox(cls, resolution: float, bbox: tuple[float, float, float, float]) -> LatLonGrid:
        """A regional grid for ``bbox = (west, south, east, north)``; west > east crosses 180."""
        w, s, e, n = (float(v) for v in bbox)
        return cls(float(resolution), w, s, e, n)

    @classmethod
    def from_dataarray(cls, da: Any) -> LatLonGrid:
        """Recover the grid of a DataArray built by :meth:`to_dataarray` (or any such raster)."""
        lat, lon = np.asarray(da["lat"], np.float64), np.asarray(da["lon"], np.float64)
        if lat.size < 2 or lon.size < 2:
            raise ValueError("need at least 2 x 2 cells to recover a grid from coordinates.")
        if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
            raise ValueError("the raster's lat/lon coordinates hold NaN or inf; rebuild it on "
                             "a LatLonGrid (LatLonGrid.to_dataarray).")
        if np.abs(lat).max() > 90.0 + 1e-9 or lon.min() < -180.0 - 1e-9 \
                or lon.max() > 540.0 + 1e-9:
            raise ValueError(
                f"the raster's coordinates (lat {lat.min():.6g}..{lat.max():.6g}, lon "
                f"{lon.min():.6g}..{lon.max():.6g}) are not degrees, although a lat/lon field "
                "is EPSG:4326: they look like metres or another projected unit. Write the "
                "raster's real CRS (da.rio.write_crs(...), e.g. 'EPSG:3857') so it is "
                "reprojected, or rebuild the field on a LatLonGrid."
            )
        res = float(lon[1] - lon[0])
        if not np.allclose(np.diff(lon), res, rtol=1e-6) or not np.allclose(
            np.diff(lat), -res, rtol=1e-6
        ):
            raise ValueError(
                "the raster is not a regular EPSG:4326 grid with lat descending and lon "
                "ascending at one resolution; resample it onto LatLonGrid first."
            )
        west = float(lon[0] - res / 2)
        east = float(lon[-1] + res / 2)
        if east > 180.0 + 1e-9:
            east -= 360.0
        return cls(res, round(west, 9), round(float(lat[-1] - res / 2), 9), round(east, 9),
                   round(float(lat[0] + res / 2), 9))

    # -- geometry ---------------------------------------------------------------------
    @property
    def crosses_antimeridian(self) -> bool:
        return self.west > self.east

    @property
    def _east_unwrapped(self) -> float:
        return self.east + 360.0 if self.crosses_antimeridian else self.east

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_lat, n_lon)``; partial cells at the south/east edges are kept whole.

        A box thinner than one cell still covers one (the 1e-9 slack that keeps an exact
        fit from gaining a cell must not round a sliver down to none).
        """
        r = self.resolution
        n_lat = max(1, math.ceil((self.north - self.south) / r - 1e-9))
        n_lon = max(1, math.ceil((self._east_unwrapped - self.west) / r - 1e-9))
        return n_lat, n_lon

    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes, descending (north first)."""
        return self.north - self.resolution * (np.arange(self.shape[0]) + 0.5)

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes, ascending (may exceed 180 when crossing the antimeridian)."""
        return self.west + self.resolution * (np.arange(self.shape[1]) + 0.5)

    @property
    def transform(self) -> Any:
        """The affine pixel-to-degrees transform, ``Affine(res, 0, west, 0, -res, north)``."""
        from affine import Affine

        return Affine(self.resolution, 0.0, self.west, 0.0, -self.resolution, self.north)

    def cell_area_sr(self) -> np.ndarray:
        """Solid angle of one cell per latitude row, ``(n_lat,)`` steradians.

        Exact for the spherical quadrangle: ``dlon * (sin(lat_top) - sin(lat_bottom))``,
        with the bottom edge clipped at -90.
        """
        top = np.deg2rad(self.lat + self.resolution / 2)
        bottom = np.deg2rad(np.maximum(self.lat - self.resolution / 2, -90.0))
        top = np.minimum(top, np.pi / 2)
        return np.deg2rad(self.resolution) * (np.sin(top) - np.sin(bottom))

    def cell_area_km2(self) -> np.ndarray:
        """Area of one cell per latitude row in km² on the mean-radius sphere."""
        return self.cell_area_sr() * EARTH_RADIUS_KM**2

    def latlon(self, *, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """All cell centres as an ``(n_lat * n_lon, 2)`` tensor, row-major, lon in -180..180."""
        n_lat, n_lon = self.shape
        check_allocation(5.0 * n_lat * n_lon * 16, f"the {n_lat:,} x {n_lon:,} cell centres of "
                         f"a {self.resolution}-degree grid", "use a coarser resolution")
        lat, lon = np.meshgrid(self.lat, self.lon, indexing="ij")
        lon = np.where(lon > 180.0, lon - 360.0, lon)
        return torch.from_numpy(np.stack([lat.ravel(), lon.ravel()], 1)).to(dtype)

    # -- DataArray --------------------------------------------------------------------
    def to_dataarray(
        self,
        values: Any,
        *,
        kind: Literal["mass", "density", "log_density", "similarity", "logit"] = "mass",
        name: str | None = None,
        leading_dim: str = "sample",
        leading_coords: Any = None,
        attrs: dict[str, Any] | None = None,
    ) -> Any:
        """Wrap ``(..., n_lat, n_lon)`` values as a georeferenced ``xarray.DataArray``.

        Parameters
        ----------
        values
            numpy array or tensor; 2-D, or 3-D with a leading ``leading_dim``.
        kind
            What the values are (sets ``units`` and ``long_name``; see :data:`FIELD_KINDS`).
        attrs
            Provenance (model, L, sampler, steps, seed, ...), stored in ``da.attrs``.

        Returns
        -------
        xarray.DataArray
            With CF coordinate attributes, CRS EPSG:4326 and transform written.
        """
        import rioxarray  # noqa: F401  (registers .rio)
        import xarray as xr

        # Every field carries the ``da.geoloc`` accessor without the user importing geo:
        # the package root registered its import here (geo sits above this layer).
        run_before_first_field()

        if kind not in FIELD_KINDS:
            raise ValueError(f"kind must be one of {sorted(FIELD_KINDS)}; got {kind!r}.")
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        values = np.asarray(values)
        if values.shape[-2:] != self.shape or values.ndim not in (2, 3):
            raise ValueError(
                f"values must have shape (..., {self.shape[0]}, {self.shape[1]}) for this grid; "
                f"got {values.shape}."
            )
        dims: tuple[str, ...] = ("lat", "lon")
        coords: dict[str, Any] = {
            "lat": ("lat", self.lat, {"standard_name": "latitude", "long_name": "latitude",
                                      "units": "degrees_north", "axis": "Y"}),
            "lon": ("lon", self.lon, {"standard_name": "longitude", "long_name": "longitude",
                                      "units": "degrees_east", "axis": "X"}),
        }
        if values.ndim == 3:
            dims = (leading_dim, *dims)
            lc = np.arange(values.shape[0]) if leading_coords is None else leading_coords
            coords[leading_dim] = (leading_dim, np.asarray(lc))
        meta = {**FIELD_KINDS[kind], "field_kind": kind, "grid_resolution_deg": self.resolution}
        meta.update({k: _attr_value(v) for k, v in (attrs or {}).items()})
        da = xr.DataArray(values, dims=dims, coords=coords, name=name or kind, attrs=meta)
        # In place: ``da`` is ours, and each copy of a 0.25 degree stack costs a full pass.
        da = da.rio.set_spatial_dims(x_dim="lon", y_dim="lat", inplace=True)
        da = da.rio.write_crs("EPSG:4326", inplace=True)
        da = da.rio.write_transform(self.transform, inplace=True)
        # xarray caches the accessor on the array and the accessor points back at it: a
        # reference cycle, so a dropped field (and its values) would wait for Python's
        # cyclic GC, which counts objects, not bytes. Over a loop of large fields that
        # piled up gigabytes. Everything rioxarray needs is in the coords and attrs now
        # (a new accessor finds lat/lon by their CF ``axis``), so drop the cached one.
        cache = getattr(da, "_cache", None)
        if isinstance(cache, dict):
            cache.pop("rio", None)
        return da


def _attr_value(v: Any) -> Any:
    """netCDF/GeoTIFF-safe attribute values: numbers and strings pass, the rest is str()."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float | str | np.number):
        return v
    return str(v)
