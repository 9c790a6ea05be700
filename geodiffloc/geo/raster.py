"""Probability rasters: mass/density conversion, resampling onto the grid, GeoTIFF I/O."""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._io import atomic_path, check_writable
from .._version import __version__
from ..sphere import FIELD_KINDS, LatLonGrid
from ._field import field_parts, masses, provenance, rewrap
from ._validate import check_real_values

if TYPE_CHECKING:
    import xarray as xr
    from numpy.typing import ArrayLike

__all__ = ["read_geotiff", "resample_to_grid", "to_density", "to_geotiff", "to_mass"]

_COMPRESS = {"deflate", "lzw", "zstd", "lzma", "packbits", "none"}
_REPROJECT_HINT = (
    "reproject it to EPSG:4326 first, e.g. `gdalwarp -t_srs EPSG:4326 -r bilinear in.tif "
    "out.tif` (for cell masses, warp densities and convert back with to_mass)."
)


def to_mass(da: xr.DataArray) -> xr.DataArray:
    """Convert a probability field to cell probability masses.

    Parameters
    ----------
    da
        A field on the grid contract whose ``attrs["field_kind"]`` is ``"mass"``,
        ``"density"`` (per km²) or ``"log_density"``.

    Returns
    -------
    xarray.DataArray
        ``kind="mass"``: mass of each cell (density x spherical cell area in km²),
        ``units="1"``; coordinates, leading dim and provenance attrs kept.

    Raises
    ------
    ValueError
        Not a field, or a score field (``similarity``/``logit``) with no probability meaning.

    Examples
    --------
    >>> import numpy as np
    >>> g = LatLonGrid.global_(30.0)
    >>> dens = g.to_dataarray(np.full(g.shape, 1 / g.cell_area_km2().sum() / g.shape[1]),
    ...                       kind="density")
    >>> round(float(to_mass(dens).sum()), 6)
    1.0
    """
    parts = field_parts(da)
    if parts.kind == "mass":
        return rewrap(da, parts, parts.values, "mass")
    m = masses(parts, "to_mass")
    m[np.isnan(parts.values)] = np.nan  # keep nodata as nodata
    return rewrap(da, parts, m, "mass")


def to_density(da: xr.DataArray) -> xr.DataArray:
    """Convert a probability field to a density per km².

    Parameters
    ----------
    da
        A ``"mass"``, ``"density"`` or ``"log_density"`` field.

    Returns
    -------
    xarray.DataArray
        ``kind="density"``, ``units="km-2"``.

    Raises
    ------
    ValueError
        Not a field, or a score field (``similarity``/``logit``).

    Examples
    --------
    >>> import numpy as np
    >>> g = LatLonGrid.global_(30.0)
    >>> m = g.to_dataarray(np.full(g.shape, 1 / (6 * 12)), kind="mass")
    >>> d = to_density(m)
    >>> d.attrs["units"], bool(d[0, 0] > d[3, 0])  # polar cells are smaller: denser
    ('km-2', True)
    """
    parts = field_parts(da)
    if parts.kind == "density":
        return rewrap(da, parts, parts.values, "density")
    if parts.kind == "log_density":
        return rewrap(da, parts, np.exp(parts.values), "density")
    m = masses(parts, "to_density")
    d = m / parts.grid.cell_area_km2()[:, None]
    d[np.isnan(parts.values)] = np.nan
    return rewrap(da, parts, d, "density")


def resample_to_grid(
    values: ArrayLike,
    lats: ArrayLike,
    lons: ArrayLike,
    grid: LatLonGrid,
    *,
    kind: Literal["density", "log_density", "similarity", "logit"] = "density",
    angle_units: Literal["degrees", "radians"] = "degrees",
    leading_dim: str = "sample",
    attrs: dict[str, Any] | None = None,
) -> xr.DataArray:
    """Resample values given on any lat/lon product grid onto a :class:`LatLonGrid`.

    Internal grids (Gauss–Legendre latitude rows, longitudes in 0..2π, ascending
    latitudes) are *interpolated* (bilinear, periodic in longitude, constant beyond the
    outermost rows towards the poles) at the target cell centres — never relabelled.

    Parameters
    ----------
    values
        ``(n_lat, n_lon)`` or ``(q, n_lat, n_lon)`` array or tensor of point values.
    lats, lons
        1-D source coordinates; latitudes strictly monotonic within [-90, 90] (pass
        ``90 - colatitude`` for colatitudes), longitudes distinct modulo 360° in any
        range (e.g. 0..360 or -180..180).
    grid
        The target grid.
    kind
        What the values are. Cell masses cannot be interpolated (they depend on the
        source cell areas): convert them to densities first.
    angle_units
        Units of ``lats``/``lons``.
    leading_dim, attrs
        Name of the leading dim for 3-D input; provenance attrs.

    Returns
    -------
    xarray.DataArray
        The field on ``grid`` (``kind`` as given).

    Raises
    ------
    ValueError
        Shapes that do not match, non-monotonic latitudes, duplicate longitudes, NaN
        coordinates, or ``kind="mass"``.

    Examples
    --------
    >>> import numpy as np
    >>> lat_deg = np.linspace(-80, 80, 9)          # ascending rows
    >>> lons = np.deg2rad(np.arange(0, 360, 40))   # 0..2pi
    >>> vals = np.broadcast_to(lat_deg[:, None], (9, 9))  # value = latitude
    >>> da = resample_to_grid(vals, np.deg2rad(lat_deg), lons, LatLonGrid.global_(10.0),
    ...                       kind="similarity", angle_units="radians")
    >>> float(da.sel(lat=45, lon=-175))
    45.0
    """
    from scipy.interpolate import RegularGridInterpolator

    if kind == "mass" or kind not in FIELD_KINDS:
        raise ValueError(
            f"kind must be one of 'density', 'log_density', 'similarity', 'logit'; got {kind!r}. "
            "Cell masses depend on the source cells' areas: divide by them to get densities, "
            "resample those, then call to_mass on the result."
        )
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    vals = np.asarray(values, dtype=np.float64)
    lat = np.asarray(lats, dtype=np.float64).ravel()
    lon = np.asarray(lons, dtype=np.float64).ravel()
    if angle_units == "radians":
        lat, lon = np.rad2deg(lat), np.rad2deg(lon)
    elif angle_units != "degrees":
        raise ValueError(f"angle_units must be 'degrees' or 'radians'; got {angle_units!r}.")
    if vals.ndim not in (2, 3) or vals.shape[-2:] != (lat.size, lon.size):
        raise ValueError(
            f"values must have shape (..., {lat.size}, {lon.size}) = (..., len(lats), len(lons)); "
            f"got {vals.shape}."
        )
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise ValueError("lats and lons must be finite numbers.")
    if lat.size < 2 or lon.size < 2:
        raise ValueError("need at least 2 latitude rows and 2 longitude columns to interpolate.")
    if np.abs(lat).max() > 90.0:
        raise ValueError(
            f"latitudes must lie in [-90, 90] degrees (max |lat| = {np.abs(lat).max():.6g}); "
            "for colatitudes pass 90 - colat, for radians pass angle_units='radians'."
        )
    dlat = np.diff(lat)
    if not ((dlat > 0).all() or (dlat < 0).all()):
        raise ValueError("latitudes must be strictly monotonic (ascending or descending).")
    stack = vals if vals.ndim == 3 else vals[None]
    lat_order = np.argsort(lat)
    lon_mod = np.mod(lon, 360.0)
    lon_order = np.argsort(lon_mod)
    lon_sorted = lon_mod[lon_order]
    if (np.diff(lon_sorted) <= 1e-12).any():
        raise ValueError("longitudes must be distinct modulo 360 degrees.")
    src = stack[:, lat_order][:, :, lon_order]
    # periodic padding: one column on each side wraps around the globe
    lon_ext = np.concatenate([[lon_sorted[-1] - 360.0], lon_sorted, [lon_sorted[0] + 360.0]])
    src = np.concatenate([src[:, :, -1:], src, src[:, :, :1]], axis=2)
    interp = RegularGridInterpolator(
        (lat[lat_order], lon_ext), np.moveaxis(src, 0, -1), method="linear"
    )
    tlat = np.clip(grid.lat, lat[lat_order][0], lat[lat_order][-1])
    tlon = np.mod(grid.lon - lon_ext[0], 360.0) + lon_ext[0]
    glat, glon = np.meshgrid(tlat, tlon, indexing="ij")
    out = np.moveaxis(interp(np.stack([glat, glon], axis=-1)), -1, 0)
    meta = {**(attrs or {}), "resampled_from": f"{lat.size}x{lon.size} lat/lon grid (bilinear)"}
    return grid.to_dataarray(
        out if vals.ndim == 3 else out[0], kind=kind, leading_dim=leading_dim, attrs=meta
    )


# -- GeoTIFF ------------------------------------------------------------------------------
def _tag_key(key: Any) -> str:
    return str(key).replace("=", "_").replace(" ", "_")


def _band_label(leading_dim: str | None, label: Any, default: str) -> str:
    """Band description: a query's own text as is (what QGIS shows), else ``dim=value``."""
    if not leading_dim:
        return default
    if isinstance(label, str) and not label.lstrip("-").replace(".", "", 1).isdigit():
        return label
    return f"{leading_dim}={label}"


#: What each exported kind means for GDAL: band unit, overview resampling (``None``: GDAL
#: has no overview resampling that keeps it, so none are built) and how to warp it.
_EXPORT: dict[str, dict[str, Any]] = {
    "density": {"units": "km-2", "overview": "AVERAGE", "resampling": "average",
                "meaning": "probability per km2; integrate as sum(value * true cell area km2)"},
    "mass": {"units": "1", "overview": None, "resampling": "sum",
             "meaning": "probability of each cell; bands sum to 1; warp only with -r sum"},
    "similarity": {"units": "1", "overview": "AVERAGE", "resampling": "bilinear",
                   "meaning": "cosine similarity score (no probability meaning)"},
    "logit": {"units": "1", "overview": "AVERAGE", "resampling": "bilinear",
              "meaning": "unnormalised log score (no probability meaning)"},
}


def _export_values(da: xr.DataArray, kind: str | None) -> tuple[xr.DataArray, str]:
    """The field converted to the kind written to disk (density by default)."""
    parts = field_parts(da)
    probability = parts.kind in ("mass", "density", "log_density")
    if kind is not None and kind not in ("density", "mass"):
        raise ValueError(f"kind must be 'density' (default) or 'mass'; got {kind!r}.")
    if kind is None:
        kind = "density" if probability else parts.kind
    if not probability:
        if kind != parts.kind:
            raise ValueError(
                f"this field holds '{parts.kind}' scores, which cannot be exported as "
                f"'{kind}'; leave kind=None to write the scores as they are."
            )
        return da, kind
    return (to_density(da) if kind == "density" else to_mass(da)), kind


def to_geotiff(
    da: xr.DataArray,
    path: str | os.PathLike,
    *,
    kind: Literal["density", "mass"] | None = None,
    driver: Literal["COG", "GTiff"] = "COG",
    compress: str = "deflate",
    overwrite: bool = True,
    nodata: float = math.nan,
    qml: bool = True,
) -> Path:
    """Write a field as a float32 GeoTIFF (Cloud-Optimized by default), atomically.

    Probability fields are written as **densities per km²** by default: a density
    survives what GDAL tools do to a raster (``gdalwarp``, ``rio.reproject``, averaged
    overviews), whereas cell probabilities (``kind="mass"``) only survive resampling
    that sums (``gdalwarp -r sum``). The band unit (``km-2`` or ``1``), scale 1, offset
    0 and a ``resampling`` tag (``average`` for densities, ``sum`` for masses) say so
    in the file. COG overviews are averaged for densities and scores; mass rasters get
    none, because GDAL cannot build summed overviews.

    One band per entry of the leading dim (query/sample), each with a description (the
    query text for text labels, else e.g. ``"sample=3"``) and a band tag; provenance
    attrs become dataset tags; CRS EPSG:4326 and the grid's transform are written, NaN
    cells become ``nodata``. With ``qml`` a QGIS style (``.qml``, a colour ramp over
    band 1) is written next to the file, which QGIS applies when it opens the raster.

    Parameters
    ----------
    da
        A field on the grid contract (any ``field_kind``).
    path
        Target file (``.tif``); its folder must exist.
    kind
        ``"density"`` (per km², default for probability fields) or ``"mass"`` (cell
        probabilities that sum to 1). Score fields (similarity/logit) are written as
        they are; leave ``kind=None`` for them.
    driver
        ``"COG"`` (tiled, with overviews) or ``"GTiff"`` (plain tiled GeoTIFF).
    compress
        ``"deflate"`` (default), ``"lzw"``, ``"zstd"``, ``"lzma"``, ``"packbits"`` or
        ``"none"``.
    overwrite
        Replace an existing file (default, like ``rio.to_raster``; the replacement is
        atomic). ``False`` refuses an existing file, as the CLI does.
    nodata
        The nodata value written in the file (default NaN).
    qml
        Also write ``<path>.qml`` (same stem), a QGIS style with a colour ramp.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    ValueError
        Not a field, unknown driver/compression/kind.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> g = LatLonGrid.global_(10.0)
    >>> da = g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass", attrs={"model": "demo"})
    >>> back = read_geotiff(to_geotiff(da, pathlib.Path(tempfile.mkdtemp()) / "field.tif"))
    >>> back.attrs["model"], back.attrs["field_kind"], back.attrs["units"]
    ('demo', 'density', 'km-2')
    """
    import rasterio
    import rasterio.shutil
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    if driver not in ("COG", "GTiff"):
        raise ValueError(f"driver must be 'COG' or 'GTiff'; got {driver!r}.")
    comp = str(compress).lower()
    if comp not in _COMPRESS:
        raise ValueError(f"compress must be one of {sorted(_COMPRESS)}; got {compress!r}.")
    check_real_values(da)
    out, written_kind = _export_values(da, kind)
    if qml and not overwrite:  # refuse before writing anything, not after the raster
        check_writable(Path(path).with_suffix(".qml"), overwrite)
    spec = _EXPORT[written_kind]
    parts = field_parts(out, dtype=np.float32)
    data = parts.values.copy()
    if not math.isnan(nodata):
        data[np.isnan(data)] = nodata
    tags = {_tag_key(k): str(v) for k, v in provenance(dict(da.attrs)).items()}
    tags.update(field_kind=written_kind, resampling=spec["resampling"],
                value_meaning=spec["meaning"], geodiffloc_version=__version__)
    band_tags: list[dict[str, str]] = [{"units": spec["units"],
                                        "resampling": spec["resampling"]} for _ in data]
    if parts.leading_dim is not None:
        tags["leading_dim"] = parts.leading_dim
        for bt, label in zip(band_tags, parts.query_labels(), strict=True):
            bt[_tag_key(parts.leading_dim)] = str(label)
    labels = tuple(_band_label(parts.leading_dim, label, str(da.name or written_kind))
                   for label in parts.query_labels())
    # rioxarray writes the georeferencing, nodata, tags and band descriptions; GDAL's
    # driver then copies it with the layout options (COG can only be written by copy)
    raster = (
        xr.DataArray(data, dims=("band", "y", "x"),
                     coords={"band": np.arange(1, len(data) + 1),
                             "y": parts.grid.lat, "x": parts.grid.lon},
                     attrs={**tags, "long_name": labels, "band_tags": band_tags,
                            "scale_factor": 1.0, "add_offset": 0.0})
        .rio.write_crs("EPSG:4326")
        .rio.write_transform(parts.grid.transform)
        .rio.write_nodata(nodata)
    )
    options = dict(COMPRESS=comp.upper(), BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS")
    if comp != "none":
        options["PREDICTOR"] = "YES" if driver == "COG" else "3"  # floating-point predictor
    if driver == "COG":
        options["BLOCKSIZE"] = "256"
        if spec["overview"] is None:
            options["OVERVIEWS"] = "NONE"
        else:
            options["OVERVIEW_RESAMPLING"] = spec["overview"]
    else:
        options.update(TILED="YES", BLOCKXSIZE="256", BLOCKYSIZE="256")
    staged = f"/vsimem/geodiffloc-{uuid.uuid4().hex}.tif"
    try:
        raster.rio.to_raster(staged, driver="GTiff", dtype="float32")
        with rasterio.open(staged, "r+") as ds:  # rioxarray has no band unit of its own
            for b in range(1, ds.count + 1):
                ds.set_band_unit(b, spec["units"])
        with atomic_path(path, overwrite=overwrite) as tmp:
            rasterio.shutil.copy(staged, str(tmp), driver=driver, **options)
    finally:
        if rasterio.shutil.exists(staged):
            rasterio.shutil.delete(staged)
    if qml:
        from .qgis_style import write_qml

        write_qml(Path(path).with_suffix(".qml"), data[0], kind=written_kind, units=spec["units"],
                  overwrite=overwrite)
    return Path(path)


def _check_latlon(raster: xr.DataArray, path: Path) -> None:
    """Refuse what the grid contract cannot hold, each time with the command that fixes it."""
    crs = raster.rio.crs
    if crs is None:
        raise ValueError(f"{path} has no CRS; assign EPSG:4326 if it is lat/lon "
                         "(`gdal_edit.py -a_srs EPSG:4326 file.tif`), otherwise "
                         + _REPROJECT_HINT)
    if crs.to_epsg() != 4326:
        raise ValueError(f"{path} is in {crs.to_string()}, not EPSG:4326; " + _REPROJECT_HINT)
    t = raster.rio.transform(recalc=False)
    if t.b != 0 or t.d != 0 or t.e >= 0 or not math.isclose(t.a, -t.e, rel_tol=1e-9):
        raise ValueError(
            f"{path} is not a north-up raster with square cells (transform {tuple(t)[:6]}); "
            + _REPROJECT_HINT
        )


def read_geotiff(path: str | os.PathLike, *, kind: str | None = None) -> xr.DataArray:
    """Read a GeoTIFF (ours or any EPSG:4326 raster) back as a field on the grid contract.

    Parameters
    ----------
    path
        The raster file.
    kind
        Field kind if the file carries no ``field_kind`` tag (files written by
        :func:`to_geotiff` do); default ``"mass"`` for such files.

    Returns
    -------
    xarray.DataArray
        ``(lat, lon)`` for one band, else ``(leading, lat, lon)``, nodata as NaN,
        provenance tags back in ``attrs``.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        Not a raster, not EPSG:4326 (with the ``gdalwarp`` command to fix it), rotated or
        non-square cells, or an unknown kind.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> g = LatLonGrid.global_(30.0)
    >>> p = to_geotiff(g.to_dataarray(np.ones((2, *g.shape)), kind="similarity"),
    ...                pathlib.Path(tempfile.mkdtemp()) / "f.tif")
    >>> read_geotiff(p).dims
    ('sample', 'lat', 'lon')
    """
    import rioxarray
    import xarray as xr
    from rasterio.errors import RasterioIOError

    from ._field import as_latlon_field

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"raster {p} does not exist.")
    if kind is not None and kind not in FIELD_KINDS:
        raise ValueError(f"kind must be one of {sorted(FIELD_KINDS)}; got {kind!r}.")
    try:
        raster = rioxarray.open_rasterio(p, mask_and_scale=False)
    except RasterioIOError as err:
        raise ValueError(f"{p} is not a raster GDAL can read ({err}).") from None
    if not isinstance(raster, xr.DataArray):  # a multi-subdataset file (HDF, NetCDF)
        raise ValueError(f"{p} holds several subdatasets; open one of them by its GDAL "
                         "name (e.g. 'NETCDF:file.nc:variable').")
    with raster:
        _check_latlon(raster, p)
        field = as_latlon_field(raster.load())
    kind = kind or field.attrs.get("field_kind") or "mass"
    attrs = provenance(dict(field.attrs))
    grid = LatLonGrid.from_dataarray(field)
    if field.ndim == 2:
        return grid.to_dataarray(field.values, kind=kind, attrs=attrs)  # type: ignore[arg-type]
    lead = str(field.dims[0])
    return grid.to_dataarray(field.values, kind=kind, leading_dim=lead,  # type: ignore[arg-type]
                             leading_coords=np.asarray(field[lead].values), attrs=attrs)
