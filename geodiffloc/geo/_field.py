"""Checks and small helpers shared by every function that takes a field DataArray."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..sphere import FIELD_KINDS, LatLonGrid

if TYPE_CHECKING:
    import xarray as xr

#: attrs written by LatLonGrid.to_dataarray itself (not provenance)
GRID_ATTRS = ("units", "long_name", "field_kind", "grid_resolution_deg")
#: attrs rioxarray/GDAL put on a raster read from a file: encoding, not provenance
_FILE_ATTRS = ("scale_factor", "add_offset", "_FillValue", "AREA_OR_POINT", "resampling",
               "value_meaning", "leading_dim", "geodiffloc_version", "STATISTICS_MAXIMUM",
               "STATISTICS_MEAN", "STATISTICS_MINIMUM", "STATISTICS_STDDEV",
               "STATISTICS_VALID_PERCENT")
#: spatial dim names other tools use, as (y, x)
_XY_NAMES = (("y", "x"), ("latitude", "longitude"), ("lat", "lon"))
#: how a kind is resampled when a raster is reprojected to EPSG:4326
_WARP_RESAMPLING = {"mass": "sum", "density": "bilinear", "log_density": "bilinear",
                    "similarity": "bilinear", "logit": "bilinear"}


def _band_labels(da: xr.DataArray, lead: str) -> np.ndarray:
    """Band labels of a raster read by rioxarray: our band descriptions, else band numbers."""
    desc = da.attrs.get("long_name")
    n = da.sizes[lead]
    if isinstance(desc, str):  # rioxarray reads one description as a plain string
        desc = (desc,)
    if not (isinstance(desc, tuple | list) and len(desc) == n):
        return np.asarray(da[lead].values) if lead in da.coords else np.arange(n)
    name = da.attrs.get("leading_dim", "")
    labels: list[Any] = [str(d).removeprefix(f"{name}=") if name else str(d) for d in desc]
    if all(lab.lstrip("-").isdigit() for lab in labels):
        return np.asarray([int(lab) for lab in labels])
    return np.asarray(labels, dtype=object)


def _reproject_to_4326(da: xr.DataArray) -> xr.DataArray:
    from rasterio.enums import Resampling

    kind = da.attrs.get("field_kind")
    how = _WARP_RESAMPLING.get(str(kind), "bilinear")
    warnings.warn(
        f"the field is in {da.rio.crs.to_string()}, not EPSG:4326: reprojecting it with "
        f"da.rio.reproject('EPSG:4326', resampling={how}). Reproject it yourself to choose "
        "the resolution and resampling.", UserWarning, stacklevel=4,
    )
    from affine import Affine
    from rasterio.warp import calculate_default_transform

    # square cells in degrees (the grid contract has one resolution) inside the globe
    transform, _, _ = calculate_default_transform(
        da.rio.crs, "EPSG:4326", da.rio.width, da.rio.height, *da.rio.bounds())
    west, south, east, north = da.rio.transform_bounds("EPSG:4326")
    west, east = max(west, -180.0), min(east, 180.0)
    south, north = max(south, -90.0), min(north, 90.0)
    n_lon = max(2, round((east - west) / min(abs(transform.a), abs(transform.e))))
    res = (east - west) / n_lon
    n_lat = max(2, int((north - south) / res + 1e-9))
    return da.rio.reproject("EPSG:4326", shape=(n_lat, n_lon),
                            transform=Affine(res, 0.0, west, 0.0, -res, north),
                            resampling=Resampling[how])


def _decode(da: xr.DataArray) -> xr.DataArray:
    """Nodata -> NaN and scale/offset applied, for arrays opened with mask_and_scale=False."""
    nodata = da.attrs.get("_FillValue", da.encoding.get("_FillValue"))
    scale = float(da.attrs.get("scale_factor", 1.0))
    offset = float(da.attrs.get("add_offset", 0.0))
    values = da.values.astype(np.float64)
    if nodata is not None and not np.isnan(nodata):
        values[values == nodata] = np.nan
    return da.copy(data=values * scale + offset)


def as_latlon_field(da: Any) -> Any:
    """Bring a raster in rioxarray's layout onto the grid contract's dims.

    ``rioxarray.open_rasterio`` returns ``(band, y, x)`` with ``x``/``y`` coordinates;
    other tools use ``latitude``/``longitude``. Such arrays get ``lat``/``lon`` dims, a
    single band is dropped (unless geodiffloc wrote it as one query), several become the
    leading dim (named by the file's ``leading_dim`` tag and labelled by the band
    descriptions when written by geodiffloc). A raster in another CRS is reprojected to
    EPSG:4326 with a warning. Anything else is returned unchanged (and judged by
    :func:`field_parts`).
    """
    import xarray as xr

    if not isinstance(da, xr.DataArray) or da.ndim not in (2, 3):
        return da
    names = tuple(da.dims[-2:])
    if names == ("lat", "lon"):  # the grid contract already (ours, or read_geotiff's)
        return _lon_from_0_360(da)
    if names not in _XY_NAMES and names[::-1] not in _XY_NAMES:
        return da
    import rioxarray  # noqa: F401  (registers .rio)

    if names in (("x", "y"), ("lon", "lat"), ("longitude", "latitude")):  # transposed
        da = da.transpose(*da.dims[:-2], names[1], names[0])
        names = names[::-1]
    crs = da.rio.crs if names == ("y", "x") else None
    if crs is not None and crs.to_epsg() != 4326:
        da = _reproject_to_4326(da)
    da = _decode(da)
    if names != ("lat", "lon"):
        da = da.rename({names[0]: "lat", names[1]: "lon"})
    if da.ndim == 3:
        lead = str(da.dims[0])
        if lead == "band" and da.sizes[lead] == 1 and not da.attrs.get("leading_dim"):
            da = da.isel(band=0, drop=True)
        elif lead == "band":
            new = str(da.attrs.get("leading_dim") or "band")
            da = da.assign_coords(band=_band_labels(da, "band")).rename(band=new)
    if da.attrs.get("field_kind") in FIELD_KINDS:
        band_tag = da.attrs.get("leading_dim")  # band 1's own tag, read as a dataset attr
        keep = {k: v for k, v in da.attrs.items() if k not in _FILE_ATTRS and k != band_tag}
        da.attrs = {**keep, **FIELD_KINDS[da.attrs["field_kind"]]}
    return _lon_from_0_360(da)


def _lon_from_0_360(da: xr.DataArray) -> xr.DataArray:
    """Longitudes given as 0..360 (climate and GRIB rasters) moved onto -180..180.

    A global 0..360 grid is rolled so that it starts at -180 (cell values move with
    their longitudes, nothing is resampled); a regional grid wholly east of 180 is
    shifted by -360. A regional grid that crosses 180 stays as it is (the grid contract
    allows cells past +180 there). Anything that is not such a grid is left to
    :meth:`LatLonGrid.from_dataarray` to judge.
    """
    if "lon" not in da.coords or da.sizes.get("lon", 0) < 2:
        return da
    lon = np.asarray(da["lon"].values, dtype=np.float64)
    if not (np.isfinite(lon).all() and lon.max() > 180.0 and lon.min() >= 0.0
            and lon.max() <= 360.0):
        return da
    res = float(lon[1] - lon[0])
    if res <= 0:
        return da
    span = lon[-1] - lon[0] + res
    if abs(span - 360.0) <= 1e-6 * 360.0 and lon[0] - res / 2 > -1e-9:  # global 0..360
        new = np.where(lon >= 180.0, lon - 360.0, lon)
        return da.assign_coords(lon=new).sortby("lon")
    if lon[0] - res / 2 >= 180.0 - 1e-9:  # regional, wholly in 180..360
        return da.assign_coords(lon=lon - 360.0)
    return da


@dataclass(frozen=True)
class FieldParts:
    """A validated field: its grid, kind, values as ``(q, n_lat, n_lon)`` and leading dim."""

    grid: LatLonGrid
    kind: str
    values: np.ndarray
    leading_dim: str | None
    leading_coords: np.ndarray | None

    @property
    def n_queries(self) -> int:
        return int(self.values.shape[0])

    def query_labels(self) -> list[Any]:
        """One label per query: the leading coordinate values, or ``[0]`` for a 2-D field."""
        if self.leading_coords is None:
            return [0]
        return [v.item() if hasattr(v, "item") else v for v in self.leading_coords]


def field_parts(da: Any, *, dtype: Any = np.float64) -> FieldParts:
    """Validate a field DataArray against the grid contract and split it into parts.

    Raises
    ------
    ValueError
        Not a DataArray, wrong dims, unknown ``field_kind`` or an irregular grid.
    """
    import xarray as xr

    da = as_latlon_field(da)
    if not isinstance(da, xr.DataArray):
        raise ValueError(
            f"expected an xarray.DataArray field; got {type(da).__name__}. Build fields with "
            "LatLonGrid.to_dataarray(values, kind=...) or read them with read_geotiff(path)."
        )
    if da.ndim not in (2, 3) or tuple(da.dims[-2:]) != ("lat", "lon"):
        raise ValueError(
            f"a field must have dims ('lat', 'lon') or (leading, 'lat', 'lon'); got {da.dims}. "
            "Transpose it (da.transpose(..., 'lat', 'lon')) or build it with LatLonGrid."
        )
    kind = da.attrs.get("field_kind")
    if kind not in FIELD_KINDS:
        raise ValueError(
            f"attrs['field_kind'] must be one of {sorted(FIELD_KINDS)}; got {kind!r}. Set it "
            "(da.attrs['field_kind'] = 'mass') or build the field with LatLonGrid.to_dataarray."
        )
    grid = LatLonGrid.from_dataarray(da)
    raw = np.asarray(da.values)
    if raw.dtype.kind not in "fiub":
        raise ValueError(f"a field's values must be real numbers; got dtype {raw.dtype}. Take "
                         "the real part (da.real) or convert the values (da.astype(float)).")
    values = np.asarray(raw, dtype=dtype)
    lead = None
    coords = None
    if da.ndim == 3:
        lead = str(da.dims[0])
        coords = np.asarray(da[lead].values) if lead in da.coords else np.arange(da.shape[0])
    else:
        values = values[None]
    return FieldParts(grid, str(kind), values, lead, coords)


def provenance(attrs: dict[str, Any]) -> dict[str, Any]:
    """The provenance part of a field's attrs (everything the grid builder did not set)."""
    band_tag = attrs.get("leading_dim")  # band 1's label tag, when read by rioxarray
    return {k: v for k, v in attrs.items()
            if k not in GRID_ATTRS and k not in _FILE_ATTRS and k != band_tag}


def rewrap(da: Any, parts: FieldParts, values: np.ndarray, kind: str) -> Any:
    """Build a new field on the same grid, keeping leading coords, name and provenance."""
    vals = values if parts.leading_dim is not None else values[0]
    name = da.name if da.name not in (None, *FIELD_KINDS) else kind
    return parts.grid.to_dataarray(
        vals,
        kind=kind,  # type: ignore[arg-type]
        name=str(name),
        leading_dim=parts.leading_dim or "sample",
        leading_coords=parts.leading_coords,
        attrs=provenance(dict(da.attrs)),
    )


def masses(parts: FieldParts, what: str) -> np.ndarray:
    """Cell masses ``(q, n_lat, n_lon)`` of a probability field (NaN = nodata -> 0)."""
    area = parts.grid.cell_area_km2()[:, None]
    if parts.kind == "mass":
        m = parts.values
    elif parts.kind == "density":
        m = parts.values * area
    elif parts.kind == "log_density":
        m = np.exp(parts.values) * area
    else:
        raise ValueError(
            f"{what} needs a probability field, but this one holds '{parts.kind}' scores. Turn "
            "scores into probabilities first (e.g. a softmax over cells with a temperature) "
            "and build the field with kind='mass'."
        )
    return np.nan_to_num(m, nan=0.0, posinf=np.inf, neginf=0.0)
