"""Maps of fields for notebooks: a static matplotlib world map and an interactive folium map.

Neither needs cartopy: country borders come from the offline Natural Earth data and
the raster is drawn in plate carrée (lon/lat), the field's own CRS.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._optional import require
from ..sphere import FIELD_KINDS
from ._field import FieldParts, field_parts, masses

if TYPE_CHECKING:
    import folium
    import geopandas as gpd
    import xarray as xr
    from matplotlib.axes import Axes

__all__ = ["interactive_map", "plot_field"]

_MERCATOR_MAX_LAT = 85.0511


def _display_values(parts: FieldParts, index: int, density: bool) -> tuple[np.ndarray, str]:
    """Values to colour: probability fields as densities (cells differ in area)."""
    if not 0 <= index < parts.n_queries:
        raise ValueError(f"index must be in [0, {parts.n_queries}); got {index}.")
    if density and parts.kind in ("mass", "log_density"):
        vals = masses(parts, "plotting")[index] / parts.grid.cell_area_km2()[:, None]
        vals[np.isnan(parts.values[index])] = np.nan
        kind = "density"
    else:
        vals, kind = parts.values[index].copy(), parts.kind
    meta = FIELD_KINDS[kind]
    return vals, f"{meta['long_name']} [{meta['units']}]"


def _norm(vals: np.ndarray, log: bool) -> Any:
    from matplotlib.colors import LogNorm, Normalize

    finite = vals[np.isfinite(vals)]
    if finite.size == 0:
        return Normalize(0.0, 1.0)
    vmax = float(finite.max())
    if log:
        pos = finite[finite > 0]
        if pos.size == 0:
            raise ValueError("log=True needs positive values; this field has none.")
        return LogNorm(vmin=max(float(pos.min()), vmax * 1e-8), vmax=vmax)
    return Normalize(float(finite.min()), vmax)


def _latlon_points(points: Any) -> np.ndarray:
    """``(n, 2)`` lat/lon from an array, tensor or point GeoDataFrame/GeoSeries."""
    from ..sphere import as_latlon

    if hasattr(points, "geometry") or hasattr(points, "crs"):
        lat, lon = as_latlon(points=points)
    else:
        arr = np.asarray(points.detach().cpu() if hasattr(points, "detach") else points,
                         dtype=np.float64).reshape(-1, 2)
        lat, lon = as_latlon(lat=arr[:, 0], lon=arr[:, 1])
    return np.column_stack([lat, lon])


def _extent(parts: FieldParts) -> tuple[float, float, float, float]:
    g = parts.grid
    n_lat, n_lon = g.shape
    return g.west, g.west + n_lon * g.resolution, g.north - n_lat * g.resolution, g.north


def plot_field(
    da: xr.DataArray,
    *,
    points: Any = None,
    truth: Any = None,
    log: bool = False,
    ax: Any = None,
    index: int = 0,
    density: bool = True,
    borders: str | None = "lowres",
    cmap: str = "magma",
    title: str | None = None,
    points_label: str = "prediction",
) -> Axes:
    """Static world map of a field with country borders and prediction/truth points.

    Parameters
    ----------
    da
        A field on the grid contract (2-D, or 3-D: ``index`` picks the query).
    points, truth
        Predicted and true locations: ``(n, 2)`` lat/lon arrays/tensors or point
        GeoDataFrames (drawn as circles and stars).
    log
        Logarithmic colour scale (down to 1e-8 of the maximum).
    ax
        Matplotlib axes to draw on (a new figure otherwise).
    index
        Which query/sample of a 3-D field to show.
    density
        Show probability fields as densities per km² (fair across latitudes).
    borders
        Natural Earth scale for borders (``"lowres"``, ``"10m"``) or None.
    cmap, title
        Colour map and title.
    points_label
        Legend label of ``points`` (e.g. ``"reference place"`` when they are not
        predictions).

    Returns
    -------
    matplotlib.axes.Axes

    Raises
    ------
    ValueError
        Not a field, a bad ``index``, or ``log=True`` with no positive values.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> from geodiffloc.sphere import LatLonGrid
    >>> g = LatLonGrid.global_(10.0)
    >>> ax = plot_field(g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass"), borders=None)
    >>> [float(x) for x in ax.get_xlim()]
    [-180.0, 180.0]
    """
    require("matplotlib", extra="plot", feature="plot_field")
    import matplotlib.pyplot as plt

    parts = field_parts(da)
    vals, label = _display_values(parts, index, density)
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 5), layout="constrained")
    west, east, south, north = _extent(parts)
    norm = _norm(vals, log)
    if log:  # zero probability shows as the lowest colour; only NaN (nodata) is blank
        vals = np.where(np.isnan(vals), np.nan, np.maximum(vals, norm.vmin))
    im = ax.imshow(np.ma.masked_invalid(vals), extent=(west, east, south, north),
                   origin="upper", interpolation="nearest", cmap=cmap, norm=norm)
    if borders:
        _draw_borders(ax, borders, west, east)
    for pts, style in ((points, dict(marker="o", s=30, facecolor="none", edgecolor="cyan",
                                     linewidth=1.5, label=points_label)),
                       (truth, dict(marker="*", s=160, color="lime", edgecolor="black",
                                    linewidth=0.8, label="truth"))):
        if pts is not None:
            ll = _latlon_points(pts)
            lon = np.where(ll[:, 1] < west, ll[:, 1] + 360.0, ll[:, 1])  # grids past 180
            ax.scatter(lon, ll[:, 0], zorder=3, **style)
    if points is not None or truth is not None:
        ax.legend(loc="lower left", fontsize="small")
    ax.set_xlim(west, east)
    ax.set_ylim(south, north)
    ax.set_xlabel("longitude [°]")
    ax.set_ylabel("latitude [°]")
    ax.set_title(title if title is not None else str(da.attrs.get("model", da.name or "")))
    ax.figure.colorbar(im, ax=ax, label=label, shrink=0.8)
    return ax


def _draw_borders(ax: Any, scale: str, west: float, east: float) -> None:
    import shapely.affinity

    from .naturalearth import countries

    try:
        world = countries(scale)  # type: ignore[arg-type]
    except ModuleNotFoundError as err:
        warnings.warn(f"no country borders drawn: {err}", stacklevel=3)
        return
    lines = world.boundary
    lines.plot(ax=ax, color="white", linewidth=0.4, alpha=0.8)
    if east > 180.0:  # regional grid across the antimeridian: draw the next copy too
        lines.apply(lambda g: shapely.affinity.translate(g, xoff=360.0)).plot(
            ax=ax, color="white", linewidth=0.4, alpha=0.8)


def interactive_map(
    da: xr.DataArray,
    points: Any = None,
    *,
    truth: Any = None,
    index: int = 0,
    log: bool = False,
    density: bool = True,
    cmap: str = "magma",
    opacity: float = 0.65,
    regions: gpd.GeoDataFrame | None = None,
    points_label: str = "prediction",
) -> folium.Map:
    """Interactive folium map: the field, a colour legend, markers and credible regions.

    One layer control lists the field, the markers and the regions; the colour legend
    (a branca colour bar) gives the field's unit and scale.

    Parameters
    ----------
    da
        A field on the grid contract (rows beyond ±85.05° latitude, outside Web
        Mercator, are left out).
    points, truth
        Predicted and true locations (``(n, 2)`` lat/lon or point GeoDataFrames).
    index, log, density, cmap
        As in :func:`plot_field`.
    opacity
        Overlay opacity; cells with zero or missing value are transparent.
    regions
        Polygons to outline, e.g. :func:`credible_regions` output (any CRS); a
        ``level`` column, if present, labels each outline in its tooltip.
    points_label
        Layer name and popup label of ``points``.

    Returns
    -------
    folium.Map
        Save with ``m.save("map.html")``; shows inline in Jupyter.

    Raises
    ------
    ValueError
        Not a field, bad ``index``/``opacity``, or no rows within Web Mercator latitudes.
    ModuleNotFoundError
        folium or matplotlib is not installed (``pip install "geodiffloc[demo]"``).

    Examples
    --------
    >>> from geodiffloc.sphere import LatLonGrid
    >>> g = LatLonGrid.global_(10.0)
    >>> m = interactive_map(g.to_dataarray(np.full(g.shape, 1 / 648), kind="mass"),
    ...                     points=np.array([[48.86, 2.35]]))
    >>> html = m.get_root().render()
    >>> "imageOverlay" in html and html.count("L.control.layers") == 1
    True
    """
    folium = require("folium", extra="demo", feature="interactive_map")
    matplotlib = require("matplotlib", extra="plot", feature="interactive_map (its colours)")

    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1]; got {opacity}.")
    parts = field_parts(da)
    vals, label = _display_values(parts, index, density)
    g = parts.grid
    top = g.lat + g.resolution / 2
    bottom = g.lat - g.resolution / 2
    keep = (top <= _MERCATOR_MAX_LAT) & (bottom >= -_MERCATOR_MAX_LAT)
    if not keep.any():
        raise ValueError("no grid rows lie within Web Mercator latitudes (±85.05°).")
    vals = vals[keep]
    rgba = matplotlib.colormaps[cmap](_norm(vals, log)(np.ma.masked_invalid(vals)))
    rgba[..., 3] = np.where(np.isfinite(vals) & (vals > 0) if parts.kind != "similarity"
                            else np.isfinite(vals), 1.0, 0.0)
    west, east, _, _ = _extent(parts)
    south, north = float(bottom[keep].min()), float(top[keep].max())
    fmap = folium.Map(location=[(south + north) / 2, (west + east) / 2], zoom_start=2,
                      tiles="OpenStreetMap", world_copy_jump=True)
    folium.raster_layers.ImageOverlay(
        image=(rgba * 255).astype(np.uint8), bounds=[[south, west], [north, east]],
        opacity=opacity, mercator_project=True, name=label, interactive=False,
    ).add_to(fmap)
    _add_colour_legend(fmap, vals, log, cmap, label)
    if regions is not None:
        _add_regions(fmap, regions)
    for pts, colour, name in ((points, "#00bcd4", points_label), (truth, "#00c853", "truth")):
        if pts is None:
            continue
        group = folium.FeatureGroup(name=name)
        for k, (lat, lon) in enumerate(_latlon_points(pts)):
            folium.CircleMarker(location=[float(lat), float(lon)], radius=6, color=colour,
                                fill=True, fill_opacity=0.9,
                                popup=f"{name} {k}: {lat:.4f}, {lon:.4f}").add_to(group)
        group.add_to(fmap)
    folium.LayerControl().add_to(fmap)
    fmap.fit_bounds([[south, west], [north, east]])
    return fmap


def _add_colour_legend(fmap: Any, vals: np.ndarray, log: bool, cmap: str, label: str) -> None:
    """A branca colour bar matching the overlay (log scale shown as log10 of the value)."""
    import branca.colormap
    import matplotlib

    norm = _norm(vals, log)
    lo, hi = float(norm.vmin), float(norm.vmax)
    if log:
        lo, hi, label = np.log10(lo), np.log10(hi), f"log10 {label}"
    if hi <= lo:
        hi = lo + 1.0
    colours = [matplotlib.colors.to_hex(matplotlib.colormaps[cmap](t))
               for t in np.linspace(0.0, 1.0, 9)]
    legend = branca.colormap.LinearColormap(colours, vmin=lo, vmax=hi, caption=label)
    legend.add_to(fmap)


def _add_regions(fmap: Any, regions: Any) -> None:
    import folium

    gdf = regions if regions.crs is None or regions.crs.to_epsg() == 4326 else \
        regions.to_crs("EPSG:4326")
    cols = [c for c in ("query", "level", "mass", "area_km2") if c in gdf.columns]
    folium.GeoJson(
        gdf[[*cols, gdf.geometry.name]].to_json(default=str), name="credible regions",
        style_function=lambda _: {"color": "#ff9800", "weight": 2, "fillOpacity": 0.1},
        tooltip=folium.GeoJsonTooltip(fields=cols) if cols else None,
    ).add_to(fmap)
