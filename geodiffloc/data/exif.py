"""GPS coordinates from photo EXIF metadata.

EXIF stores latitude and longitude as three unsigned values (degrees, minutes,
seconds) plus a hemisphere reference (``N``/``S``, ``E``/``W``). Writers disagree on the
encoding: rationals (Pillow ``IFDRational``, exifread ``Ratio``), ``(num, den)`` pairs,
or ASCII strings such as ``"33/1, 51/1, 5412/100"``, ``"33 51 54.12"`` or a single
decimal. :func:`parse_gps` accepts all of these; :func:`read_gps` reads a file with
Pillow and falls back to exifread for formats Pillow cannot open.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["GPSError", "dms_to_degrees", "parse_gps", "read_gps"]

# EXIF GPS IFD tag ids (EXIF 2.3, section 4.6.6)
_TAGS = {"GPSLatitudeRef": 1, "GPSLatitude": 2, "GPSLongitudeRef": 3, "GPSLongitude": 4}
_GPS_IFD = 0x8825
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d*)?(?:/\d+(?:\.\d*)?)?|[-+]?\.\d+")


class GPSError(ValueError):
    """EXIF GPS tags are present but cannot be turned into valid coordinates."""


def _number(v: Any) -> float:
    """One EXIF number: int/float, IFDRational/Fraction, exifread Ratio, (num, den), 'a/b'."""
    if isinstance(v, bytes):
        v = v.decode("ascii", "replace")
    if isinstance(v, str):
        v = v.strip()
        if "/" in v:
            num, den = v.split("/", 1)
            return _ratio(float(num), float(den))
        return float(v)
    if isinstance(v, tuple | list) and len(v) == 2:
        return _ratio(float(v[0]), float(v[1]))
    if hasattr(v, "numerator") and hasattr(v, "denominator"):
        return _ratio(float(v.numerator), float(v.denominator))
    if hasattr(v, "num") and hasattr(v, "den"):  # exifread.utils.Ratio
        return _ratio(float(v.num), float(v.den))
    return float(v)


def _ratio(num: float, den: float) -> float:
    if den == 0:
        raise GPSError(f"rational {num}/{den} has a zero denominator.")
    return num / den


def _components(value: Any) -> list[float]:
    """EXIF GPS value -> 1..3 numbers (degrees[, minutes[, seconds]])."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        text = value.strip().rstrip("\x00")
        parts = _NUMBER.findall(text)
        if not parts:
            raise GPSError(f"no numbers in GPS value {value!r}.")
        return [_number(p) for p in parts]
    if isinstance(value, tuple | list):
        # legacy Pillow: ((33, 1), (51, 1), (5412, 100)); new: (33.0, 51.0, 54.12)
        return [_number(v) for v in value]
    return [_number(value)]


def dms_to_degrees(value: Any, ref: Any = None) -> float:
    """Degrees/minutes/seconds (any EXIF encoding) and a hemisphere ref -> signed degrees.

    Parameters
    ----------
    value
        1 to 3 numbers (degrees, minutes, seconds) as rationals, floats, ``(num, den)``
        pairs, or a string such as ``"33/1, 51/1, 5412/100"``, ``"33 51 54.12"``,
        ``"33°51'54.12\\""`` or ``"-33.865"``.
    ref
        ``"N"``, ``"S"``, ``"E"``, ``"W"`` (str or bytes, any case) or ``None``. ``S``
        and ``W`` make the result negative.

    Returns
    -------
    float

    Raises
    ------
    GPSError
        For malformed values (zero denominators, minutes/seconds > 60, unknown ref).

    Examples
    --------
    >>> round(dms_to_degrees((33, 51, 54.12), "S"), 6)
    -33.865033
    >>> dms_to_degrees("2/1, 21/1, 3000/100", b"E")
    2.3583333333333334
    """
    try:
        parts = _components(value)
    except (TypeError, ValueError) as err:
        raise GPSError(f"cannot read GPS value {value!r}: {err}") from None
    if not 1 <= len(parts) <= 3:
        raise GPSError(f"GPS value {value!r} has {len(parts)} numbers; expected 1 to 3.")
    if not all(math.isfinite(p) for p in parts):
        raise GPSError(f"GPS value {value!r} is not finite.")
    if ref is None and isinstance(value, str | bytes):
        # some writers append the hemisphere to the string: "33 51 54.12 S"
        tail = re.search(r"([NSEWnsew])\W*$", value if isinstance(value, str) else value.decode(
            "ascii", "replace"))
        ref = tail.group(1) if tail else None
    deg, minutes, seconds = ([*parts, 0.0, 0.0])[:3]
    # 60 itself is tolerated: writers that round 59.9999 s produce it
    if len(parts) > 1 and (deg < 0 or not 0 <= minutes <= 60 or not 0 <= seconds <= 60):
        raise GPSError(f"GPS value {value!r} is not valid degrees/minutes/seconds.")
    out = deg + minutes / 60.0 + seconds / 3600.0
    if ref is not None:
        if isinstance(ref, bytes):
            ref = ref.decode("ascii", "replace")
        r = str(ref).strip().rstrip("\x00").upper()[:1]
        if r in ("S", "W"):
            out = -abs(out)
        elif r not in ("N", "E", ""):
            raise GPSError(f"unknown GPS hemisphere reference {ref!r}; expected N/S/E/W.")
    return out


def _get(gps: Mapping[Any, Any], name: str) -> Any:
    for key in (_TAGS[name], name, f"GPS {name}"):
        if key in gps:
            v = gps[key]
            return getattr(v, "values", v)  # exifread IfdTag -> its values
    return None


def parse_gps(gps: Mapping[Any, Any]) -> tuple[float, float] | None:
    """A GPS IFD (Pillow tag ids or exifread names) -> ``(lat, lon)`` degrees, or None.

    Parameters
    ----------
    gps
        Mapping with keys ``1..4`` (Pillow ``Exif.get_ifd(0x8825)``), or
        ``"GPSLatitude"``-style names, or exifread's ``"GPS GPSLatitude"`` keys.

    Returns
    -------
    tuple of float or None
        ``None`` when latitude or longitude is absent.

    Raises
    ------
    GPSError
        If the values are malformed or out of range.

    Examples
    --------
    >>> parse_gps({1: "S", 2: (33.0, 51.0, 54.0), 3: "W", 4: (151.0, 12.0, 0.0)})
    (-33.865, -151.2)
    >>> parse_gps({}) is None
    True
    """
    lat_v, lon_v = _get(gps, "GPSLatitude"), _get(gps, "GPSLongitude")
    if lat_v is None or lon_v is None or lat_v == () or lon_v == ():
        return None
    lat = dms_to_degrees(lat_v, _get(gps, "GPSLatitudeRef"))
    lon = dms_to_degrees(lon_v, _get(gps, "GPSLongitudeRef"))
    if not -90.0 <= lat <= 90.0 or not -180.0 <= lon <= 360.0:
        raise GPSError(f"GPS position ({lat}, {lon}) is out of range.")
    if lon > 180.0:
        lon -= 360.0
    return lat, lon


def read_gps(path: str | os.PathLike) -> tuple[float, float] | None:
    """``(lat, lon)`` from a photo's EXIF GPS tags, or None if it has none.

    Parameters
    ----------
    path
        Image file (JPEG, TIFF, PNG, WebP via Pillow; others via exifread, e.g. HEIC).

    Returns
    -------
    tuple of float or None

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    GPSError
        If the GPS tags are malformed.
    ValueError
        If neither Pillow nor exifread can read the file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jpg"
    >>> exif = Image.Exif()
    >>> exif[0x8825] = {1: "N", 2: (48.0, 51.0, 0.0), 3: "E", 4: (2.0, 21.0, 0.0)}
    >>> Image.new("RGB", (8, 8)).save(p, exif=exif)
    >>> read_gps(p)
    (48.85, 2.35)
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} does not exist.")
    try:
        with Image.open(path) as im:
            return parse_gps(im.getexif().get_ifd(_GPS_IFD))
    except (UnidentifiedImageError, OSError, SyntaxError) as pil_err:
        return _read_gps_exifread(path, pil_err)


def _read_gps_exifread(path: Path, pil_err: Exception) -> tuple[float, float] | None:
    try:
        import exifread
    except ImportError:  # optional: only needed for formats Pillow cannot open
        raise ValueError(f"cannot read {path}: {pil_err} (pip install exifread for more formats)"
                         ) from None
    try:
        with path.open("rb") as fh:
            tags = exifread.process_file(fh, details=False)
    except Exception as err:  # exifread raises assorted errors on non-images
        raise ValueError(f"cannot read {path}: {pil_err}; exifread: {err}") from None
    if not tags:
        raise ValueError(f"cannot read {path}: {pil_err}")
    return parse_gps(tags)

