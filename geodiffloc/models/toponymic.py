r"""Named places first: a text geolocator that reads place names and asks a model the rest.

A description usually names its place ("vineyards near Bordeaux", "Москва"), and the
offline gazetteers know 155k places by name in many languages
(:mod:`geodiffloc.data.toponyms`); a model trained on captions knows what the words
*around* the name suggest and what a text without a name means ("a fjord with steep
green cliffs"). :class:`ToponymGeolocator` combines the two as a posterior over
gazetteer places:

.. math::

   P(c \mid t) \;\propto\; \underbrace{\sum_{m}\, w_m \sum_{e \ni c,\; e \in m}
   \pi_e\, \kappa_e\, s_{c \mid e}}_{\text{names in } t}
   \;\times\; \underbrace{\big((1-\varepsilon)\, 4\pi\, p_\theta(c \mid t)
   + \varepsilon\big)^{\beta}}_{\text{the model}}

over candidate places :math:`c`: for every name :math:`m` found in the text, every
entity :math:`e` bearing it (a town, an admin area, a country), with prior
:math:`\pi_e = \mathrm{pop}_e^{\alpha}`, a consistency factor :math:`\kappa_e`
(:attr:`ToponymWeights.consistency` for each *other* name in the text that is one of
its ancestors: "Paris, Texas"; the ancestor's own reading is then dropped, its
information being in :math:`\kappa`), and, for an area, the share
:math:`s_{c|e} \propto \mathrm{pop}_c^{\alpha}` of each of its places (1 for a town).
:math:`w_m` is 1 for a capitalised name and :attr:`ToponymWeights.lowercase` for a
lower-case one in a text that capitalises others ("rice terraces in Bali": *rice* is a
county in Minnesota, but not here). :math:`p_\theta` is the model's density (a LocDiff
mixture of its ``K`` sampled SHDD densities, per steradian), floored by
:math:`\varepsilon` so that it arbitrates between readings without vetoing a name, and
tempered by :math:`\beta` (:attr:`ToponymWeights.model_power`).

"The text names no place we know" competes as one more hypothesis, with prior
:attr:`ToponymWeights.background` (that of a town of 1000 people): the model's density
integrates to 1 (tempered, to at most 1), so this hypothesis weighs its prior alone,
while a name's readings weigh their priors times the model's density where they lie.
A stray match ("Tower" in "the Eiffel Tower": a town in Ireland) where the model sees
nothing loses to it; a text with no name is the model's alone. When it wins, the answer
is the model's own (the mode of its sample mixture).

``confidence`` is the posterior mass of the predicted country (or, when the model's
own answer wins, the model's confidence times the posterior mass of that answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.toponyms import Match, ToponymIndex, _capitalised, _words, toponym_index
from ..shdd.kernels import kernel_mixture

__all__ = ["Resolution", "ToponymGeolocator", "ToponymWeights", "resolve"]

#: Cell size (degrees) of the field the model's density is read from: a little finer
#: than the SHDD kernel at L = 23 (~80 km), and cheap (~0.05 s per query).
DENSITY_RESOLUTION = 1.0

#: Places of the posterior kept in the probability field (the rest of the names' mass
#: is spread over them in proportion).
TOP_PLACES = 64

_SPECIFICITY = {"country": 0, "admin1": 1, "admin2": 2, "place": 3}

# Words for kinds of places and directions: a small town somewhere bears each of them,
# but in a description they are almost always common nouns, often the head of a name
# the gazetteer does not know ("Okavango Delta", "Plitvice Lakes", "North Shore").
_FEATURE_WORDS = frozenset(
    "bay beach bridge canal canyon cape castle central church coast delta desert east "
    "eastern falls forest gate grand great gulf harbor harbour highlands hill hills island "
    "islands lake lakes lower market mine mosque mount mountain mountains new north "
    "northern ocean old palace park peak point port river rock sea shore sound south "
    "southern square station strait street temple tower upper valley wall west western "
    "big little".split()
)

# Function words that are also place names somewhere ("On" in Belgium): never a name
# when written in lower case.
_FUNCTION_WORDS = frozenset(
    "a an and at by de del des di du for from in into la le les near of on or over the to "
    "under with".split()
)


@dataclass(frozen=True)
class ToponymWeights:
    """The constants of :func:`resolve` (see the module docstring for the formula).

    Attributes
    ----------
    alpha
        Population exponent of entity priors and of place shares within an area.
    consistency
        Factor per other name in the text that is an ancestor (country, admin-1).
    lowercase
        Weight of a lower-case name in a text that capitalises other words.
    background
        Prior weight of "the text names no place the gazetteers know": the model's
        own answer (by default that of a town of 1000 people; the model's density
        integrates to 1, so this hypothesis is not scaled by it).
    epsilon
        Floor of the model's density, as a fraction of the uniform density.
    notable
        In a text written all in lower case, a lower-case name counts fully only if it
        names a country, an admin-1 area or a place of at least this many people.
    admin2
        Prior factor of admin-2 areas (counties are named less often than their
        population suggests: "Bergen" is the Norwegian city before the county in New
        Jersey).
    alias
        Prior factor of a city's or a region's other-language names (they are noisier
        than primary names, and collide with other places: "Islamabad" is also an old
        name of Chattogram). A country's other names ("Deutschland") are exempt.
    alias_dominance
        A name that is some place's own name hides the cities, regions and countries
        that bear it as a foreign name ("Dili" is Timor-Leste's capital, not a name of
        Delhi; "Male" the Maldives' capital, not a name of Malta), unless such an
        entity has at least this many times the population of the largest place of
        that own name ("Londres" is London, not the Argentine village of 2600 people).
    model_power
        Exponent :math:`\beta` of the model's floored density (the model term is
        raised to it): below 1 the model arbitrates between readings less sharply, as
        suits a model that is often confidently wrong about bare names ("Hobart" is the
        Tasmanian city of 250k, not one in Indiana, whatever the model thinks).
    specific
        The answer is the most specific reading (town > admin-2 > admin-1 > country)
        within the chosen country whose posterior is at least this fraction of the
        country's.
    """

    alpha: float = 1.0
    consistency: float = 1000.0
    lowercase: float = 0.001
    background: float = 1000.0
    epsilon: float = 0.2
    notable: float = 100_000.0
    specific: float = 0.05
    admin2: float = 0.3
    alias: float = 0.1
    alias_dominance: float = 100.0
    model_power: float = 0.3

    def __post_init__(self) -> None:
        for name in ("alpha", "consistency", "lowercase", "background", "notable",
                     "specific", "admin2", "alias", "alias_dominance",
                     "model_power"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"ToponymWeights.{name} must be finite and >= 0; "
                                 f"got {getattr(self, name)}.")
        if not 0.0 < self.epsilon <= 1.0:
            raise ValueError(f"ToponymWeights.epsilon must be in (0, 1]; got {self.epsilon}.")


@dataclass
class Resolution:
    """The readings of one text's place names: entities, their priors and their places.

    Attributes
    ----------
    entities
        ``(r,)`` entity indices (one per reading; an entity named twice appears twice).
    prior
        ``(r,)`` :math:`w_m \\pi_e \\kappa_e` of each reading.
    match
        ``(r,)`` which of ``matches`` each reading reads.
    ptr, places, share
        Reading ``i`` covers gazetteer rows ``places[ptr[i]:ptr[i + 1]]`` with shares
        ``share[ptr[i]:ptr[i + 1]]`` (summing to 1).
    matches
        The names found (function words written in lower case dropped).
    """

    entities: np.ndarray
    prior: np.ndarray
    ptr: np.ndarray
    places: np.ndarray
    share: np.ndarray
    match: np.ndarray
    matches: list[Match] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.entities)


def _ancestors_named(index: ToponymIndex, matches: list[Match]) -> list[tuple[set, set]]:
    """Per match: (country codes, (code, admin1) pairs) named by the *other* matches."""
    col = index.column
    per = []
    for m in matches:
        kinds = col["kind"][m.entities]
        codes = col["country_code"][m.entities]
        names = col["name"][m.entities]
        per.append(({c for k, c in zip(kinds, codes) if k == "country"},
                    {(c, n) for k, c, n in zip(kinds, codes, names) if k == "admin1"}))
    out = []
    for i in range(len(matches)):
        countries: set = set()
        admins: set = set()
        for j, (c, a) in enumerate(per):
            if j != i:
                countries |= c
                admins |= a
        out.append((countries, admins))
    return out


def _is_feature_word(m: Match) -> bool:
    return m.stop - m.start == 1 and m.text.casefold() in _FEATURE_WORDS


def _notable(index: ToponymIndex, entities: np.ndarray, min_population: float) -> bool:
    kinds = index.column["kind"][entities]
    pops = index.column["population"][entities]
    return bool(((kinds == "country") | (kinds == "admin1") | (pops >= min_population)).any())


def resolve(text: str, index: ToponymIndex | None = None,
            weights: ToponymWeights | None = None) -> Resolution:
    """The names term of the posterior: every reading of every place name in ``text``.

    Parameters
    ----------
    text
        One description.
    index
        Toponym index (default :func:`~geodiffloc.data.toponyms.toponym_index`).
    weights
        The constants (default :class:`ToponymWeights`).

    Returns
    -------
    Resolution
        Empty when the text names no known place.

    Examples
    --------
    >>> r = resolve("Paris, Texas")
    >>> best = r.entities[r.prior.argmax()]
    >>> toponym_index().entities.loc[best, ["kind", "admin1"]].tolist()
    ['place', 'Texas']
    """
    index = toponym_index() if index is None else index
    w = ToponymWeights() if weights is None else weights
    words = _words(text)
    # lower-case function words are no names; nor is a feature word that heads a longer
    # name the gazetteers lack ("Okavango Delta" is not Nigeria's Delta State)
    matches = [m for m in index.find(text)
               if (m.capitalised or m.text.casefold() not in _FUNCTION_WORDS)
               and not (_is_feature_word(m) and m.start > 0
                        and _capitalised(words[m.start - 1]))]
    has_caps = any(ch.isupper() for ch in text)
    col = index.column
    kind, code, admin1, epop = col["kind"], col["country_code"], col["admin1"], col["population"]
    ppop = index.place_column["population"].astype(np.float64)
    ids, priors, members, shares, match_of = [], [], [], [], []
    used_countries: set = set()      # ancestors that qualify another name
    used_admins: set = set()
    for i, (m, (countries, admins)) in enumerate(zip(matches,
                                                     _ancestors_named(index, matches))):
        is_alias = col["alias"][m.entities].astype(bool)
        primary = m.entities[~is_alias]
        # a name that is some place's own name means that place, not another city's
        # foreign rendering ("Dili" is Timor-Leste's capital, not a name of Delhi),
        # unless that city dwarfs it ("Londres": London, not a village in Argentina)
        entities = m.entities
        if len(primary):
            largest = max(float(epop[primary].max()), 1.0)
            foreign = m.entities[is_alias]
            entities = np.concatenate(
                [primary, foreign[epop[foreign] >= w.alias_dominance * largest]])
        # a lower-case name counts fully only in a text written all in lower case, and
        # then only if it is a country, a state or a town of 100k ("kyoto", not "temple")
        full = (m.capitalised or (not has_caps and len(primary)
                                  and _notable(index, primary, w.notable)))
        generic = _is_feature_word(m)
        w_m = 1.0 if full and not generic else w.lowercase
        for e in entities:
            kappa = 1.0
            if kind[e] != "country" and code[e] in countries:
                kappa *= w.consistency
                used_countries.add(code[e])
            if kind[e] in ("admin2", "place") and (code[e], admin1[e]) in admins:
                kappa *= w.consistency
                used_admins.add((code[e], admin1[e]))
            # a country's foreign name ("Deutschland") is no noisier than its own
            noisy = bool(col["alias"][e]) and kind[e] != "country"
            factor = (w.alias if noisy else 1.0) * (w.admin2 if kind[e] == "admin2" else 1.0)
            rows = index.members(int(e))
            share = np.maximum(ppop[rows], 1.0) ** w.alpha
            ids.append(int(e))
            priors.append(w_m * factor * max(float(epop[e]), 1.0) ** w.alpha * kappa)
            members.append(rows)
            shares.append(share / share.sum())
            match_of.append(i)
    # a name that qualifies another ("France" in "Bordeaux, France") has said what it
    # had to say through kappa; it does not also stand for the whole country
    keep = [not ((kind[e] == "country" and code[e] in used_countries)
                 or (kind[e] == "admin1" and (code[e], admin1[e]) in used_admins))
            for e in ids]
    ids, priors, members, shares, match_of = (
        [x for x, k in zip(xs, keep) if k] for xs in (ids, priors, members, shares, match_of))
    ptr = np.zeros(len(ids) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(r) for r in members])
    return Resolution(np.asarray(ids, dtype=np.int64), np.asarray(priors, dtype=np.float64),
                      ptr, _concat(members, np.int64), _concat(shares, np.float64),
                      np.asarray(match_of, dtype=np.int64), matches)


def _concat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)


class ToponymGeolocator:
    """Place names from the gazetteers, weighed by a LocDiff text model (see module docs).

    Parameters
    ----------
    model
        A LocDiff trained on text embeddings (e.g. the built-in default model).
    encoder
        The text encoder the model was trained with.
    index
        Toponym index (default: the shipped gazetteers').
    weights
        The constants of the posterior.

    Examples
    --------
    >>> from geodiffloc.pipeline import default_model  # doctest: +SKIP
    >>> geo = ToponymGeolocator(*default_model())  # doctest: +SKIP
    >>> geo.predict(["vineyards near Bordeaux"])[["lat", "lon", "country_code"]]  # doctest: +SKIP
    """

    def __init__(self, model: Any, encoder: Any, *, index: ToponymIndex | None = None,
                 weights: ToponymWeights | None = None) -> None:
        self.model, self.encoder = model, encoder
        self.index = toponym_index() if index is None else index
        self.weights = ToponymWeights() if weights is None else weights

    @staticmethod
    def density_from_field(field: Any, latlon: np.ndarray) -> np.ndarray:
        """``4 pi p(x)`` (uniform = 1) at ``(m, 2)`` points from a ``(lat, lon)`` mass field.

        The mass of the cell holding each point over the cell's share of the sphere:
        the model's mixture density averaged over the cell. (The exact density needs
        each sample's normaliser, ~0.2 s per SHDD vector at L = 23; the field that
        ``locate`` draws anyway gives it for free.)
        """
        import xarray as xr

        lat = np.asarray(field["lat"].values, dtype=np.float64)
        lon = np.asarray(field["lon"].values, dtype=np.float64)
        dlat, dlon = abs(lat[1] - lat[0]), abs(lon[1] - lon[0])
        pts = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
        cells = field.sel(lat=xr.DataArray(pts[:, 0], dims="p"),
                          lon=xr.DataArray(pts[:, 1], dims="p"), method="nearest")
        clat = np.radians(np.asarray(cells["lat"].values, dtype=np.float64))
        half = np.radians(dlat) / 2
        share = np.radians(dlon) * (np.sin(np.minimum(clat + half, np.pi / 2))
                                    - np.sin(np.maximum(clat - half, -np.pi / 2))) / (4 * np.pi)
        return np.asarray(cells.values, dtype=np.float64) / share

    def model_field(self, coeffs: torch.Tensor, resolution: float = 1.0) -> Any:
        """The ``(lat, lon)`` mass field of one query's ``(K, d)`` samples (their mixture)."""
        fld = self.model.shdd.field(torch.as_tensor(coeffs), resolution=resolution,
                                    kind="mass")
        return fld.mean("sample") if "sample" in fld.dims else fld

    def combine(self, text: str, field: Any, model_point: np.ndarray,
                model_confidence: float) -> dict[str, Any]:
        """The answer for one text from its readings and the model's ``(lat, lon)`` field.

        The country with the largest posterior (or the model's own answer, if that is
        larger) is chosen; within it, the most specific reading that carries at least
        :attr:`ToponymWeights.specific` of the country's posterior; within that, its
        place of highest posterior.
        """
        w = self.weights
        res = resolve(text, self.index, w)
        pc = self.index.place_column
        pts = np.stack([pc["lat"][res.places], pc["lon"][res.places]], -1)
        dens = ((1 - w.epsilon) * self.density_from_field(field, pts) + w.epsilon) ** w.model_power
        names = ", ".join(m.text for m in res.matches)
        # the model alone: x ~ its (floored) density, which integrates to 1 in these
        # units, so the hypothesis weighs its prior and nothing else
        background = w.background
        local = res.share * dens                            # per (reading, place)
        reading = res.prior * np.add.reduceat(local, res.ptr[:-1]) if len(res) else local[:0]
        codes = self.index.column["country_code"][res.entities]
        total = reading.sum() + background
        # the posterior over places (for the field): the heaviest TOP_PLACES of them
        per_place = np.repeat(res.prior, np.diff(res.ptr)) * local / total
        uniq, inv = np.unique(res.places, return_inverse=True)
        mass_at = np.bincount(inv, weights=per_place, minlength=len(uniq))
        top = np.argsort(mass_at)[::-1][:TOP_PLACES]
        field_parts = {"latlon": np.stack([pc["lat"][uniq[top]], pc["lon"][uniq[top]]], -1),
                       "weights": mass_at[top], "model_weight": float(background / total)}
        # homonyms of one name do not add up (ten small San Franciscos are not one
        # large one); different names in one country do ("Paris, Texas")
        country_mass = {c: sum(reading[(codes == c) & (res.match == m)].max(initial=0.0)
                               for m in set(res.match.tolist())) for c in set(codes)}
        best_country = max(country_mass, key=country_mass.__getitem__, default=None)
        if best_country is None or country_mass[best_country] <= background:
            return {"lat": float(model_point[0]), "lon": float(model_point[1]),
                    "confidence": float(model_confidence * background / total),
                    "country_code": "", "place": "", "source": "model", "names": names,
                    "field": field_parts}
        mass = country_mass[best_country]
        kinds = self.index.column["kind"][res.entities]
        specificity = np.array([_SPECIFICITY[k] for k in kinds])
        ok = (codes == best_country) & (reading >= w.specific * mass)
        r = int(np.lexsort((reading, specificity, ok))[-1])
        lo, hi = res.ptr[r], res.ptr[r + 1]
        best = int(res.places[lo + int(local[lo:hi].argmax())])
        return {"lat": float(pc["lat"][best]), "lon": float(pc["lon"][best]),
                "confidence": float(mass / total), "country_code": str(best_country),
                "place": str(pc["name"][best]), "source": "names", "names": names,
                "field": field_parts}

    def refine(self, texts: list[str], coeffs: torch.Tensor, preds: Any,
               field: Any = None) -> tuple[Any, Any]:
        """Re-read a LocDiff's sample-once outputs with the texts' place names.

        Parameters
        ----------
        texts
            The ``n`` descriptions.
        coeffs
            ``(n, K, d)`` sampled coefficients (:meth:`LocDiff.sample_locations`).
        preds
            The model's predictions from those samples (``lat``, ``lon``,
            ``confidence``), one row per text.
        field
            Optional ``("query", "lat", "lon")`` mass field from the same samples, to
            turn into the posterior field. (The model's density at the candidates is
            read from a :data:`DENSITY_RESOLUTION` field of the samples, so answers do
            not depend on the raster's resolution.)

        Returns
        -------
        (predictions, field)
            ``preds`` with ``lat``, ``lon``, ``confidence`` and ``geometry`` replaced and
            ``place``, ``names``, ``source`` added; the field as the posterior: the
            model's field times the model's share, plus each of the heaviest
            :data:`TOP_PLACES` places' share spread as the SHDD kernel of the model's
            band-limit (``None`` if no field was given).
        """
        import geopandas as gpd

        if len(texts) != len(preds) or coeffs.shape[0] != len(texts):
            raise ValueError(f"{len(texts)} texts, {len(preds)} predictions and "
                             f"{coeffs.shape[0]} coefficient sets must agree.")
        base = preds[["lat", "lon"]].to_numpy(np.float64)
        conf = preds["confidence"].to_numpy(np.float64)
        # the density is read from a 1-degree field of the samples, whatever the output
        # raster's resolution, so the answer does not depend on the raster asked for
        answers = [self.combine(t, self.model_field(coeffs[i], DENSITY_RESOLUTION), base[i],
                                float(conf[i]))
                   for i, t in enumerate(texts)]
        out = preds.copy()
        for col in ("lat", "lon", "confidence"):
            out[col] = [a[col] for a in answers]
        for col in ("place", "names", "source"):
            out[col] = [a[col] for a in answers]
        out = gpd.GeoDataFrame(out.drop(columns="geometry", errors="ignore"),
                               geometry=gpd.points_from_xy(out["lon"], out["lat"]),
                               crs="EPSG:4326")
        if field is not None:
            field = self._posterior_field(field, answers)
        return out, field

    def _posterior_field(self, field: Any, answers: list[dict[str, Any]]) -> Any:
        values = np.asarray(field.values, dtype=np.float64).copy()
        res = float(field.attrs.get("resolution", abs(float(field.lat[1] - field.lat[0]))))
        for q, a in enumerate(answers):
            parts = a["field"]
            if not len(parts["weights"]):
                continue
            names_mass = 1.0 - parts["model_weight"]
            w = parts["weights"] / parts["weights"].sum() * names_mass
            # the places' SHDD kernels, each one zonal profile read near its centre
            kern = kernel_mixture(self.model.shdd, torch.as_tensor(parts["latlon"]),
                                  torch.as_tensor(w), res).numpy()
            values[q] = parts["model_weight"] * values[q] + kern
            values[q] /= values[q].sum()
        out = field.copy(data=values.astype(field.dtype))
        out.attrs["names"] = "gazetteer place names (geodiffloc.models.toponymic)"
        return out

    def predict(self, texts: list[str], *, n_samples: int = 16, sampler: str = "dpm++",
                steps: int | None = 20, seed: int | None = 0) -> Any:
        """One row per text: ``lat, lon, confidence, country_code, place, source, names``.

        Returns
        -------
        geopandas.GeoDataFrame
            Points in EPSG:4326; ``source`` says whether the names or the model decided.
        """
        texts = list(texts)
        cond = self.model.embed_views(texts, n_views=1, encoder=self.encoder)[:, 0]
        coeffs, samples = self.model.sample_locations(
            cond, n_views=int(n_samples), sampler=sampler, steps=steps, seed=seed)
        base = self.model.predictions_from_samples(coeffs, samples)
        return self.refine(texts, coeffs, base)[0]
