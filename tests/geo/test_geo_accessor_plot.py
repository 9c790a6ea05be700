"""The da.geoloc accessor and the static/interactive maps (rendered headless)."""

from __future__ import annotations

import io
import json
import re

import geopandas as gpd
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
import shapely

import geodiffloc.geo as geo
from geodiffloc.sphere import LatLonGrid


@pytest.fixture
def paris_field(make_vmf):
    return make_vmf(LatLonGrid.global_(1.0), [(48.86, 2.35), (-17.8, 178.0)], 300.0)


def test_accessor_matches_the_functions(tmp_path, paris_field):
    polys = gpd.GeoDataFrame({"n": ["eu", "pac"]}, geometry=[shapely.box(-10, 35, 30, 60),
                             shapely.box(170, -30, 180, -5)], crs="EPSG:4326")
    z = paris_field.geoloc.zonal(polys)
    pd_ref = geo.zonal_probability(paris_field, polys)
    np.testing.assert_allclose(z[["prob_0", "prob_1"]], pd_ref[["prob_0", "prob_1"]])
    assert z["prob_0"].iloc[0] > 0.99 and z["prob_1"].iloc[1] > 0.4
    r = paris_field.geoloc.credible_regions(levels=(0.5,))
    assert len(r) == 2 and r.geometry.iloc[0].contains(shapely.Point(2.35, 48.86))
    path = paris_field.geoloc.to_geotiff(tmp_path / "f.tif")
    with rasterio.open(path) as ds:
        assert ds.count == 2
    dens = paris_field.geoloc.to_density()
    np.testing.assert_allclose(dens.geoloc.to_mass().values, paris_field.values, rtol=1e-12,
                               atol=1e-300)


def test_top_cells_are_the_most_probable(paris_field):
    top = paris_field.geoloc.top(3)
    assert top.crs.to_epsg() == 4326 and len(top) == 6
    assert top["rank"].tolist() == [1, 2, 3, 1, 2, 3]
    for q in range(2):
        m = paris_field.values[q]
        r, c = np.unravel_index(np.argmax(m), m.shape)
        first = top[(top["query"] == q) & (top["rank"] == 1)].iloc[0]
        assert first["mass"] == m[r, c]
        assert (first["lat"], first["lon"]) == (paris_field.lat[r], paris_field.lon[c])
        assert np.all(np.diff(top[top["query"] == q]["mass"].to_numpy()) <= 0)


def test_accessor_keeps_no_state(paris_field):
    assert geo.GeolocAccessor.__slots__ == ("_da",)
    before = paris_field.geoloc.top(1)["lat"].tolist()
    paris_field.values[:] = paris_field.values[:, ::-1, :]  # flip north/south in place
    after = paris_field.geoloc.top(1)["lat"].tolist()
    assert after == [-x for x in before]


def _render(ax) -> tuple[np.ndarray, object]:
    fig = ax.figure
    fig.canvas.draw()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    buf.seek(0)
    return mpimg.imread(buf)[..., :3], fig


def _pixel(ax, img, lon, lat) -> np.ndarray:
    x, y = ax.transData.transform((lon, lat))
    return img[round(img.shape[0] - y), round(x)]


def test_plot_field_is_bright_where_the_mass_is(paris_field):
    ax = geo.plot_field(paris_field, log=False)
    img, fig = _render(ax)
    assert img.std() > 0.05  # not blank
    paris = _pixel(ax, img, 2.35, 48.86).mean()
    pacific = _pixel(ax, img, -140.0, 0.0).mean()
    assert paris > pacific + 0.3
    assert any("density" in a.get_ylabel() for a in fig.axes)  # the colour bar
    plt.close(fig)


def test_plot_field_log_scale_points_and_second_query(paris_field):
    ax = geo.plot_field(paris_field, index=1, log=True, points=np.array([[0, 0]]),
                                    truth=np.array([[-17.8, 178.0]]), borders="lowres")
    img, fig = _render(ax)
    # log scale: 8 degrees from the peak is still far brighter than the far side (~0)
    assert _pixel(ax, img, 171.0, -17.8).mean() > _pixel(ax, img, 2.35, 48.86).mean() + 0.3
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"prediction", "truth"}
    assert type(ax.images[0].norm).__name__ == "LogNorm"
    plt.close(fig)
    with pytest.raises(ValueError, match="index"):
        geo.plot_field(paris_field, index=5)


def test_interactive_map_html_has_overlay_and_markers(tmp_path, paris_field):
    pytest.importorskip("folium")
    m = paris_field.geoloc.interactive_map(points=np.array([[48.0, 2.0], [40.0, -3.7]]),
                                           truth=np.array([[48.86, 2.35]]))
    path = tmp_path / "map.html"
    m.save(str(path))
    html = path.read_text()
    assert "L.imageOverlay" in html and "data:image/png;base64," in html
    assert html.count("L.circleMarker(") == 3
    assert "[48.0, 2.0]" in html and "[48.86, 2.35]" in html


def test_interactive_map_has_one_layer_control_a_colour_legend_and_regions(paris_field):
    pytest.importorskip("folium")
    regions = geo.credible_regions(paris_field, levels=(0.5, 0.9))
    m = geo.interactive_map(paris_field, points=np.array([[48.0, 2.0]]), regions=regions,
                            points_label="reference place", log=True)
    html = m.get_root().render()
    assert html.count("L.control.layers") == 1
    assert "credible regions" in html and "reference place" in html
    # the colour legend: a branca colour bar captioned with the overlay's unit
    assert "log10 probability density" in html and "[km-2]" in html
    vals = geo.to_density(paris_field).values[0]  # index 0; its peak is far from the poles
    domain = json.loads(re.search(r"\.domain\((\[[^\]]*\])\)", html).group(1))
    # the legend spans the overlay's colour scale: 8 decades below the field's maximum
    assert max(domain) == pytest.approx(np.log10(vals.max()), abs=1e-9)
    assert min(domain) == pytest.approx(np.log10(vals.max()) - 8, abs=1e-9)


def test_plot_points_label(paris_field):
    fig, ax = plt.subplots()
    geo.plot_field(paris_field, points=np.array([[48.0, 2.0]]), ax=ax, borders=None,
                   points_label="reference place")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["reference place"]
    plt.close(fig)
