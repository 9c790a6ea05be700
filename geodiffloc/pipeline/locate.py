"""``locate``: inputs in, everything a GIS analyst wants out.

For each input (a place description, or an image path with an image-encoder model)
LocDiff draws an ensemble of SHDD samples; the mixture of their densities is the
probability field, its heaviest mode the point prediction. Outputs:

``predictions.gpkg``
    One point per query (``query``, ``lat``, ``lon``, ``confidence``, ``country``,
    ``iso_a3``; the country is NULL at sea), EPSG:4326, GeoPackage 1.2.
``probability.tif``
    Cloud-Optimized GeoTIFF, EPSG:4326, one float32 band of probability density per
    km² per query (band description: the query; unit ``km-2``): densities survive
    ``gdalwarp`` and averaged overviews. Multiply by the true cell area (or use
    ``geodiffloc.geo.read_geotiff`` + ``to_mass``) for cell probabilities.
``probability.qml``
    QGIS style for the raster (a colour ramp), applied when QGIS opens it.
``map.png``
    A static world map per query: the field as density per km², country borders and
    the predicted point.
``countries.csv``
    ``query, rank, country, iso_a3, probability``: the field's mass inside each Natural
    Earth (10m) country, sorted by query, then by probability. Countries below
    ``min_country_prob`` are left out; the mass outside every country polygon (sea,
    and land too small for the 10m polygons) is one row named
    :data:`NO_COUNTRY` with an empty ``iso_a3``, so each query's rows sum to ~1.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .._interrupt import stage
from .._io import atomic_path, check_writable, recover_staged, staged_outputs
from .._optional import require

__all__ = ["EXAMPLE_QUERIES", "NO_COUNTRY", "OUTPUT_FILES", "LocateResult", "locate"]

#: What ``geodiffloc locate`` geolocates when given no inputs.
EXAMPLE_QUERIES: tuple[str, ...] = (
    "a fishing harbour in northern Norway",
    "Kyoto temple",
    "a street market in Marrakesh",
    "a beach in Rio de Janeiro",
)

log = logging.getLogger("geodiffloc.pipeline")

#: Output file names inside ``out_dir``.
OUTPUT_FILES: dict[str, str] = {
    "predictions": "predictions.gpkg",
    "raster": "probability.tif",
    "style": "probability.qml",
    "map": "map.png",
    "countries": "countries.csv",
}

#: The ``country`` label of the mass that falls in no country polygon.
NO_COUNTRY = "(no country: sea or unmapped)"

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".heic", ".gif"}
_MAX_PANELS = 12


@dataclass
class LocateResult:
    """What :func:`locate` found and wrote.

    Attributes
    ----------
    predictions
        GeoDataFrame, one row per query: ``query``, ``lat``, ``lon``, ``confidence``
        (share of the ensemble's samples near the prediction), ``country``, ``iso_a3``
        (Natural Earth country of the predicted point; None at sea), point geometry.
    field
        ``("query", "lat", "lon")`` DataArray of cell probabilities (each query sums
        to 1), EPSG:4326, the query texts as ``query`` coordinate.
    countries
        DataFrame ``query, rank, country, iso_a3, probability`` (see the module notes).
    paths
        Written files by kind (``predictions``, ``raster``, ``map``, ``countries``);
        empty without ``out_dir``.
    """

    predictions: Any
    field: Any
    countries: Any
    paths: dict[str, Path] = field(default_factory=dict)

    def top_countries(self, k: int = 3) -> Any:
        """The ``k`` most probable countries of each query (the no-country row excluded).

        Returns
        -------
        pandas.DataFrame
            Rows of :attr:`countries`, at most ``k`` per query, in query order, ranked
            again from 1 among the countries.
        """
        c = self.countries
        c = c[c["country"] != NO_COUNTRY]
        top = c.groupby("query", sort=False).head(int(k)).reset_index(drop=True)
        top["rank"] = top.groupby("query", sort=False).cumcount() + 1
        return top


def _labels_and_items(inputs: Any, modality: str) -> tuple[list[Any], list[str]]:
    """Validate inputs for the encoder's modality; return (items to encode, labels)."""
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    try:
        items = list(inputs)
    except TypeError:
        raise ValueError(
            f"inputs must be a list of descriptions or image paths; got {type(inputs).__name__}."
        ) from None
    if not items:
        raise ValueError("no inputs: give at least one place description (or image path).")
    labels = []
    for i, x in enumerate(items):
        if not isinstance(x, str | os.PathLike):
            raise ValueError(
                f"input {i} is a {type(x).__name__}; inputs must be strings (descriptions) or "
                "paths (images)."
            )
        text = os.fspath(x)
        if not text.strip():
            raise ValueError(f"input {i} is an empty string; remove it or describe the place.")
        if modality == "image":
            if not Path(text).is_file():
                raise FileNotFoundError(
                    f"input {i}: image file {text!r} does not exist (this model geolocates "
                    "images; pass paths to image files)."
                )
        elif isinstance(x, os.PathLike) or (
                Path(text).suffix.lower() in _IMAGE_SUFFIXES and Path(text).is_file()):
            raise ValueError(
                f"input {i} ({text!r}) is a file, but this model geolocates {modality} "
                "descriptions; for photos use a model trained on an image encoder (--model)."
            )
        labels.append(text)
    return [os.fspath(x) if modality == "image" else x for x in items], labels


def _targets(out_dir: str | os.PathLike | None, overwrite: bool) -> dict[str, Path]:
    """Output paths, all checked before any work (no clobbering, no half-written set)."""
    if out_dir is None:
        return {}
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise ValueError(f"out_dir {root} exists and is not a folder; choose a folder.")
    for line in recover_staged(root):  # a killed earlier run: finish or undo its outputs
        log.warning("%s: %s", root, line)
    paths = {k: root / name for k, name in OUTPUT_FILES.items()}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{', '.join(existing)} already exist; pass overwrite=True (CLI: --overwrite) or "
            "choose another output folder."
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(
            f"a parent of out_dir {root} is a file; choose a folder.") from None
    for p in paths.values():
        check_writable(p, overwrite)
    return paths


def _resolve_model(model: Any, encoder: Any, progress: bool, retrain: bool,
                   backbone: Any = None) -> Any:
    """Any ``model=`` (None, a name, a checkpoint path, an object) -> a runner."""
    from .models import resolve_runner

    return resolve_runner(model, encoder=encoder, backbone=backbone, progress=progress,
                          retrain_default=retrain)


def country_columns(lat: np.ndarray, lon: np.ndarray, scale: Literal["10m", "lowres"],
                    ) -> dict[str, list[Any]]:
    """``country`` and ``iso_a3`` of each point, from one spatial join.

    ``None`` at sea: a NULL in a GeoPackage, not an empty string that looks like a value.
    """
    from ..geo import country_of

    both = country_of(lat, lon, scale=scale, column=["name", "iso_a3"])
    return {"country": [c or None for c in both[:, 0]],
            "iso_a3": [c or None for c in both[:, 1]]}


def _country_table(fld: Any, labels: list[str], scale: Literal["10m", "lowres"],
                   min_prob: float, progress: bool) -> Any:
    import pandas as pd

    from ..geo import countries, zonal_probability

    world = countries(scale)[["name", "iso_a3", "geometry"]]
    zonal = zonal_probability(fld, world, progress=progress, layout="long")
    frames = []
    for i, label in enumerate(labels):
        p = zonal.loc[zonal["query_index"] == i, "prob"].to_numpy(dtype=np.float64)
        keep = p >= min_prob
        rest = max(0.0, 1.0 - float(p.sum()))
        df = pd.DataFrame({"country": world["name"].to_numpy()[keep],
                           "iso_a3": world["iso_a3"].fillna("").to_numpy()[keep],
                           "probability": p[keep]})
        df = pd.concat([df, pd.DataFrame({"country": [NO_COUNTRY], "iso_a3": [""],
                                          "probability": [rest]})], ignore_index=True)
        df = df.sort_values("probability", ascending=False, kind="stable")
        df.insert(0, "rank", np.arange(1, len(df) + 1))
        df.insert(0, "query", label)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _draw_map(fld: Any, preds: Any, labels: list[str], path: Path, overwrite: bool) -> Path:
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    from ..geo import plot_field

    n = min(len(labels), _MAX_PANELS)
    ncols = 1 if n == 1 else 2
    nrows = math.ceil(n / ncols)
    width, height = 8.0 * ncols, 3.6 * nrows + 0.3
    # fixed margins in inches: matplotlib's constrained layout cost ~2 s of each map
    top = 0.45 + (0.35 if len(labels) > n else 0.0)
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.7 / width, right=1 - 0.1 / width, bottom=0.55 / height,
                        top=1 - top / height, wspace=0.12, hspace=0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i in range(n):
        pt = preds[["lat", "lon"]].to_numpy()[i:i + 1]
        title = labels[i] if len(labels[i]) <= 60 else labels[i][:57] + "..."
        plot_field(fld, index=i, points=pt, ax=axes[i], title=title, borders="lowres")
        # square-root colours: secondary modes stay visible without log-scale ringing
        im = axes[i].images[0]
        im.set_norm(PowerNorm(0.5, vmin=0.0, vmax=float(im.norm.vmax)))
    for ax in axes[n:]:
        ax.set_axis_off()
    if len(labels) > n:
        fig.suptitle(f"first {n} of {len(labels)} queries (all are in the GeoTIFF)")
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def locate(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    model: Any = None,
    encoder: Any = None,
    out_dir: str | os.PathLike | None = None,
    resolution: float = 0.5,
    n_samples: int = 32,
    overwrite: bool = False,
    seed: int = 0,
    sampler: Literal["ddpm", "ddim", "dpm++"] = "dpm++",
    steps: int | None = None,
    views: int = 8,
    countries_scale: Literal["10m", "lowres"] = "10m",
    min_country_prob: float = 1e-6,
    retrain_default: bool = False,
    names: bool = True,
    progress: bool = True,
    backbone: Any = None,
) -> LocateResult:
    """Geolocate inputs and (optionally) write GIS-ready files.

    Parameters
    ----------
    inputs
        Place descriptions (the default model and any text-encoder model), or image
        paths (a model trained on an image encoder); one string/path or a list.
    model
        ``None`` / ``"default"`` / ``"locdiff"`` for the built-in default
        (:func:`~geodiffloc.pipeline.default_model`; trained and cached on first use), a
        LocDiff or GeoCLIP checkpoint path, ``"geoclip-official"``,
        ``"locdiff-h:PATH"``, or a :class:`~geodiffloc.LocDiff` / :class:`~geodiffloc.GeoCLIP`
        / :class:`~geodiffloc.LocDiffH` object (see :mod:`geodiffloc.pipeline.models`).
    encoder
        The encoder for raw inputs; default: rebuilt from the name the model recorded
        (:func:`geodiffloc.encoders.encoder_from_name`); for GeoCLIP its image backbone.
    out_dir
        Folder for ``predictions.gpkg``, ``probability.tif``, ``map.png`` and
        ``countries.csv`` (created if missing); ``None`` writes nothing.
    resolution
        Raster cell size in degrees (``180 / resolution`` must be a whole number).
    n_samples
        Diffusion samples per input (the ensemble behind the field and prediction).
    overwrite
        Replace existing output files (otherwise refused before any work is done).
    seed
        Seed of the diffusion noise (same seed, same outputs).
    sampler, steps
        LocDiff sampler (default ``"dpm++"`` with 20 steps, as accurate as the paper's
        ``"ddpm"`` with T steps and ~10x faster) and its step count.
    views
        Augmented views per image input (image models only; texts are embedded once and
        the ensemble comes from the diffusion noise).
    countries_scale
        Natural Earth polygons for the per-country probabilities.
    min_country_prob
        Countries with less probability are left out of the country table.
    names
        For text inputs: read the place names in them against the offline gazetteers
        and weigh each reading by the model (:mod:`geodiffloc.models.toponymic`); the
        predictions then say which ``place`` and ``names`` decided and whether the
        names or the model did (``source``). ``False``: the model alone.
    retrain_default
        With ``model=None``: retrain the built-in default model instead of loading the
        cached one (after the inputs and output paths have been checked).
    progress
        Progress bars (default-model training, zonal sums).
    backbone
        GeoCLIP's image backbone (``"geoclip-official"``, ``"locdiff-h:PATH"``): a local
        open_clip ViT-L/14 checkpoint path or an encoder; default: open_clip's hub weights.

    Returns
    -------
    LocateResult

    Raises
    ------
    ValueError
        No inputs, an empty or non-string input, a file given to a text model, a bad
        ``resolution`` / ``n_samples``, or a model/encoder mismatch.
    FileNotFoundError
        An image input that does not exist.
    FileExistsError
        An output file exists and ``overwrite`` is false.
    PermissionError, NotADirectoryError
        The output folder cannot be written to (checked before any work).
    FloatingPointError
        The model produced NaN/inf (non-finite weights or inputs); nothing is written.
    geodiffloc._memory.TooLargeError
        The probability fields would not fit in memory (a ``ValueError``).

    Examples
    --------
    >>> res = locate(["Kyoto temple"], out_dir="out")  # doctest: +SKIP
    >>> res.predictions[["query", "lat", "lon", "country"]]  # doctest: +SKIP
    >>> res.top_countries(3)  # doctest: +SKIP
    """
    from ..geo import to_geotiff, write_vector
    from ..models._validate import check_positive_int

    n_samples = check_positive_int(n_samples, "n_samples")
    views = check_positive_int(views, "views")
    for name, value in (("resolution", resolution), ("min_country_prob", min_country_prob)):
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer
                                                     | np.floating):
            raise ValueError(f"{name} must be a number; got {value!r}.")
    if not (resolution > 0 and abs(180.0 / resolution - round(180.0 / resolution)) < 1e-9):
        raise ValueError(
            f"resolution must divide 180 degrees into whole cells (e.g. 1, 0.5, 0.25); "
            f"got {resolution}."
        )
    _check_memory(inputs, float(resolution), int(n_samples))
    if not 0.0 <= min_country_prob < 1.0:
        raise ValueError(f"min_country_prob must be in [0, 1); got {min_country_prob}.")
    if isinstance(model, str | os.PathLike):
        from .models import _parse

        _parse(os.fspath(model))  # an unknown name or a missing file fails before any work
    # cheap checks first: a bad input or an existing output must not cost a training run
    modality = getattr(encoder, "modality", None) if encoder is not None else None
    if modality is None and (model is None or (isinstance(model, str) and model.strip().lower()
                                                in ("default", "locdiff"))):
        modality = "text"  # the built-in default geolocates descriptions
    if modality is not None:
        _labels_and_items(inputs, modality)
    paths = _targets(out_dir, overwrite)
    if paths:  # map.png: fail now, not after the model ran
        require("matplotlib", extra="plot", feature="locate's map.png (out_dir=...)")
    with stage("loading the model"):
        runner = _resolve_model(model, encoder, progress, bool(retrain_default), backbone)
    modality = runner.modality
    items, labels = _labels_and_items(inputs, modality)

    with stage("sampling the predictions and the field"):
        preds, fld = runner.predict(items, field=True, resolution=float(resolution),
                                    n_samples=int(n_samples), views=int(views),
                                    sampler=sampler, steps=steps, seed=int(seed),
                                    names=bool(names), progress=progress)
    extra = [c for c in ("place", "names", "source") if c in preds.columns]
    preds = preds[["lat", "lon", "confidence", *extra, "geometry"]].copy()
    fld = fld.assign_coords(query=np.array(labels, dtype=object))
    fld.attrs["inputs"] = modality
    _check_finite(preds, fld)

    lat, lon = preds["lat"].to_numpy(), preds["lon"].to_numpy()
    preds.insert(0, "query", labels)
    for col, values in country_columns(lat, lon, countries_scale).items():
        preds[col] = values
    extra = [c for c in ("place", "names", "source") if c in preds.columns]
    preds = preds[["query", "lat", "lon", "confidence", "country", "iso_a3", *extra,
                   "geometry"]]
    with stage("summing probabilities per country"):
        table = _country_table(fld, labels, countries_scale, float(min_country_prob), progress)

    written: dict[str, Path] = {}
    if paths:
        root = next(iter(paths.values())).parent
        # all the files or none: a run stopped while writing never blocks the next one
        with stage("writing the outputs"), staged_outputs(
                root, list(OUTPUT_FILES.values()), overwrite=overwrite) as tmp_dir:
            tmp = {k: tmp_dir / name for k, name in OUTPUT_FILES.items()}
            write_vector(preds, tmp["predictions"])
            to_geotiff(fld, tmp["raster"])  # and the QGIS style next to it
            _draw_map(fld, preds, labels, tmp["map"], False)
            with atomic_path(tmp["countries"]) as t:
                table.to_csv(t, index=False, float_format="%.6g")
        written = dict(paths)
    return LocateResult(predictions=preds, field=fld, countries=table, paths=written)


def _check_memory(inputs: Any, resolution: float, n_samples: int) -> None:
    """Refuse, before any work, a run whose fields cannot fit in memory."""
    from .._memory import check_allocation

    n = 1 if isinstance(inputs, str | os.PathLike) else len(inputs) if hasattr(
        inputs, "__len__") else 1
    cells = round(180.0 / resolution) * round(360.0 / resolution)
    # the (query, lat, lon) float64 field, plus one query's samples being synthesised
    check_allocation(8.0 * cells * (max(n, 1) + 3 * n_samples),
                     f"{n} probability field(s) of {cells:,} cells ({resolution} degrees)",
                     "use a coarser --resolution, fewer --samples or fewer inputs per run")


def _check_finite(preds: Any, fld: Any) -> None:
    """Nothing NaN is ever reported: a non-finite prediction or field stops the run here."""
    bad = ~np.isfinite(preds[["lat", "lon", "confidence"]].to_numpy(dtype=np.float64)).all(1)
    if bad.any():
        raise FloatingPointError(
            f"the model produced non-finite predictions for inputs {np.flatnonzero(bad).tolist()}"
            " (NaN/inf in its weights, its inputs or its sampled coefficients); nothing was "
            "written. Check the checkpoint (retrain it) and the inputs."
        )
    values = np.asarray(fld.values)
    if not np.isfinite(values).all():
        rows = np.flatnonzero(~np.isfinite(values.reshape(values.shape[0], -1)).all(1))
        raise FloatingPointError(
            f"the probability field of inputs {rows.tolist()} holds NaN/inf (the model's "
            "weights or sampled coefficients are not finite); nothing was written."
        )
