"""Collections of inputs for batch geolocation, streamed one input at a time.

:func:`read_inputs` accepts what an analyst's archive looks like and yields
:class:`InputItem` s without ever holding the collection in memory:

a list of strings
    Place descriptions (or image paths for an image model).
a folder
    Every image below it (recursive, in sorted order). A photo's EXIF GPS position,
    when it has one, becomes the input's ground truth, so the run measures its own
    accuracy.
a text file (``.txt``)
    One description per line (an image model reads one image path per line, relative
    to the file's folder).
a table (``.csv``, ``.tsv``, ``.parquet``, ``.geoparquet``)
    A text or image-path column (``column=``, or found by name: ``text``, ``caption``,
    ``description``, ... / ``path``, ``image``, ``filename``, ...). ``lat``/``lon``
    columns (or a GeoParquet point geometry) are read as ground truth when present.

Inputs that cannot be used (an empty line, a missing or unreadable image, an empty
cell, a repeat of an earlier input) are not errors: each is recorded in
:attr:`InputReader.skipped` with its reason and the run goes on.

Every input gets a **key**: a digest of the text, or of an image file's absolute path,
size and modification time. Batch runs use it to skip inputs that are already done.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._fingerprint import fingerprint

__all__ = ["IMAGE_SUFFIXES", "TABLE_SUFFIXES", "InputItem", "InputReader", "SkippedInput",
           "read_inputs"]

#: File suffixes read as images in a folder (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".heic", ".gif")
#: File suffixes read as tables.
TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".geoparquet", ".pq")

_TEXT_COLUMNS = ("text", "caption", "description", "query", "title", "sentence", "prompt")
_PATH_COLUMNS = ("path", "image_path", "img_path", "filepath", "file_path", "IMG_FILE",
                 "filename", "file", "image")
_LAT_COLUMNS = ("lat", "latitude", "LAT")
_LON_COLUMNS = ("lon", "longitude", "lng", "long", "LON")
_TABLE_BATCH = 4096


@dataclass(frozen=True)
class InputItem:
    """One usable input.

    Attributes
    ----------
    key
        Identity used to resume (24 hex characters).
    value
        What the encoder gets: the text, or the image's absolute path.
    label
        How the input is shown in the outputs (``query`` column): the text, or the
        image path as found (relative to the folder for folder inputs).
    row
        Where it came from: line number (1-based) in a text file, row number (0-based)
        in a table or list, position in the sorted folder listing.
    true_lat, true_lon
        Ground truth in degrees (EXIF GPS, table columns), NaN when unknown.
    """

    key: str
    value: str
    label: str
    row: int
    true_lat: float = math.nan
    true_lon: float = math.nan


@dataclass(frozen=True)
class SkippedInput:
    """An input left out, and why (a row of ``skipped.csv``)."""

    row: int
    input: str
    reason: str


def text_key(text: str) -> str:
    """The resume key of a description.

    Examples
    --------
    >>> text_key("Kyoto temple") == text_key("Kyoto temple")
    True
    """
    return fingerprint("text", text, length=24)


def file_key(path: Path) -> str:
    """The resume key of an image file: absolute path, size and modification time."""
    st = path.stat()
    return fingerprint("file", str(path.resolve()), int(st.st_size), int(st.st_mtime_ns),
                       length=24)


def _find(columns: list[str], wanted: str | None, candidates: Iterable[str]) -> str | None:
    if wanted is not None:
        return wanted if wanted in columns else None
    lower = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand.lower() in lower:
            return lower[cand.lower()]
    return None


def _image_problem(path: Path) -> str | None:
    """Why an image cannot be used, or None (opens the header only: cheap)."""
    if not path.is_file():
        return "missing file"
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as err:  # Pillow raises many error types on damaged data
        return f"unreadable image ({type(err).__name__}: {str(err)[:80]})"
    return None


def _exif_truth(path: Path) -> tuple[float, float]:
    from ..data.exif import read_gps

    try:
        ll = read_gps(path)
    except Exception:  # malformed GPS tags: no ground truth, still an input
        return math.nan, math.nan
    if ll is None or (ll[0] == 0.0 and ll[1] == 0.0):  # (0, 0): a camera without a fix
        return math.nan, math.nan
    return float(ll[0]), float(ll[1])


def _exists(text: str) -> bool:
    try:
        return Path(text).exists()
    except (OSError, ValueError):  # a name too long for a path, a NUL byte: not a file
        return False


def _float(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (
        isinstance(v, str) and not v.strip())


def _truth(lat: Any, lon: Any) -> tuple[float, float, str | None]:
    """Ground truth of a table row: ``(lat, lon, problem)``; longitudes 0..360 normalised.

    Two blank cells mean "no truth" (no problem). Anything else that is not a valid
    coordinate pair gives NaN and a problem to report: the row is still geolocated,
    only its accuracy is not scored (a bad truth is never clamped or wrapped).
    """
    if _blank(lat) and _blank(lon):
        return math.nan, math.nan, None
    la, lo = _float(lat), _float(lon)
    if math.isnan(la) or math.isnan(lo):
        return math.nan, math.nan, (f"truth lat={lat!r}, lon={lon!r} is not a pair of finite "
                                    "numbers")
    if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 360.0):
        return math.nan, math.nan, (f"truth lat={la:g}, lon={lo:g} is outside lat -90..90, "
                                    "lon -180..360 (swapped columns or projected units?)")
    return la, (lo - 360.0 if lo > 180.0 else lo), None


class InputReader:
    """Iterate a collection's usable inputs; record the ones left out.

    Parameters
    ----------
    source
        A list of strings, a folder, a text file or a table (see the module notes).
    modality
        ``"text"`` or ``"image"``: what the model geolocates.
    column
        The table column holding the texts or image paths (default: found by name).
    lat_column, lon_column
        Ground-truth columns of a table (default: ``lat``/``latitude``,
        ``lon``/``longitude`` when present).

    Attributes
    ----------
    skipped
        The inputs left out so far, with reasons.
    truth_problems
        Inputs geolocated without their ground truth because it was unusable (a
        coordinate that is not a number or out of range, a geometry that is not a point),
        with reasons; bad coordinates are reported here, never dropped or clamped silently.
    n_seen
        Inputs read so far, usable or not.

    Raises
    ------
    ValueError
        A source of an unknown kind, a folder given to a text model, a table without the
        column, an unknown modality.
    FileNotFoundError
        A path that does not exist.

    Examples
    --------
    >>> r = InputReader(["Kyoto temple", "  ", "Kyoto temple", "Lyon"], modality="text")
    >>> [i.label for i in r]
    ['Kyoto temple', 'Lyon']
    >>> [(s.row, s.reason) for s in r.skipped]
    [(1, 'empty text'), (2, 'duplicate of row 0')]
    """

    def __init__(self, source: Any, *, modality: str = "text", column: str | None = None,
                 lat_column: str | None = None, lon_column: str | None = None) -> None:
        if modality not in ("text", "image"):
            raise ValueError(f"modality must be 'text' or 'image'; got {modality!r}.")
        self.source, self.modality, self.column = source, modality, column
        self.lat_column, self.lon_column = lat_column, lon_column
        self.skipped: list[SkippedInput] = []
        self.truth_problems: list[SkippedInput] = []
        self.n_seen = 0
        self.kind = self._kind()

    def _kind(self) -> str:
        src = self.source
        if isinstance(src, str | os.PathLike) and (
                isinstance(src, os.PathLike) or _exists(src)
                or Path(src).suffix.lower() in (".txt", *TABLE_SUFFIXES)):
            p = Path(src)
            if p.is_dir():
                if self.modality != "image":
                    raise ValueError(
                        f"{p} is a folder of images, but this model geolocates "
                        f"{self.modality} descriptions; use an image model (--model "
                        "geoclip-official, or a checkpoint trained on an image encoder).")
                return "folder"
            if not p.exists():
                raise FileNotFoundError(f"input file {os.fspath(p)!r} does not exist.")
            suffix = p.suffix.lower()
            if suffix in TABLE_SUFFIXES:
                return "table"
            if suffix in IMAGE_SUFFIXES and self.modality == "image":
                return "list"
            if suffix == ".txt" or self.modality == "text":
                return "lines"
            raise ValueError(f"cannot read inputs from {p}: give a folder, a .txt file or a "
                             f"table ({', '.join(TABLE_SUFFIXES)}).")
        if isinstance(src, str):
            return "list"
        try:
            iter(src)
        except TypeError:
            raise ValueError(
                f"inputs must be a folder, a text file, a table or a list of strings; got "
                f"{type(src).__name__}.") from None
        return "list"

    # -- the raw rows of each kind: (row, raw value, true_lat, true_lon, base folder) -------
    def _raw(self) -> Iterator[tuple[int, Any, float, float, Path | None]]:
        src = self.source
        if self.kind == "list":
            items = [src] if isinstance(src, str | os.PathLike) else src
            for i, x in enumerate(items):
                yield i, x, math.nan, math.nan, None
        elif self.kind == "lines":
            base = Path(src).resolve().parent
            with open(src, encoding="utf-8", errors="replace", newline="") as fh:
                for i, line in enumerate(fh, start=1):
                    yield i, line.rstrip("\r\n"), math.nan, math.nan, base
        elif self.kind == "folder":
            root = Path(src)
            i = 0
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    yield i, str(Path(dirpath, name).relative_to(root)), math.nan, math.nan, \
                        root
                    i += 1
        else:
            yield from self._table_rows(Path(src))

    def _table_rows(self, path: Path) -> Iterator[tuple[int, Any, float, float, Path | None]]:
        base = path.resolve().parent
        for frame_start, frame in self._table_frames(path):
            cols = list(frame.columns)
            candidates = _TEXT_COLUMNS if self.modality == "text" else _PATH_COLUMNS
            col = _find(cols, self.column, candidates)
            if col is None:
                what = "text" if self.modality == "text" else "image-path"
                raise ValueError(
                    f"{path}: no {what} column " + (f"{self.column!r} " if self.column else "")
                    + f"among {cols}; name it with column= (CLI: --column).")
            lat_c = _find(cols, self.lat_column, _LAT_COLUMNS)
            lon_c = _find(cols, self.lon_column, _LON_COLUMNS)
            values = frame[col].tolist()
            lats = frame[lat_c].tolist() if lat_c and lon_c else None
            lons = frame[lon_c].tolist() if lat_c and lon_c else None
            pts = frame.attrs.get("points")
            for j, v in enumerate(values):
                problem = None
                if lats is not None and lons is not None:
                    la, lo, problem = _truth(lats[j], lons[j])
                elif pts is not None:
                    la, lo, problem = pts[j]
                    if problem is None:
                        la, lo, problem = _truth(la, lo)
                else:
                    la, lo = math.nan, math.nan
                if problem is not None:
                    self.truth_problems.append(SkippedInput(
                        frame_start + j, "" if v is None else str(v)[:500],
                        f"geolocated, but not scored: {problem}"))
                yield frame_start + j, v, la, lo, base

    def _table_frames(self, path: Path) -> Iterator[tuple[int, Any]]:
        import pandas as pd

        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            try:
                reader = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",",
                                     chunksize=_TABLE_BATCH, dtype=str, keep_default_na=False,
                                     on_bad_lines="warn", quoting=csv.QUOTE_MINIMAL)
                start = 0
                for frame in reader:
                    yield start, frame
                    start += len(frame)
            except pd.errors.EmptyDataError:
                return
            except (pd.errors.ParserError, UnicodeDecodeError) as err:
                raise ValueError(f"{path} is not a readable {suffix[1:].upper()} table: "
                                 f"{str(err)[:200]}") from None
            return
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError
            raise ValueError(f"{path} is not a readable Parquet file: {err}") from None
        to_wgs84 = _geo_transformer(pf)
        start = 0
        for batch in pf.iter_batches(batch_size=_TABLE_BATCH):
            frame = batch.to_pandas()
            if to_wgs84 is not None:
                frame.attrs["points"] = to_wgs84(frame)
            yield start, frame
            start += len(frame)

    def __iter__(self) -> Iterator[InputItem]:
        seen: dict[str, int] = {}
        for row, raw, la, lo, base in self._raw():
            self.n_seen += 1
            shown = "" if raw is None else str(raw)
            item = self._item(row, raw, la, lo, base)
            if isinstance(item, str):
                self.skipped.append(SkippedInput(row, shown[:500], item))
                continue
            first = seen.setdefault(item.key, row)
            if first != row:
                self.skipped.append(SkippedInput(row, shown[:500], f"duplicate of row {first}"))
                continue
            yield item

    def _item(self, row: int, raw: Any, la: float, lo: float, base: Path | None,
              ) -> InputItem | str:
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            return "empty cell"
        if not isinstance(raw, str | os.PathLike):
            return f"not a string ({type(raw).__name__})"
        text = os.fspath(raw)
        if not text.strip():
            return "empty line" if self.kind == "lines" else "empty text"
        if self.modality == "text":
            if isinstance(raw, os.PathLike):
                return "a path given to a text model"
            t = text.strip()
            return InputItem(text_key(t), t, t, row, la, lo)
        path = Path(text.strip())
        if base is not None and not path.is_absolute():
            path = base / path
        problem = _image_problem(path)
        if problem is not None:
            return problem
        if math.isnan(la):
            la, lo = _exif_truth(path)
        return InputItem(file_key(path), str(path.resolve()), text.strip(), row, la, lo)


def _geo_transformer(pf: Any) -> Any:
    """For a GeoParquet file: a function frame -> [(lat, lon)] of its point geometry."""
    import json

    meta = pf.schema_arrow.metadata or {}
    geo = meta.get(b"geo")
    if not geo:
        return None
    try:
        info = json.loads(geo)
        col = info.get("primary_column", "geometry")
        crs = info.get("columns", {}).get(col, {}).get("crs", "OGC:CRS84")
    except (ValueError, AttributeError):
        return None
    from pyproj import CRS, Transformer

    try:
        src = CRS.from_user_input(crs if crs is not None else "OGC:CRS84")
        tr = None if src.equals(CRS.from_user_input("OGC:CRS84")) or src.to_epsg() == 4326 \
            else Transformer.from_crs(src, "OGC:CRS84", always_xy=True)
    except Exception:  # an unreadable CRS: no ground truth from geometry
        return None

    def points(frame: Any) -> list[tuple[float, float, str | None]]:
        import shapely

        out: list[tuple[float, float, str | None]] = []
        for wkb in frame[col].tolist() if col in frame else []:
            if wkb is None:  # no geometry: no truth, nothing wrong
                out.append((math.nan, math.nan, None))
                continue
            try:
                g = shapely.from_wkb(wkb)
            except Exception:  # shapely raises GEOSException and others on damaged WKB
                out.append((math.nan, math.nan, "truth geometry is not readable WKB"))
                continue
            if g is None or g.is_empty:
                out.append((math.nan, math.nan, None))
                continue
            if g.geom_type != "Point":
                out.append((math.nan, math.nan, f"truth geometry is a {g.geom_type}, not a "
                                                "Point"))
                continue
            x, y = g.x, g.y
            if tr is not None:
                x, y = tr.transform(x, y)
            out.append((y, x, None))
        return out

    return points


def read_inputs(source: Any, *, modality: str = "text", column: str | None = None,
                ) -> InputReader:
    """An :class:`InputReader` over ``source`` (see the module notes).

    Examples
    --------
    >>> r = read_inputs(["Lyon", ""])
    >>> [i.value for i in r], len(r.skipped)
    (['Lyon'], 1)
    """
    return InputReader(source, modality=modality, column=column)
