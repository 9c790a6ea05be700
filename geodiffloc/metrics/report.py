"""The file side of evaluation: read located tables, write metric tables and plots."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike

from .._io import atomic_path
from .._optional import require
from ..sphere import as_latlon, to_epsg4326
from .core import (
    _LAT_NAMES,
    _LON_NAMES,
    DEFAULT_THRESHOLDS_KM,
    _check_errors,
    _find_column,
    check_thresholds,
)

__all__ = ["format_markdown", "plot_errors", "read_locations", "write_table"]

_CSV_SUFFIXES = {".csv", ".tsv", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".geoparquet", ".pq"}
_TABLE_SUFFIXES = {".csv": "csv", ".md": "markdown", ".markdown": "markdown"}
PLOT_FLOOR_KM = 0.01
"""Errors below this (10 m) are drawn at it on the log axes of :func:`plot_errors`."""


def _read_any(path: Path) -> Any:
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        # ids and coordinates as text: ids join as strings, coordinates get a clear error
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
    import geopandas as gpd

    if suffix in _PARQUET_SUFFIXES:
        try:
            return gpd.read_parquet(path)
        except ValueError:  # plain Parquet without geo metadata: lat/lon columns
            return pd.read_parquet(path)
    return gpd.read_file(path, engine="pyogrio")


def _normalise_ids(ids: Any, path: Path, id_column: str) -> Any:
    import pandas as pd

    if ids.isna().any():
        i = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise ValueError(
            f"{path}: column {id_column!r} is empty in {int(ids.isna().sum())} row(s) "
            f"(first at row {i}); every row needs an id to be joined."
        )
    if pd.api.types.is_float_dtype(ids) and np.all(np.mod(ids.to_numpy(), 1) == 0):
        ids = ids.astype("int64")  # 7.0 in a GeoPackage joins with "7" in a CSV
    ids = ids.astype(str).str.strip()
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        examples = ", ".join(map(repr, dup.unique()[:5]))
        raise ValueError(
            f"{path}: {dup.nunique()} id(s) in column {id_column!r} appear more than once "
            f"(e.g. {examples}); keep one row per id (e.g. only the top-1 prediction)."
        )
    return ids


def _coordinates(table: Any, path: Path) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    geom = getattr(table, "geometry", None) if hasattr(table, "crs") else None
    if geom is not None and geom.notna().all() and not geom.is_empty.any():
        try:  # any declared CRS is reprojected to EPSG:4326; none is refused
            return as_latlon(points=to_epsg4326(table, what="the table"))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    lat_col = _find_column(table.columns, _LAT_NAMES)
    lon_col = _find_column(table.columns, _LON_NAMES)
    if lat_col is None or lon_col is None:
        cols = [str(c) for c in table.columns]
        raise ValueError(
            f"{path}: no point locations found: need point geometries or 'lat'/'lon' "
            f"columns (any case, or latitude/longitude); the columns are {cols}."
        )
    values = []
    for col in (lat_col, lon_col):
        num = pd.to_numeric(table[col], errors="coerce")
        bad = num.isna() & table[col].notna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}: column {col!r} row {i} is {table[col].iloc[i]!r}, not a number."
            )
        values.append(num.to_numpy(dtype=np.float64))
    try:
        return as_latlon(lat=values[0], lon=values[1])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def read_locations(path: str | os.PathLike, id_column: str = "id") -> gpd.GeoDataFrame:
    """Read ids and point locations from a CSV, GeoPackage/any vector file or (Geo)Parquet.

    Parameters
    ----------
    path
        ``.csv``/``.tsv``/``.txt`` with ``lat``/``lon`` columns (any case, also
        ``LAT``/``LON`` as in MP16, ``latitude``/``longitude``); ``.parquet`` /
        ``.geoparquet`` (GeoParquet points, or plain Parquet with lat/lon columns); any
        other suffix is read with geopandas/pyogrio (GeoPackage, GeoJSON, Shapefile,
        FlatGeobuf, ...) and must hold point geometries (any geographic CRS) or lat/lon
        columns.
    id_column
        Column that identifies each row; ids are compared as text (``7``, ``7.0`` and
        ``"7"`` are the same id).

    Returns
    -------
    pandas.DataFrame
        Columns ``id`` (str), ``lat``, ``lon`` (float64 degrees), in file order.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        Unreadable file, no rows, missing id column, empty or duplicated ids, no point
        geometry or lat/lon columns, non-numeric or invalid coordinates.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = p.write_text("id,LAT,LON\\na,48.85,2.35\\n")
    >>> read_locations(p).to_dict("records")
    [{'id': 'a', 'lat': 48.85, 'lon': 2.35}]
    """
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.is_dir() and path.suffix.lower() not in {".gdb"}:
        raise ValueError(f"{path} is a folder; give a CSV, GeoPackage or Parquet file.")
    try:
        table = _read_any(path)
    except Exception as err:  # any reader failure becomes one clear message
        raise ValueError(
            f"could not read {path} ({type(err).__name__}: {err}); expected a CSV with "
            "lat/lon columns, a GeoPackage/vector file of points, or (Geo)Parquet."
        ) from None
    if len(table) == 0:
        raise ValueError(f"{path} has no rows.")
    if id_column not in table.columns:
        cols = [str(c) for c in table.columns if c != "geometry"]
        raise ValueError(
            f"{path} has no id column {id_column!r}; its columns are {cols}. "
            "Choose one with --id-column (CLI) / id_column=."
        )
    ids = _normalise_ids(table[id_column], path, id_column)
    lat, lon = _coordinates(table, path)
    return pd.DataFrame({"id": ids.to_numpy(), "lat": lat, "lon": lon})


def _cell(value: Any, floatfmt: str) -> str:
    if isinstance(value, float | np.floating):
        return format(float(value), floatfmt)
    return str(value).replace("|", "\\|")


def format_markdown(table: Any, floatfmt: str = ".2f") -> str:
    """A pipe (GitHub-flavoured) Markdown table of a DataFrame, index as first column.

    Parameters
    ----------
    table
        A pandas DataFrame; a named or non-range index becomes the first column.
    floatfmt
        Format spec for floats.

    Returns
    -------
    str
        The table, newline-terminated.

    Examples
    --------
    >>> import pandas as pd
    >>> print(format_markdown(pd.DataFrame({"n": [3], "acc": [12.345]})), end="")
    | n | acc |
    |---:|---:|
    | 3 | 12.35 |
    """
    import pandas as pd

    frame = table
    if frame.index.name is not None or not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    header = [str(c) for c in frame.columns]
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(v, floatfmt) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(table: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a metrics table atomically as CSV (``.csv``) or Markdown (``.md``).

    Parameters
    ----------
    table
        A pandas DataFrame (e.g. ``pandas.DataFrame([summarize(...)])`` or
        :func:`~geodiffloc.metrics.breakdown`); a named index is written as a column.
    path
        Target file; the suffix picks the format.
    overwrite
        Replace an existing file (default: refuse).

    Returns
    -------
    pathlib.Path
        The written path.

    Raises
    ------
    ValueError
        Unsupported suffix.
    FileExistsError
        The file exists and ``overwrite`` is false.
    FileNotFoundError
        The folder does not exist.

    Examples
    --------
    >>> import pandas as pd, pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.csv"
    >>> _ = write_table(pd.DataFrame({"n": [1]}), p)
    >>> p.read_text()
    'n\\n1\\n'
    """
    path = Path(path)
    kind = _TABLE_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ValueError(
            f"cannot tell the table format of {path.name!r}: use a .csv or .md suffix."
        )
    index = table.index.name is not None
    with atomic_path(path, overwrite=overwrite) as tmp:
        if kind == "csv":
            table.to_csv(tmp, index=index)
        else:
            tmp.write_text(format_markdown(table), encoding="utf-8")
    return path


def plot_errors(
    errors_km: ArrayLike,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS_KM,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
    overwrite: bool = False,
) -> Figure:
    """Error distribution: histogram and cumulative share of log errors, threshold lines.

    Parameters
    ----------
    errors_km
        Non-negative errors in km; values under 10 m are drawn at 10 m (log axis).
    thresholds
        Distances drawn as vertical lines, labelled with the accuracy at each.
    path
        If given, the figure is saved there atomically (format from the suffix:
        ``.png``, ``.svg``, ``.pdf``).
    title
        Figure title.
    overwrite
        Replace an existing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (drawn with the Agg canvas; no pyplot state is touched).

    Raises
    ------
    ValueError
        Empty, negative or non-finite errors, bad thresholds.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> fig = plot_errors([0.5, 30.0, 400.0, 3000.0])
    >>> len(fig.axes)
    2
    """
    require("matplotlib", extra="plot", feature="plot_errors")
    from matplotlib.figure import Figure

    errs = _check_errors(errors_km)
    ts = check_thresholds(thresholds)
    shown = np.maximum(errs, PLOT_FLOOR_KM)
    hi = max(float(shown.max()), ts[-1], 20040.0) * 1.05
    lo = min(float(shown.min()), ts[0]) / 1.5
    bins = np.logspace(np.log10(lo), np.log10(hi), 50)
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_hist, ax_cdf = fig.subplots(1, 2)
    ax_hist.hist(shown, bins=bins, color="#4878a8")
    ax_hist.set(xscale="log", xlabel="error (km, log scale)", ylabel="predictions",
                title="error histogram")
    xs = np.sort(shown)
    ax_cdf.step(xs, np.arange(1, xs.size + 1) / xs.size * 100.0, where="post", color="#4878a8")
    ax_cdf.set(xscale="log", xlabel="error (km, log scale)", ylabel="% within error",
               ylim=(0, 100), title="cumulative share")
    for t in ts:
        acc = 100.0 * float(np.mean(errs <= t))
        for ax in (ax_hist, ax_cdf):
            ax.axvline(t, color="#c44e52", lw=0.8, ls="--")
        ax_cdf.annotate(f"{t:g} km\n{acc:.1f}%", (t, 2), xytext=(3, 0),
                        textcoords="offset points", fontsize=8, color="#c44e52")
    fig.suptitle(title or f"n = {errs.size}, median {np.median(errs):.1f} km")
    if path is not None:
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, dpi=120)
    return fig
