"""Bring any lon/lat polygon into the [-180, 180] window without drawing it across the globe.

Polygons reprojected from a Pacific-centred CRS, or written with longitudes past 180,
come out with ring edges that jump from about +179 to -179. Read literally those edges
span the whole globe. Here such rings are unwrapped to continuous longitudes, rings
that go all the way round a pole are closed through that pole, and the result is cut
into 360°-wide windows shifted back into [-180, 180].
"""

from __future__ import annotations

from typing import Any

import numpy as np

_EDGE = 180.0 - 1e-9


def _jumps(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Edges that jump by more than 180° and are not harmless seams/pole segments."""
    d = np.abs(np.diff(lon))
    on_seam = (np.abs(lon[:-1]) >= _EDGE) & (np.abs(lon[1:]) >= _EDGE)
    at_pole = (np.abs(lat[:-1]) >= 90.0 - 1e-9) & (np.abs(lat[1:]) >= 90.0 - 1e-9)
    return (d > 180.0) & ~on_seam & ~at_pole


def _any_ring_jumps(geom: Any) -> bool:
    """Whether any ring of ``geom`` has an antimeridian jump (vectorised over all rings)."""
    import shapely

    coords, ring = shapely.get_coordinates(shapely.get_rings(geom), return_index=True)
    same_ring = ring[1:] == ring[:-1]
    return bool((_jumps(coords[:, 0], coords[:, 1]) & same_ring).any())


def _unwrap(lon: np.ndarray) -> np.ndarray:
    step = np.diff(lon)
    step = (step + 180.0) % 360.0 - 180.0
    return np.concatenate([[lon[0]], lon[0] + np.cumsum(step)])


def _fix_ring(coords: np.ndarray) -> tuple[np.ndarray, bool]:
    """Continuous-longitude ring; second value tells whether it winds round a pole."""
    lon, lat = coords[:, 0], coords[:, 1]
    if not _jumps(lon, lat).any():
        return coords, False
    lon_u = _unwrap(lon)
    winds = abs(lon_u[-1] - lon_u[0]) > 180.0
    if winds:
        # close through the pole on the side the ring encloses (its hemisphere)
        pole = 90.0 if np.mean(lat) > 0 else -90.0
        ring = np.column_stack([lon_u, lat])
        ring = np.vstack([ring, [[lon_u[-1], pole], [lon_u[0], pole]], ring[:1]])
        return ring, True
    return np.column_stack([lon_u, lat]), False


def _fix_polygon(poly: Any) -> Any:
    import shapely

    ext = np.asarray(poly.exterior.coords)[:, :2]
    ext_fixed, _ = _fix_ring(ext)
    holes = []
    for ring in poly.interiors:
        h, _ = _fix_ring(np.asarray(ring.coords)[:, :2])
        # keep the hole on the same 360° copy as the exterior
        shift = 360.0 * np.round((h[:, 0].mean() - ext_fixed[:, 0].mean()) / 360.0)
        if abs(h[:, 0].mean() - shift - ext_fixed[:, 0].mean()) > 180.0:
            shift = 0.0
        holes.append(np.column_stack([h[:, 0] - shift, h[:, 1]]))
    return shapely.Polygon(ext_fixed, holes)


def polygon_parts(geom: Any) -> list[Any]:
    """All non-empty Polygons inside any (multi)geometry or collection."""
    import shapely

    out: list[Any] = []
    stack = [geom]
    while stack:
        g = stack.pop()
        if g is None or g.is_empty:
            continue
        if isinstance(g, shapely.Polygon):
            out.append(g)
        elif hasattr(g, "geoms"):
            stack.extend(g.geoms)
    return out


def _as_polygonal(parts: list[Any]) -> Any:
    import shapely

    if not parts:
        return shapely.Polygon()
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def to_lonlat_window(geom: Any) -> Any:
    """Return ``geom`` (polygonal, EPSG:4326) with every longitude in [-180, 180].

    Polygons already inside the window and free of antimeridian jumps are returned
    unchanged (the fast path for Natural Earth data, which is split at 180°).
    """
    import shapely
    import shapely.affinity

    if geom is None or geom.is_empty:
        return shapely.Polygon()
    parts = polygon_parts(geom)
    if not parts:
        return shapely.Polygon()
    if not isinstance(geom, shapely.Polygon | shapely.MultiPolygon):
        geom = _as_polygonal(parts)
    minx, _, maxx, _ = geom.bounds
    needs = minx < -180.0 - 1e-9 or maxx > 180.0 + 1e-9 or _any_ring_jumps(geom)
    if not needs:
        return geom if geom.is_valid else _as_polygonal(polygon_parts(shapely.make_valid(geom)))
    fixed = [shapely.make_valid(_fix_polygon(p)) for p in parts]  # may be collections
    out = []
    for f in fixed:
        fminx, _, fmaxx, _ = f.bounds
        for k in range(int(np.floor((fminx + 180.0) / 360.0)),
                       int(np.floor((fmaxx + 180.0) / 360.0)) + 1):
            win = shapely.box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
            piece = shapely.intersection(f, win)
            if not piece.is_empty:
                out.append(shapely.affinity.translate(piece, xoff=-360.0 * k))
    return _as_polygonal([g for p in out for g in polygon_parts(p)])
