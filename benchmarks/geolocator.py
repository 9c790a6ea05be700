"""Does the built-in geolocator name the right country? Scores any model on a test set.

The test set, ``benchmarks/data/geolocator_descriptions.csv``, holds place descriptions
in the words users type, written by hand independently of the default model's training
captions (``tests/test_geolocator_set.py`` checks every true point against Natural Earth
and GeoNames). Each row: ``text, country_iso3, country_name, lat, lon, kind, note`` with
``kind`` one of ``scene_region`` ("vineyards near Bordeaux"), ``landmark`` ("Machu
Picchu"), ``place_name`` ("Ouagadougou"), ``foreign_name`` ("München", "東京") and
``vague_scene`` ("a fjord with steep green cliffs").

What is scored (overall and per kind):

* country accuracy -- the Natural Earth 10m country (``iso_a3``) of the predicted point
  equals the row's country; a point in no country polygon gets the nearest one within
  ``--coast-km`` (25 km: harbours, small islands), beyond that it is at sea and wrong;
* acc@25/200/750/2500 km and the median error (WGS84 geodesic, :mod:`geodiffloc.metrics`),
  also per Natural Earth continent of the true country;
* a reliability table of the model's ``confidence``: per confidence bin, the count, the
  mean confidence, the share with the right country and the share within 750 km, plus
  the expected calibration error against "right country".

Models: the built-in default (the one ``geodiffloc locate`` uses: trained on first use,
then cached), a LocDiff checkpoint (``--model PATH``, optionally ``--encoder NAME``), or
any callable ``texts -> (lat, lon, confidence)`` (``--predictor module:function`` or
``path/to/file.py:function``; ``confidence`` may be ``None``), so baselines and ensembles
are scored the same way. LocDiff models answer through the public API exactly as
:func:`geodiffloc.pipeline.locate` answers a text query -- same embedding, same
sampling call (``geodiffloc.pipeline.models.predict_and_map``), same defaults (read from
locate's signature), the same reading of place names -- but without the
probability raster and per-country table that locate also computes, which take most of
its time (``--via locate`` calls locate itself; a test checks both give the same points).
The one difference: locate reuses its raster's grid for each sample's ``log Z`` when that
grid is fine enough, which moves ``log Z`` by the quadrature's ~1e-5; on the 491
descriptions of the test set with the default model no answer moved (checked 2026-12-02).

Run: ``python benchmarks/geolocator.py [--model PATH] [--name NAME]``. Writes
``results/<name>.md`` (tables under a header: commit, date, machine, threads, load) and
``results/<name>.csv`` (one row per description), atomically; prints the Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import importlib.util
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# as a script this folder is first on sys.path; keep benchmarks/geoclip.py from shadowing
# the installed geoclip package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

DATA = HERE / "data" / "geolocator_descriptions.csv"
COLUMNS = ("text", "country_iso3", "country_name", "lat", "lon", "kind", "note")
KINDS = ("scene_region", "landmark", "place_name", "foreign_name", "vague_scene")
THRESHOLDS_KM = (25, 200, 750, 2500)
CONFIDENCE_BINS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COAST_KM = 25.0

#: ``texts -> (lat, lon, confidence or None)``, arrays of one value per text.
Predictor = Callable[[Sequence[str]], tuple[Any, Any, Any]]


# -- the test set ---------------------------------------------------------------------
def load_descriptions(path: str | os.PathLike = DATA) -> pd.DataFrame:
    """The test set as a DataFrame (``lat``/``lon`` float, empty notes as ``""``).

    Raises
    ------
    ValueError
        Missing columns, an unknown ``kind`` or non-numeric coordinates.
    """
    df = pd.read_csv(path, keep_default_na=False, dtype=str, encoding="utf-8")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}; expected {list(COLUMNS)}.")
    unknown = sorted(set(df["kind"]) - set(KINDS))
    if unknown:
        raise ValueError(f"{path}: unknown kind(s) {unknown}; use one of {list(KINDS)}.")
    try:
        df["lat"], df["lon"] = df["lat"].astype(float), df["lon"].astype(float)
    except ValueError as err:
        raise ValueError(f"{path}: a lat/lon value is not a number ({err}).") from None
    return df


# -- scoring --------------------------------------------------------------------------
def predicted_countries(lat: Any, lon: Any, *, coast_km: float = COAST_KM) -> np.ndarray:
    """Natural Earth 10m ``iso_a3`` of each point; ``""`` at sea (beyond ``coast_km``).

    Examples
    --------
    >>> predicted_countries([48.86, 0.0], [2.35, -30.0]).tolist()
    ['FRA', '']
    """
    from geodiffloc.geo import country_of

    iso = country_of(lat, lon, scale="10m", column="iso_a3", max_km=float(coast_km))
    return np.array(["" if c is None else str(c) for c in iso], dtype=object)


def country_hits(pred_iso: Any, true_iso: Any) -> np.ndarray:
    """Whether each predicted country is the true one (at sea, ``""``, never is)."""
    p, t = np.asarray(pred_iso, dtype=object), np.asarray(true_iso, dtype=object)
    if p.shape != t.shape:
        raise ValueError(f"{p.size} predicted countries for {t.size} true ones.")
    return (p == t) & (p != "")


def _check_confidence(confidence: Any, n: int) -> np.ndarray:
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if c.size != n:
        raise ValueError(f"{c.size} confidences for {n} predictions.")
    if not np.all(np.isfinite(c)) or c.min() < 0.0 or c.max() > 1.0:
        raise ValueError("confidence values must lie in [0, 1]; rescale the model's score.")
    return c


def reliability_table(confidence: Any, right_country: Any, within_750: Any,
                      bins: Sequence[float] = CONFIDENCE_BINS) -> pd.DataFrame:
    """Confidence bins: count, mean confidence, share with the right country / within 750 km.

    Bins are half-open ``[lo, hi)`` except the last, which includes 1.0. Empty bins are
    kept (count 0, NaN shares) so tables of different models line up.

    Examples
    --------
    >>> t = reliability_table([0.1, 0.9, 0.95], [False, True, False], [True, True, False],
    ...                       bins=(0, 0.5, 1))
    >>> t[["bin", "n", "right_country"]].values.tolist()
    [['0.0-0.5', 1, 0.0], ['0.5-1.0', 2, 0.5]]
    """
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bins must be increasing edges (at least two); got {bins}.")
    right = np.asarray(right_country, dtype=bool)
    near = np.asarray(within_750, dtype=bool)
    c = _check_confidence(confidence, right.size)
    idx = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, edges.size - 2)
    rows = []
    for b in range(edges.size - 1):
        m = idx == b
        n = int(m.sum())
        rows.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "n": n,
                     "mean_confidence": float(c[m].mean()) if n else np.nan,
                     "right_country": float(right[m].mean()) if n else np.nan,
                     "within_750km": float(near[m].mean()) if n else np.nan})
    return pd.DataFrame(rows)


def expected_calibration_error(table: pd.DataFrame) -> float:
    """Count-weighted mean gap between mean confidence and right-country share."""
    t = table[table["n"] > 0]
    gap = (t["mean_confidence"] - t["right_country"]).abs()
    return float((gap * t["n"]).sum() / t["n"].sum())


def _summary(errors: np.ndarray, right: np.ndarray) -> dict[str, Any]:
    from geodiffloc.metrics import accuracy_at

    out: dict[str, Any] = {"n": int(errors.size), "country_%": 100.0 * float(right.mean())}
    for t, frac in accuracy_at(errors, THRESHOLDS_KM).items():
        out[f"acc@{t:g}km_%"] = 100.0 * frac
    out["median_km"] = float(np.median(errors))
    return out


def _continents() -> dict[str, str]:
    """Natural Earth continent of each ``iso_a3`` (of its most populous polygon)."""
    from geodiffloc.geo import countries

    world = countries("10m").sort_values("pop_est", ascending=False)
    world = world.drop_duplicates("iso_a3")
    return dict(zip(world["iso_a3"], world["continent"]))


def score(descriptions: pd.DataFrame, lat: Any, lon: Any, confidence: Any = None, *,
          coast_km: float = COAST_KM) -> dict[str, Any]:
    """Score predictions against the test set.

    Returns
    -------
    dict
        ``overall`` (one-row DataFrame), ``per_kind`` and ``per_continent`` (one row
        per kind / Natural Earth continent of the true country),
        ``reliability`` (DataFrame, or ``None`` without confidences), ``ece`` (float or
        ``None``) and ``rows`` (the set with predicted point, country, error, hit).
    """
    from geodiffloc.metrics import errors_km

    lat = np.asarray(lat, dtype=np.float64).reshape(-1)
    lon = np.asarray(lon, dtype=np.float64).reshape(-1)
    if lat.size != len(descriptions) or lon.size != len(descriptions):
        raise ValueError(f"{lat.size} predictions for {len(descriptions)} descriptions.")
    rows = descriptions.copy()
    rows["pred_lat"], rows["pred_lon"] = lat, lon
    rows["pred_iso3"] = predicted_countries(lat, lon, coast_km=coast_km)
    rows["right_country"] = country_hits(rows["pred_iso3"], rows["country_iso3"])
    rows["error_km"] = errors_km(lat, lon, rows["lat"].to_numpy(), rows["lon"].to_numpy())
    overall = pd.DataFrame([_summary(rows["error_km"].to_numpy(),
                                     rows["right_country"].to_numpy())])
    rows["continent"] = rows["country_iso3"].map(_continents()).fillna("")
    per = {col: pd.DataFrame([
        {col: k, **_summary(g["error_km"].to_numpy(), g["right_country"].to_numpy())}
        for k, g in rows.groupby(col, sort=col == "continent")])
        for col in ("kind", "continent")}
    result: dict[str, Any] = {"overall": overall, "per_kind": per["kind"],
                              "per_continent": per["continent"], "rows": rows,
                              "reliability": None, "ece": None}
    if confidence is not None:
        rows["confidence"] = _check_confidence(confidence, len(rows))
        table = reliability_table(rows["confidence"], rows["right_country"],
                                  rows["error_km"] <= 750.0)
        result["reliability"], result["ece"] = table, expected_calibration_error(table)
    return result


# -- models ---------------------------------------------------------------------------
#: What :func:`locdiff_predictor` takes from :func:`geodiffloc.pipeline.locate`'s defaults.
SAMPLING_OPTIONS = ("n_samples", "sampler", "steps", "seed")


def locate_defaults() -> dict[str, Any]:
    """``n_samples``, ``sampler``, ``steps`` and ``seed`` as :func:`locate` defaults them.

    Read from its signature, so the benchmark follows when those defaults change.
    """
    import inspect

    from geodiffloc.pipeline import locate

    params = inspect.signature(locate).parameters
    return {k: params[k].default for k in SAMPLING_OPTIONS}


def _resolve(model: Any, encoder: Any, progress: bool) -> tuple[Any, Any]:
    """The LocDiff and its text encoder, each loaded once (not once per batch)."""
    if model is None:
        from geodiffloc.pipeline import default_model

        model, default_encoder = default_model(progress=progress)
        return model, encoder or default_encoder
    if isinstance(model, str | os.PathLike):
        from geodiffloc import LocDiff

        model = LocDiff.load(model)
    if encoder is None:
        name = model.encoder_record["name"]
        if name == "precomputed":
            raise ValueError("this checkpoint does not record its encoder; pass encoder= "
                             "(CLI: --encoder NAME).")
        from geodiffloc.encoders import encoder_from_name

        encoder = encoder_from_name(name)
    return model, encoder


def locdiff_predictor(model: Any = None, encoder: Any = None, *,
                      via: str = "predict", batch_size: int = 64, progress: bool = True,
                      names: bool = True, **options: Any) -> Predictor:
    """A predictor for the built-in geolocator or any LocDiff on text.

    Parameters
    ----------
    model
        ``None`` (the built-in default: trained on first use, then cached), a LocDiff
        or a checkpoint path.
    encoder
        Text encoder (default: the default model's, or the one the checkpoint records).
    via
        ``"predict"``: embed and sample (and read names) exactly as :func:`locate` does for
        text (the point, confidence and options are the same), without the probability
        field and per-country table that locate also computes (most of its time);
        ``"locate"``: call :func:`geodiffloc.pipeline.locate` itself.
    batch_size
        Descriptions per call. The diffusion noise is drawn per call from ``seed``, so
        answers depend on it as on any seeded run; keep it fixed between models.
    progress
        Log each batch to stderr.
    names
        Read the place names in the texts too, as ``locate`` does by default
        (:mod:`geodiffloc.models.toponymic`); ``False``: the model alone.
    **options
        ``n_samples``, ``sampler``, ``steps``, ``seed`` (default: locate's defaults);
        with ``via="locate"`` any other locate option too (``resolution``, ...).
    """
    if via not in ("predict", "locate"):
        raise ValueError(f"via must be 'predict' or 'locate'; got {via!r}.")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    extra = sorted(set(options) - set(SAMPLING_OPTIONS))
    if extra and via == "predict":
        raise ValueError(f"options {extra} only apply with via='locate'.")
    opts = {**locate_defaults(), **options}
    if via == "locate":
        from geodiffloc.pipeline import locate

        if model is None and encoder is None:  # MiniLM once, not per batch
            encoder = _resolve(None, None, progress)[1]
        elif model is not None:
            model, encoder = _resolve(model, encoder, progress)

        def run(texts: list[str]) -> Any:
            return locate(texts, model=model, encoder=encoder, progress=False,
                          names=names, **opts).predictions
    else:
        model, encoder = _resolve(model, encoder, progress)

        def run(texts: list[str]) -> Any:
            # as locate does for text: one embedding each, the ensemble from the noise,
            # the names read against the samples
            from geodiffloc.pipeline.models import predict_and_map

            cond = model.embed_views(texts, n_views=1, encoder=encoder)[:, 0]
            kw = {"n_views": int(opts["n_samples"]), "samples_per_view": 1,
                  "sampler": opts["sampler"], "steps": opts["steps"], "seed": int(opts["seed"])}
            return predict_and_map(model, cond, kw, 1.0, False, field=False,
                                   texts=texts if names else None, encoder=encoder)[0]

    def predict(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        texts = list(texts)
        parts = []
        for start in range(0, len(texts), int(batch_size)):
            t0 = time.perf_counter()
            preds = run(texts[start:start + int(batch_size)])
            parts.append(preds[["lat", "lon", "confidence"]].to_numpy(np.float64))
            if progress:
                print(f"  {min(start + int(batch_size), len(texts))}/{len(texts)} "
                      f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        out = np.concatenate(parts)
        return out[:, 0], out[:, 1], out[:, 2]

    return predict


def load_callable(spec: str) -> Predictor:
    """``module:function`` or ``path/to/file.py:function`` -> that function."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"predictor must look like 'module:function' or 'file.py:function';"
                         f" got {spec!r}.")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValueError(f"predictor file {path} does not exist.")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert mod_spec is not None and mod_spec.loader is not None
        module = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{target} has no callable {name!r}.")
    return fn


def evaluate(predictor: Predictor, descriptions: pd.DataFrame | None = None, *,
             coast_km: float = COAST_KM) -> dict[str, Any]:
    """Run ``predictor`` on the test set and :func:`score` it (adds ``seconds``)."""
    df = load_descriptions() if descriptions is None else descriptions
    t0 = time.perf_counter()
    out = predictor(df["text"].tolist())
    if not isinstance(out, tuple) or len(out) != 3:
        raise ValueError("a predictor must return (lat, lon, confidence); confidence may be "
                         "None.")
    result = score(df, *out, coast_km=coast_km)
    result["seconds"] = time.perf_counter() - t0
    return result


# -- report ---------------------------------------------------------------------------
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_header(load_before: tuple[float, float, float] | None = None) -> list[str]:
    """Markdown lines: commit (and whether the tree was dirty), date, machine, threads, load."""
    import torch

    dirty = " (uncommitted changes)" if _git("status", "--porcelain", "--untracked-files=no") \
        not in ("", "unknown") else ""
    load = os.getloadavg()
    lines = [f"- commit: `{_git('rev-parse', 'HEAD')}`{dirty}",
             f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}",
             f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}, torch {torch.__version__}",
             f"- torch threads: {torch.get_num_threads()}"]
    if load_before is not None:
        lines.append(f"- load average (1/5/15 min): before {load_before[0]:.2f}/"
                     f"{load_before[1]:.2f}/{load_before[2]:.2f}, after {load[0]:.2f}/"
                     f"{load[1]:.2f}/{load[2]:.2f}")
    else:
        lines.append(f"- load average (1/5/15 min): {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")
    return lines


def _table(df: pd.DataFrame) -> str:
    """Markdown with readable precision: percentages to 0.1, km to 1 km, shares to 0.001."""
    from geodiffloc.metrics import format_markdown

    out = df.reset_index(drop=True).copy()
    for col in out.columns:
        if not pd.api.types.is_float_dtype(out[col]):
            continue
        digits = 1 if col.endswith("_%") else 0 if col.endswith("_km") else 3
        out[col] = out[col].round(digits)
    return format_markdown(out, floatfmt="g").rstrip("\n")


def format_report(result: dict[str, Any], *, title: str, model: str,
                  header: Sequence[str], max_misses: int = 40,
                  data: str | os.PathLike = DATA) -> str:
    """The Markdown report of one :func:`evaluate` result."""
    rows = result["rows"]
    shown = Path(data).resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    parts = [f"# {title}", "", *header, f"- model: {model}",
             f"- test set: `{shown}`, {len(rows)} descriptions, "
             f"{rows['country_iso3'].nunique()} countries",
             f"- wall time of the predictions: {result.get('seconds', float('nan')):.0f} s",
             "", "## Overall", "", _table(result["overall"]), "",
             "## Per kind", "", _table(result["per_kind"]), "",
             "## Per continent (of the true country)", "", _table(result["per_continent"]),
             ""]
    if result["reliability"] is not None:
        parts += ["## Reliability of `confidence`", "",
                  f"Expected calibration error against the right country: "
                  f"{result['ece']:.3f}", "", _table(result["reliability"]), ""]
    misses = rows[~rows["right_country"]]
    if len(misses):
        shown = misses.head(int(max_misses))
        cols = ["text", "kind", "country_iso3", "pred_iso3", "error_km"]
        cols += ["confidence"] if "confidence" in rows else []
        parts += [f"## Wrong country ({len(misses)}; first {len(shown)})", "",
                  _table(shown[cols].replace({"pred_iso3": {"": "(sea)"}})), ""]
    return "\n".join(parts)


def write_results(result: dict[str, Any], report: str, name: str, *,
                  out_dir: str | os.PathLike = HERE / "results") -> tuple[Path, Path]:
    """Write ``<name>.md`` and ``<name>.csv`` atomically (replacing earlier runs)."""
    from geodiffloc._io import atomic_path

    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    md, csv = folder / f"{name}.md", folder / f"{name}.csv"
    # the docs include records that carry _record's marker; loaded by path, since this
    # folder is kept off sys.path (see the top of the module)
    spec = importlib.util.spec_from_file_location("_record", HERE / "_record.py")
    marker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(marker)
    MARKER = marker.MARKER

    with atomic_path(md, overwrite=True) as tmp:
        tmp.write_text(MARKER + "\n" + report + "\n", encoding="utf-8")
    with atomic_path(csv, overwrite=True) as tmp:
        result["rows"].to_csv(tmp, index=False, float_format="%.6g")
    return md, csv


# -- command line ---------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="LocDiff checkpoint (default: the built-in geolocator)")
    src.add_argument("--predictor", help="'module:function' or 'file.py:function' mapping "
                     "texts to (lat, lon, confidence)")
    p.add_argument("--encoder", help="encoder name for --model (default: the recorded one)")
    p.add_argument("--n-samples", type=int, help="locate's n_samples")
    p.add_argument("--sampler", choices=("ddpm", "ddim", "dpm++"), help="locate's sampler")
    p.add_argument("--steps", type=int, help="locate's sampler steps")
    p.add_argument("--seed", type=int, help="locate's seed")
    p.add_argument("--no-names", action="store_false", dest="names",
                   help="the model alone, without reading place names (locate --no-names)")
    p.add_argument("--via", choices=("predict", "locate"), default="predict",
                   help="predict: sample as locate does (fast); locate: locate()")
    p.add_argument("--resolution", type=float, help="locate's raster cell size (--via locate)")
    p.add_argument("--batch-size", type=int, default=64, help="descriptions per locate call")
    p.add_argument("--data", default=str(DATA),
                   help="test set CSV (default: the main set; the held-out one is "
                        "data/geolocator_descriptions_holdout.csv)")
    p.add_argument("--limit", type=int, help="score only the first N descriptions (smoke runs)")
    p.add_argument("--coast-km", type=float, default=COAST_KM,
                   help="a prediction this close to a country counts as in it")
    p.add_argument("--threads", type=int, help="torch threads")
    p.add_argument("--name", default="geolocator", help="results/<name>.md and .csv")
    p.add_argument("--out-dir", default=str(HERE / "results"))
    return p


def _predictor_from_args(args: argparse.Namespace) -> tuple[Predictor, str]:
    if args.predictor:
        return load_callable(args.predictor), f"callable `{args.predictor}`"
    if args.resolution is not None and args.via != "locate":
        raise SystemExit("--resolution only applies with --via locate.")
    kw = {k: getattr(args, k) for k in ("n_samples", "sampler", "steps", "seed", "resolution")
          if getattr(args, k) is not None}
    encoder = None
    if args.encoder:
        from geodiffloc.encoders import encoder_from_name

        encoder = encoder_from_name(args.encoder)
    opts = {**locate_defaults(), **kw}
    label = f"LocDiff `{args.model}`" if args.model else "built-in default geolocator"
    label += (" with place names (locate's default)" if args.names
              else " without place names (--no-names)")
    how = ("`geodiffloc.pipeline.locate`" if args.via == "locate"
           else "sampling as `locate` does")
    label += f", via {how}, {opts}, batch size {args.batch_size}"
    return locdiff_predictor(args.model, encoder, via=args.via, batch_size=args.batch_size,
                             names=args.names, **kw), label


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(int(args.threads))
    load_before = os.getloadavg()
    df = load_descriptions(args.data)
    if args.limit:
        df = df.head(int(args.limit)).reset_index(drop=True)
    predictor, label = _predictor_from_args(args)
    result = evaluate(predictor, df, coast_km=args.coast_km)
    title = f"Built-in geolocator: country test set `{Path(args.data).name}`"
    report = format_report(result, title=title, model=label,
                           header=run_header(load_before), data=args.data)
    md, csv = write_results(result, report, args.name, out_dir=args.out_dir)
    print(report)
    print(f"\nwrote {md} and {csv}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
