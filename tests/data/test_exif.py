"""EXIF GPS parsing against coordinates the tests write themselves."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from geodiffloc.data.exif import GPSError, dms_to_degrees, parse_gps, read_gps

GPS_IFD = 0x8825


def write_jpeg(path, gps: dict | None, fmt: str = "JPEG") -> None:
    img = Image.new("RGB", (24, 16), (120, 30, 200))
    if gps is None:
        img.save(path, format=fmt)
        return
    exif = Image.Exif()
    exif[GPS_IFD] = gps
    img.save(path, format=fmt, exif=exif)


def rational_dms(deg: int, minutes: int, sec_num: int, sec_den: int):
    return (IFDRational(deg, 1), IFDRational(minutes, 1), IFDRational(sec_num, sec_den))


def test_rational_south_west(tmp_path) -> None:
    p = tmp_path / "sydney.jpg"
    write_jpeg(p, {1: "S", 2: rational_dms(33, 51, 5412, 100),
                   3: "W", 4: rational_dms(151, 12, 3, 10)})
    lat, lon = read_gps(p)
    assert lat == pytest.approx(-(33 + 51 / 60 + 54.12 / 3600), abs=1e-9)
    assert lon == pytest.approx(-(151 + 12 / 60 + 0.3 / 3600), abs=1e-9)


def test_rational_north_east_png(tmp_path) -> None:
    p = tmp_path / "paris.png"
    write_jpeg(p, {1: "N", 2: rational_dms(48, 51, 2964, 100),
                   3: "E", 4: rational_dms(2, 21, 732, 100)}, fmt="PNG")
    lat, lon = read_gps(p)
    assert lat == pytest.approx(48 + 51 / 60 + 29.64 / 3600, abs=1e-9)
    assert lon == pytest.approx(2 + 21 / 60 + 7.32 / 3600, abs=1e-9)


def test_no_gps_missing_and_corrupt(tmp_path) -> None:
    plain = tmp_path / "plain.jpg"
    write_jpeg(plain, None)
    assert read_gps(plain) is None
    with pytest.raises(FileNotFoundError):
        read_gps(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ValueError):
        read_gps(bad)


@pytest.mark.parametrize(
    "value",
    [
        "33/1, 51/1, 5412/100",
        "33 51 54.12",
        "33,51,54.12",
        "33°51'54.12\"",
        b"33/1 51/1 5412/100\x00",
        ((33, 1), (51, 1), (5412, 100)),  # legacy Pillow pairs
        (Fraction(33), Fraction(51), Fraction(1353, 25)),  # exifread-like ratios
        (33.0, 51.0, 54.12),
    ],
)
def test_string_and_legacy_encodings(value) -> None:
    expected = -(33 + 51 / 60 + 54.12 / 3600)
    assert dms_to_degrees(value, "S") == pytest.approx(expected, abs=1e-9)
    assert dms_to_degrees(value, b"s\x00") == pytest.approx(expected, abs=1e-9)


def test_sixty_seconds_from_rounding_writers_is_tolerated() -> None:
    assert dms_to_degrees((1, 53, 60), "N") == pytest.approx(1 + 54 / 60)
    with pytest.raises(GPSError):
        dms_to_degrees((1, 53, 60.5), "N")


def test_decimal_and_embedded_ref() -> None:
    assert dms_to_degrees("-33.865", None) == pytest.approx(-33.865)
    assert dms_to_degrees("33.865", "S") == pytest.approx(-33.865)
    assert dms_to_degrees("151 12 0.3 W") == pytest.approx(-(151 + 12 / 60 + 0.3 / 3600))
    assert dms_to_degrees(12.5) == 12.5


def test_parse_gps_key_styles() -> None:
    by_id = {1: "N", 2: (10.0, 30.0, 0.0), 3: "W", 4: (20.0, 15.0, 0.0)}
    by_name = {"GPSLatitudeRef": "N", "GPSLatitude": (10.0, 30.0, 0.0),
               "GPSLongitudeRef": "W", "GPSLongitude": (20.0, 15.0, 0.0)}
    exifread_style = {"GPS " + k: v for k, v in by_name.items()}
    for gps in (by_id, by_name, exifread_style):
        assert parse_gps(gps) == pytest.approx((10.5, -20.25))
    assert parse_gps({1: "N", 2: (10.0, 0.0, 0.0)}) is None  # no longitude
    assert parse_gps({3: "E", 4: (190.0, 0.0, 0.0), 1: "N", 2: (1.0, 0, 0)})[1] == -170.0


@pytest.mark.parametrize(
    ("gps", "match"),
    [
        ({1: "N", 2: ((10, 0), (0, 1), (0, 1)), 3: "E", 4: (1.0, 0, 0)}, "zero denominator"),
        ({1: "N", 2: (10.0, 75.0, 0.0), 3: "E", 4: (1.0, 0, 0)}, "minutes/seconds"),
        ({1: "Q", 2: (10.0, 0.0, 0.0), 3: "E", 4: (1.0, 0, 0)}, "hemisphere"),
        ({1: "N", 2: (95.0, 0.0, 0.0), 3: "E", 4: (1.0, 0, 0)}, "out of range"),
        ({1: "N", 2: "no numbers", 3: "E", 4: (1.0, 0, 0)}, "no numbers"),
        ({1: "N", 2: (1.0, 2.0, 3.0, 4.0), 3: "E", 4: (1.0, 0, 0)}, "1 to 3"),
    ],
)
def test_malformed_gps(gps, match) -> None:
    with pytest.raises(GPSError, match=match):
        parse_gps(gps)


@settings(max_examples=60, deadline=None)
@given(lat=st.floats(-89.999, 89.999), lon=st.floats(-179.999, 179.999))
def test_round_trip_through_rational_dms(lat, lon) -> None:
    def to_dms(x: float) -> tuple:
        units = round(abs(x) * 3600 * 10_000)  # 1e-4 arc-seconds
        d, rest = divmod(units, 3600 * 10_000)
        m, s = divmod(rest, 60 * 10_000)
        return (Fraction(d), Fraction(m), Fraction(s, 10_000))

    gps = {1: "N" if lat >= 0 else "S", 2: to_dms(lat), 3: "E" if lon >= 0 else "W",
           4: to_dms(lon)}
    got = parse_gps(gps)
    # 1e-4 arc-second rounding ~ 3e-8 degrees
    assert got == pytest.approx((lat, lon), abs=1e-7)
