"""Geotagged image collections: MP16-style CSVs, GeoDataFrames, folders of GPS-tagged photos.

All three become one :class:`GeotaggedDataset` (a torch ``Dataset`` of
``(image, (lat, lon))``). Rows that cannot be used are skipped while the dataset is
built, never mid-training, and each is listed with its reason in
:attr:`GeotaggedDataset.report` (missing file, unreadable image, no GPS, malformed or
out-of-range coordinates), so a long run never dies on row 3,000,001.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..sphere.crs import to_epsg4326
from .exif import GPSError, read_gps

__all__ = ["IMAGE_EXTENSIONS", "GeotaggedDataset", "SkipReport"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".heic", ".bmp")

# column names seen in MP16 / GeoCLIP / Im2GPS CSVs, most specific first
_PATH_COLUMNS = ("IMG_FILE", "IMG_ID", "image_path", "img_path", "filepath", "file_path",
                 "path", "filename", "file", "image")
_LAT_COLUMNS = ("LAT", "latitude", "lat")
_LON_COLUMNS = ("LON", "longitude", "lon", "lng", "long")

Check = Literal["none", "exists", "open", "decode"]

MISSING_PATH = "missing path"
MISSING_FILE = "missing file"
UNREADABLE = "unreadable image"
NO_GPS = "no GPS"
BAD_GPS = "malformed GPS"
MISSING_COORDS = "missing coordinates"
OUT_OF_RANGE = "out-of-range coordinates"
NULL_ISLAND = "GPS at (0, 0) (camera without a fix)"
NOT_A_POINT = "geometry is not a point"


@dataclass
class SkipReport:
    """Rows left out of a dataset, with the reason for each.

    Attributes
    ----------
    rows
        ``(row, path, reason)`` tuples; ``row`` is the source's index label (CSV row
        index, GeoDataFrame index) or the file's position in a folder listing.

    Examples
    --------
    >>> r = SkipReport()
    >>> r.add(3, "a.jpg", "missing file")
    >>> len(r), r.counts()
    (1, {'missing file': 1})
    """

    rows: list[tuple[Any, str, str]] = field(default_factory=list)

    def add(self, row: Any, path: Any, reason: str) -> None:
        """Record one skipped row."""
        self.rows.append((row, "" if path is None else str(path), reason))

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self) -> dict[str, int]:
        """Number of skipped rows per reason."""
        return dict(Counter(r for _, _, r in self.rows))

    def to_frame(self) -> pd.DataFrame:
        """The skipped rows as a DataFrame with columns ``row, path, reason``."""
        return pd.DataFrame(self.rows, columns=["row", "path", "reason"])

    def __str__(self) -> str:
        if not self.rows:
            return "SkipReport: nothing skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in self.counts().items())
        return f"SkipReport: {len(self.rows)} skipped ({parts})"


def _find_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str],
                 what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"column {wanted!r} ({what}) not found; columns are {list(columns)}.")
        return wanted
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand.lower() in lower:
            return lower[cand.lower()]
    raise ValueError(
        f"no {what} column found among {list(columns)}; name it explicitly "
        f"(e.g. one of {list(candidates[:4])})."
    )


def _check_image(path: Path, check: str) -> str | None:
    """Reason the image is unusable, or None."""
    if check == "none":
        return None
    if not path.is_file():
        return MISSING_FILE
    if check == "exists":
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            if check == "decode":
                im.load()
            else:
                im.verify()
    except Exception:  # Pillow raises many error types on corrupt data
        return UNREADABLE
    return None


def _coords_reason(lat: float, lon: float) -> str | None:
    if not (np.isfinite(lat) and np.isfinite(lon)):
        return MISSING_COORDS
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 360.0):
        return OUT_OF_RANGE
    return None


def _resolve(p: Any, root: Path | None) -> Path | None:
    if p is None or (isinstance(p, float) and np.isnan(p)) or str(p).strip() == "":
        return None
    path = Path(str(p))
    return root / path if root is not None and not path.is_absolute() else path


_CHECKS: tuple[Check, ...] = ("none", "exists", "open", "decode")


def _check_mode(check: Check | bool | None) -> Check:
    if check is False or check is None:
        return "none"
    for mode in _CHECKS:
        if check == mode:
            return mode
    raise ValueError(f"check must be 'none', 'exists', 'open' or 'decode'; got {check!r}.")


class GeotaggedDataset(torch.utils.data.Dataset):
    """Images with known locations: a torch Dataset of ``(image, latlon)``.

    Build one with :meth:`from_csv`, :meth:`from_geodataframe` or :meth:`from_folder`
    (or directly from clean paths and coordinates).

    Parameters
    ----------
    paths
        Image paths.
    latlon
        ``(n, 2)`` ``(lat, lon)`` degrees.
    loader
        Called on a path in ``__getitem__``; default returns the path as a string
        (encoders take paths), e.g. pass :func:`geodiffloc.encoders.efficientnet.load_image`
        for PIL images.
    report
        Rows skipped while building (kept for inspection).

    Raises
    ------
    ValueError
        If lengths differ or a coordinate is invalid.

    Examples
    --------
    >>> ds = GeotaggedDataset(["a.jpg"], [[48.85, 2.35]])
    >>> ds[0]
    ('a.jpg', tensor([48.8500,  2.3500], dtype=torch.float64))
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        latlon: Any,
        *,
        loader: Callable[[str], Any] | None = None,
        report: SkipReport | None = None,
    ) -> None:
        from ..sphere import as_latlon

        self.paths = [str(p) for p in paths]
        arr = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
        if len(arr) != len(self.paths):
            raise ValueError(f"{len(self.paths)} paths but {len(arr)} coordinates.")
        lat, lon = as_latlon(lat=arr[:, 0], lon=arr[:, 1]) if len(arr) else (arr[:, 0], arr[:, 1])
        self.latlon = torch.from_numpy(np.stack([lat, lon], axis=1))
        self.loader = loader
        self.report = report if report is not None else SkipReport()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Any, torch.Tensor]:
        p = self.paths[i]
        return (self.loader(p) if self.loader is not None else p), self.latlon[i]

    def __repr__(self) -> str:
        return f"GeotaggedDataset({len(self)} images; {self.report})"

    def to_geodataframe(self) -> Any:
        """The items as a point GeoDataFrame (``path, lat, lon, geometry``; EPSG:4326)."""
        import geopandas as gpd

        ll = self.latlon.numpy()
        return gpd.GeoDataFrame(
            {"path": self.paths, "lat": ll[:, 0], "lon": ll[:, 1]},
            geometry=gpd.points_from_xy(ll[:, 1], ll[:, 0]), crs="EPSG:4326",
        )

    @classmethod
    def _from_rows(
        cls, rows: Any, *, check: str, report: SkipReport, loader: Any, progress: bool,
    ) -> GeotaggedDataset:
        paths, coords = [], []
        for row, path, lat, lon, reason in tqdm(
            rows, disable=not progress, unit="row", desc="checking images"
        ):
            reason = reason or (MISSING_PATH if path is None else None)
            reason = reason or _coords_reason(lat, lon) or _check_image(path, check)
            if reason:
                report.add(row, path, reason)
                continue
            paths.append(path)
            coords.append((lat, lon))
        return cls(paths, np.asarray(coords, np.float64).reshape(-1, 2),
                   loader=loader, report=report)

    @classmethod
    def from_csv(
        cls,
        source: str | os.PathLike | pd.DataFrame,
        image_root: str | os.PathLike | None = None,
        *,
        path_col: str | None = None,
        lat_col: str | None = None,
        lon_col: str | None = None,
        check: Check | bool = "open",
        loader: Callable[[str], Any] | None = None,
        progress: bool = False,
    ) -> GeotaggedDataset:
        """A CSV (or DataFrame) of image paths and coordinates, e.g. MP16's ``IMG_ID, LAT, LON``.

        Parameters
        ----------
        source
            CSV file or DataFrame.
        image_root
            Folder that relative paths are resolved against (default: the CSV's folder
            for a file, the working directory for a DataFrame).
        path_col, lat_col, lon_col
            Column names; by default detected (``IMG_FILE``/``IMG_ID``/``path``...,
            ``LAT``/``latitude``..., ``LON``/``longitude``...; case-insensitive).
        check
            ``"open"`` (default: file exists and Pillow can parse it), ``"decode"``
            (full decode, slow), ``"exists"``, or ``"none"``.
        loader, progress
            See the class; tqdm bar over rows.

        Returns
        -------
        GeotaggedDataset
            Bad rows are in ``.report``.

        Raises
        ------
        ValueError
            If the columns cannot be found or ``check`` is unknown.

        Examples
        --------
        >>> df = pd.DataFrame({"IMG_ID": ["x.jpg"], "LAT": [10.0], "LON": [200.0]})
        >>> ds = GeotaggedDataset.from_csv(df, check="none")
        >>> ds.latlon.tolist()
        [[10.0, -160.0]]
        """
        check = _check_mode(check)
        if isinstance(source, pd.DataFrame):
            df, default_root = source, None
        else:
            df, default_root = pd.read_csv(source), Path(source).parent
        root = Path(image_root) if image_root is not None else default_root
        pc = _find_column(df.columns, path_col, _PATH_COLUMNS, "image path")
        la = _find_column(df.columns, lat_col, _LAT_COLUMNS, "latitude")
        lo = _find_column(df.columns, lon_col, _LON_COLUMNS, "longitude")
        lat = pd.to_numeric(df[la], errors="coerce").to_numpy(np.float64)
        lon = pd.to_numeric(df[lo], errors="coerce").to_numpy(np.float64)
        rows = (
            (idx, _resolve(p, root), a, b, None)
            for idx, p, a, b in zip(df.index, df[pc], lat, lon)
        )
        return cls._from_rows(rows, check=check, report=SkipReport(), loader=loader,
                              progress=progress)

    @classmethod
    def from_geodataframe(
        cls,
        gdf: Any,
        path_col: str,
        image_root: str | os.PathLike | None = None,
        *,
        check: Check | bool = "open",
        loader: Callable[[str], Any] | None = None,
        progress: bool = False,
    ) -> GeotaggedDataset:
        """A GeoDataFrame of points with an image-path column.

        Parameters
        ----------
        gdf
            Point GeoDataFrame in a geographic CRS (EPSG:4326 or another lat/lon CRS,
            which is converted). Non-point or empty geometries are skipped.
        path_col
            Column with image paths.
        image_root, check, loader, progress
            As in :meth:`from_csv`.

        Returns
        -------
        GeotaggedDataset

        Raises
        ------
        ValueError
            If the GeoDataFrame has no CRS (any CRS is reprojected to EPSG:4326),
            ``path_col`` is missing, or ``check`` is unknown.

        Examples
        --------
        >>> import geopandas as gpd
        >>> g = gpd.GeoDataFrame({"img": ["a.jpg"]}, geometry=gpd.points_from_xy([2.35], [48.85]),
        ...                      crs="EPSG:4326")
        >>> GeotaggedDataset.from_geodataframe(g, "img", check="none").latlon.tolist()
        [[48.85, 2.35]]
        """
        check = _check_mode(check)
        if path_col not in gdf.columns:
            raise ValueError(f"column {path_col!r} not found; columns are {list(gdf.columns)}.")
        gdf = to_epsg4326(gdf, what="the GeoDataFrame")  # any CRS; none is refused
        root = Path(image_root) if image_root is not None else None

        def rows() -> Any:
            for idx, p, geom in zip(gdf.index, gdf[path_col], gdf.geometry):
                if geom is None or geom.is_empty:
                    yield idx, _resolve(p, root), np.nan, np.nan, MISSING_COORDS
                elif geom.geom_type != "Point":
                    yield idx, _resolve(p, root), np.nan, np.nan, NOT_A_POINT
                else:
                    yield idx, _resolve(p, root), float(geom.y), float(geom.x), None

        return cls._from_rows(rows(), check=check, report=SkipReport(), loader=loader,
                              progress=progress)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        *,
        recursive: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        check: Check | bool = "open",
        skip_null_island: bool = True,
        loader: Callable[[str], Any] | None = None,
        progress: bool = False,
    ) -> GeotaggedDataset:
        """Photos in a folder, located by their EXIF GPS tags.

        Parameters
        ----------
        folder
            Folder to scan (sorted, so the order is reproducible).
        recursive
            Include sub-folders.
        extensions
            File suffixes treated as images (case-insensitive).
        check
            As in :meth:`from_csv` (the EXIF read already opens each file).
        skip_null_island
            Skip GPS exactly at (0, 0), which cameras write when they have no fix.
        loader, progress
            See the class.

        Returns
        -------
        GeotaggedDataset
            Photos without GPS, with malformed GPS or unreadable are in ``.report``.

        Raises
        ------
        ValueError
            If ``folder`` is not a folder.

        Examples
        --------
        >>> import tempfile
        >>> len(GeotaggedDataset.from_folder(tempfile.mkdtemp()))
        0
        """
        check = _check_mode(check)
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a folder.")
        exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
        files = sorted(
            p for p in (folder.rglob("*") if recursive else folder.iterdir())
            if p.is_file() and p.suffix.lower() in exts
        )

        def rows() -> Any:
            for i, p in enumerate(files):
                try:
                    latlon = read_gps(p)
                except GPSError:
                    yield i, p, np.nan, np.nan, BAD_GPS
                    continue
                except (ValueError, OSError):
                    yield i, p, np.nan, np.nan, UNREADABLE
                    continue
                if latlon is None:
                    yield i, p, np.nan, np.nan, NO_GPS
                elif skip_null_island and latlon == (0.0, 0.0):
                    yield i, p, *latlon, NULL_ISLAND
                else:
                    yield i, p, *latlon, None

        return cls._from_rows(rows(), check=check, report=SkipReport(), loader=loader,
                              progress=progress)
