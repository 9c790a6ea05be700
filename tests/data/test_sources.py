"""GeotaggedDataset from MP16-style CSVs, GeoDataFrames and folders of GPS photos."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from PIL.TiffImagePlugin import IFDRational
from shapely.geometry import Point, Polygon

from geodiffloc.data.sources import GeotaggedDataset, SkipReport


def save(path, gps=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if gps is not None:
        exif[0x8825] = gps
    Image.new("RGB", (20, 12), (10, 200, 90)).save(path, exif=exif)


def dms(d, m, s100):
    return (IFDRational(d, 1), IFDRational(m, 1), IFDRational(s100, 100))


@pytest.fixture
def mp16(tmp_path):
    root = tmp_path / "images"
    save(root / "6b" / "fc" / "good.jpg")
    save(root / "6b" / "fc" / "far_east.jpg")
    (root / "6b" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    rows = [
        ("6b/fc/good.jpg", 48.85, 2.35),        # ok
        ("6b/fc/missing.jpg", 10.0, 10.0),      # missing file
        ("6b/broken.jpg", 10.0, 10.0),          # unreadable
        ("6b/fc/good.jpg", np.nan, 5.0),        # missing coordinates
        ("6b/fc/good.jpg", 95.0, 5.0),          # out of range
        ("6b/fc/far_east.jpg", -10.0, 200.0),   # 0..360 longitude -> -160
        ("", 1.0, 1.0),                         # missing path
    ]
    csv = tmp_path / "mp16.csv"
    pd.DataFrame(rows, columns=["IMG_ID", "LAT", "LON"]).assign(AUTHOR="x").to_csv(
        csv, index=False)
    return csv, root


def test_csv_mp16_layout_skips_bad_rows(mp16) -> None:
    csv, root = mp16
    ds = GeotaggedDataset.from_csv(csv, image_root=root)
    assert len(ds) == 2
    assert ds.paths == [str(root / "6b/fc/good.jpg"), str(root / "6b/fc/far_east.jpg")]
    np.testing.assert_allclose(ds.latlon.numpy(), [[48.85, 2.35], [-10.0, -160.0]])
    rep = ds.report.to_frame()
    assert rep.row.tolist() == [1, 2, 3, 4, 6]
    assert rep.reason.tolist() == ["missing file", "unreadable image", "missing coordinates",
                                   "out-of-range coordinates", "missing path"]
    assert ds.report.counts()["missing file"] == 1
    assert "5 skipped" in str(ds.report)
    path, ll = ds[0]
    assert path.endswith("good.jpg") and ll.dtype == torch.float64


def test_csv_check_levels_and_columns(mp16) -> None:
    csv, root = mp16
    exists = GeotaggedDataset.from_csv(csv, image_root=root, check="exists")
    assert len(exists) == 3  # the corrupt file exists
    unchecked = GeotaggedDataset.from_csv(csv, image_root=root, check="none")
    assert len(unchecked) == 4  # only coordinate/path problems remain
    df = pd.read_csv(csv).rename(columns={"IMG_ID": "where", "LAT": "y", "LON": "x"})
    with pytest.raises(ValueError, match="image path"):
        GeotaggedDataset.from_csv(df, image_root=root)
    ds = GeotaggedDataset.from_csv(df, image_root=root, path_col="where", lat_col="y",
                                   lon_col="x", check="decode")
    assert len(ds) == 2
    with pytest.raises(ValueError, match="check"):
        GeotaggedDataset.from_csv(csv, check="maybe")


def test_csv_relative_to_its_folder_and_loader(mp16) -> None:
    csv, _ = mp16
    df = pd.read_csv(csv)
    df["IMG_ID"] = "images/" + df["IMG_ID"].fillna("")
    df.loc[6, "IMG_ID"] = ""
    df.to_csv(csv, index=False)
    from geodiffloc.encoders.efficientnet import load_image

    ds = GeotaggedDataset.from_csv(csv, loader=load_image)  # root = the CSV's folder
    assert len(ds) == 2
    img, _ = ds[1]
    assert isinstance(img, Image.Image) and img.size == (20, 12)


def test_geodataframe_source(tmp_path) -> None:
    save(tmp_path / "a.jpg")
    save(tmp_path / "b.jpg")
    gdf = gpd.GeoDataFrame(
        {"img": ["a.jpg", "b.jpg", "a.jpg", "b.jpg"]},
        geometry=[Point(2.35, 48.85), Point(-70.6, -33.4), Point(),
                  Polygon([(0, 0), (1, 0), (1, 1)])],
        crs="EPSG:4326",
    )
    ds = GeotaggedDataset.from_geodataframe(gdf, "img", image_root=tmp_path)
    np.testing.assert_allclose(ds.latlon.numpy(), [[48.85, 2.35], [-33.4, -70.6]])
    assert ds.report.to_frame().reason.tolist() == ["missing coordinates",
                                                    "geometry is not a point"]
    out = ds.to_geodataframe()
    assert out.crs.to_epsg() == 4326
    np.testing.assert_allclose(out.geometry.x, [2.35, -70.6])
    # any declared CRS is reprojected (the one rule); a missing CRS is refused
    merc = GeotaggedDataset.from_geodataframe(gdf.iloc[:2].to_crs("EPSG:3857"), "img",
                                              image_root=tmp_path)
    np.testing.assert_allclose(merc.latlon.numpy(), [[48.85, 2.35], [-33.4, -70.6]], atol=1e-9)
    with pytest.raises(ValueError, match="no CRS"):
        GeotaggedDataset.from_geodataframe(gdf.set_crs(None, allow_override=True), "img")
    with pytest.raises(ValueError, match="column"):
        GeotaggedDataset.from_geodataframe(gdf, "nope")


def test_geodataframe_other_geographic_crs(tmp_path) -> None:
    save(tmp_path / "a.jpg")
    gdf = gpd.GeoDataFrame({"img": ["a.jpg"]}, geometry=[Point(-100.0, 40.0)], crs="EPSG:4269")
    ds = GeotaggedDataset.from_geodataframe(gdf, "img", image_root=tmp_path)
    expected = gdf.to_crs("EPSG:4326").geometry.iloc[0]
    np.testing.assert_allclose(ds.latlon.numpy(), [[expected.y, expected.x]])


def test_folder_of_exif_photos(tmp_path) -> None:
    save(tmp_path / "trip" / "sydney.jpg", {1: "S", 2: dms(33, 51, 5412), 3: "E",
                                            4: dms(151, 12, 30)})
    save(tmp_path / "trip" / "day2" / "santiago.JPG", {1: "S", 2: dms(33, 26, 0), 3: "W",
                                                       4: dms(70, 39, 0)})
    save(tmp_path / "trip" / "nogps.jpg")
    save(tmp_path / "trip" / "nofix.jpg", {1: "N", 2: dms(0, 0, 0), 3: "E", 4: dms(0, 0, 0)})
    save(tmp_path / "trip" / "badgps.jpg", {1: "N", 2: dms(10, 99, 0), 3: "E", 4: dms(1, 0, 0)})
    (tmp_path / "trip" / "corrupt.jpg").write_bytes(b"\x00\x01 nope")
    (tmp_path / "trip" / "notes.txt").write_text("not an image")

    ds = GeotaggedDataset.from_folder(tmp_path / "trip")
    names = [p.rsplit("/", 1)[-1] for p in ds.paths]
    assert names == ["santiago.JPG", "sydney.jpg"]  # sorted walk: day2/ first
    np.testing.assert_allclose(
        ds.latlon.numpy(),
        [[-(33 + 26 / 60), -(70 + 39 / 60)],
         [-(33 + 51 / 60 + 54.12 / 3600), 151 + 12 / 60 + 0.3 / 3600]],
        atol=1e-9,
    )
    reasons = {p.rsplit("/", 1)[-1]: r for _, p, r in ds.report.rows}
    assert reasons == {"nogps.jpg": "no GPS", "nofix.jpg": "GPS at (0, 0) (camera without a fix)",
                       "badgps.jpg": "malformed GPS", "corrupt.jpg": "unreadable image"}
    flat = GeotaggedDataset.from_folder(tmp_path / "trip", recursive=False,
                                        skip_null_island=False)
    assert sorted(p.rsplit("/", 1)[-1] for p in flat.paths) == ["nofix.jpg", "sydney.jpg"]
    with pytest.raises(ValueError, match="not a folder"):
        GeotaggedDataset.from_folder(tmp_path / "nope")


def test_direct_construction_validates() -> None:
    with pytest.raises(ValueError):
        GeotaggedDataset(["a.jpg"], [[91.0, 0.0]])
    with pytest.raises(ValueError, match="2 paths"):
        GeotaggedDataset(["a.jpg", "b.jpg"], [[1.0, 0.0]])
    assert len(SkipReport()) == 0 and "nothing" in str(SkipReport())
