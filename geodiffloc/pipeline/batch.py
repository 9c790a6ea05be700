"""Batch geolocation: a whole collection, streamed, resumable, on Dask.

:func:`locate_batch` reads a collection (:mod:`geodiffloc.pipeline.inputs`) in chunks,
geolocates each chunk with any model (:mod:`geodiffloc.pipeline.models`), on a Dask
cluster or in this process, and writes each chunk's results as soon as they arrive.
Files in ``out_dir``:

``predictions.parquet/part-NNNNN.parquet``
    GeoParquet parts (EPSG:4326), one per chunk: ``key``, ``query``, ``row``, ``lat``,
    ``lon``, ``confidence``, ``country``, ``iso_a3``, ``true_lat``, ``true_lon``,
    ``error_km`` (NaN without ground truth), ``field_index`` (row of the Zarr cube,
    -1 without fields), point geometry. Each part is written to a temporary file and
    renamed into place: a part that exists is complete. Open them while the run goes
    on (``geopandas.read_parquet(out / "predictions.parquet")``, or QGIS).
``fields.zarr`` (``fields=True``)
    The probability fields as one chunked Zarr (v2) cube ``probability(query, lat,
    lon)`` of cell masses (each query sums to 1), with CF attributes, the CRS
    (rioxarray ``write_crs``, ``spatial_ref``) and a ``key`` coordinate;
    ``xarray.open_zarr(out / "fields.zarr")``.
``cogs/<key>.tif`` (``cogs=True``)
    One Cloud-Optimized GeoTIFF per input (density per km², EPSG:4326), named by the
    input's key (the ``key`` column of the GeoParquet).
``countries.parquet/part-NNNNN.parquet`` (``fields=True``)
    Per query and country: the field's probability mass (``>= min_country_prob``).
``predictions.gpkg``, ``countries.csv``, ``skipped.csv``, ``accuracy.json``, ``map.png``
    Written at the end of each run: all predictions in one GeoPackage; per country the
    number of predictions inside it (and the expected number, the sum of the fields'
    masses); the inputs left out with the reason; accuracy against the ground truth
    (EXIF GPS, table coordinates) when the inputs had any; a world map of the
    predictions coloured by confidence (with matplotlib installed).
``run.json``
    The model fingerprint and settings. A second run with the same ``out_dir`` skips
    the inputs already done (by input key) and does the rest; a run with another model
    or other settings is refused unless ``overwrite=True``.

A run killed at any moment leaves only complete parts; the next run removes what the
killed one left half-done (temporary files, Zarr rows without a part) and goes on.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd

from .._fingerprint import fingerprint
from .._interrupt import stage
from .._io import atomic_path, check_writable
from .._version import __version__
from .inputs import InputItem, InputReader
from .locate import NO_COUNTRY, country_columns
from .models import Runner, resolve_runner

__all__ = ["BATCH_FILES", "BatchResult", "local_client", "locate_batch"]

log = logging.getLogger("geodiffloc.pipeline")

#: Names of everything :func:`locate_batch` writes in ``out_dir``.
BATCH_FILES: dict[str, str] = {
    "run": "run.json",
    "parts": "predictions.parquet",
    "fields": "fields.zarr",
    "country_parts": "countries.parquet",
    "predictions": "predictions.gpkg",
    "countries": "countries.csv",
    "skipped": "skipped.csv",
    "accuracy": "accuracy.json",
    "map": "map.png",
    "cogs": "cogs",
}
FORMAT = "geodiffloc.batch/1"
_PART = "part-{:05d}.parquet"
_LOCK = ".geodiffloc-batch.lock"
_SETTINGS = ("resolution", "n_samples", "views", "sampler", "steps", "seed", "fields",
             "names", "countries_scale", "min_country_prob")  # "cogs" may change between runs


@dataclass
class BatchResult:
    """What :func:`locate_batch` did and where it wrote it.

    Attributes
    ----------
    out_dir
        The output folder.
    paths
        Written files and folders by kind (keys of :data:`BATCH_FILES`).
    n_new
        Inputs geolocated by this run.
    n_done
        Inputs geolocated in ``out_dir`` in total (this run and earlier ones).
    n_resumed
        Inputs this run found already done and skipped.
    n_skipped
        Inputs left out (see ``skipped.csv``).
    accuracy
        Accuracy against the inputs' ground truth (``n``, ``median_km``,
        ``acc@25km_%``, ...), or None when no input had any.
    n_bad_truth
        Inputs geolocated but not scored because their ground truth was unusable
        (listed in ``skipped.csv`` with the reason).
    """

    out_dir: Path
    paths: dict[str, Path]
    n_new: int
    n_done: int
    n_resumed: int
    n_skipped: int
    accuracy: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    n_bad_truth: int = 0

    def predictions(self) -> Any:
        """All predictions so far, as one GeoDataFrame (EPSG:4326), read from the parts."""
        return read_predictions(self.out_dir)

    def fields(self) -> Any:
        """The probability cube (lazy, Dask-backed) from ``fields.zarr``.

        Raises
        ------
        FileNotFoundError
            The run wrote no fields (``fields=False``).
        """
        import xarray as xr

        path = self.out_dir / BATCH_FILES["fields"]
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run with fields=True "
                                    "(CLI: --fields) to write the probability cube.")
        return xr.open_zarr(path, consolidated=False)["probability"]


def read_predictions(out_dir: str | os.PathLike) -> gpd.GeoDataFrame:
    """The GeoDataFrame of every committed part of a batch output folder.

    Examples
    --------
    >>> gdf = read_predictions("out")  # doctest: +SKIP
    """
    import geopandas as gpd
    import pandas as pd

    parts = _committed_parts(Path(out_dir) / BATCH_FILES["parts"])
    if not parts:
        return gpd.GeoDataFrame({"key": [], "query": [], "lat": [], "lon": []},
                                geometry=gpd.points_from_xy([], []), crs="EPSG:4326")
    gdf = pd.concat([gpd.read_parquet(p) for p in parts.values()], ignore_index=True)
    return gpd.GeoDataFrame(gdf, geometry="geometry", crs="EPSG:4326")


# -- the output folder --------------------------------------------------------------------
def _committed_parts(folder: Path) -> dict[int, Path]:
    """Part number -> path of the complete parts (temporaries are not parts)."""
    out: dict[int, Path] = {}
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        name = p.name
        if name.startswith("part-") and name.endswith(".parquet") and ".tmp" not in name:
            with contextlib.suppress(ValueError):
                out[int(name[5:-8])] = p
    return dict(sorted(out.items()))


def _remove_temporaries(folder: Path) -> int:
    """Delete what a killed write left (atomic_path's hidden ``.*.tmp*`` files)."""
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") and ".tmp" in p.name:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                n += 1
    return n


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _prepare(root: Path, run_info: dict[str, Any], overwrite: bool) -> None:
    """Check ``out_dir`` belongs to this model and settings (or clear it on overwrite)."""
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"out_dir {root} exists and is not a folder; choose a folder.")
    run_file = root / BATCH_FILES["run"]
    ours = [root / n for n in BATCH_FILES.values() if (root / n).exists()]
    if overwrite:
        for p in ours:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    elif run_file.is_file():
        try:
            old = json.loads(run_file.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{run_file} is unreadable ({err}); pass overwrite=True (CLI: "
                             "--overwrite) to start afresh.") from None
        if old.get("model_fingerprint") != run_info["model_fingerprint"]:
            raise FileExistsError(
                f"{root} holds a batch run of another model ({old.get('model')!r}, "
                f"fingerprint {old.get('model_fingerprint')}); this run uses "
                f"{run_info['model']!r} (fingerprint {run_info['model_fingerprint']}). Pass "
                "overwrite=True (CLI: --overwrite) to replace it, or choose another folder.")
        diff = [k for k in _SETTINGS if old.get("settings", {}).get(k) != run_info["settings"][k]]
        if diff:
            was = ", ".join(f"{k}={old.get('settings', {}).get(k)!r}" for k in diff)
            now = ", ".join(f"{k}={run_info['settings'][k]!r}" for k in diff)
            raise FileExistsError(
                f"{root} holds a batch run with other settings ({was}; now {now}); resume with "
                "the same settings, or pass overwrite=True (CLI: --overwrite) to start "
                "afresh, or choose another folder.")
    elif ours:
        raise FileExistsError(
            f"{', '.join(str(p) for p in ours)} already exist but {run_file} does not (not a "
            "batch run of geodiffloc); pass overwrite=True (CLI: --overwrite) or choose "
            "another folder.")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"a parent of out_dir {root} is a file; choose a folder.") \
            from None
    check_writable(root / ".probe", overwrite=True)
    for key in ("parts", "country_parts"):
        (root / BATCH_FILES[key]).mkdir(exist_ok=True)


@contextlib.contextmanager
def _exclusive(root: Path) -> Iterator[None]:
    """Hold ``out_dir``'s lock: a second run on the same folder is refused, not interleaved."""
    from filelock import FileLock, Timeout

    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"out_dir {root} exists and is not a folder; choose a folder.")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"a parent of out_dir {root} is a file; choose a folder.") \
            from None
    lock = FileLock(str(root / _LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FileExistsError(
            f"another geodiffloc run is writing into {root} (it holds {root / _LOCK}); wait "
            "for it to finish, or choose another folder.") from None
    try:
        yield
    finally:
        lock.release()


def _recover(root: Path) -> tuple[set[str], int, int]:
    """Make the folder consistent after a killed run; (done keys, next part, next field row)."""
    import pyarrow.parquet as pq

    parts_dir = root / BATCH_FILES["parts"]
    cparts_dir = root / BATCH_FILES["country_parts"]
    removed = _remove_temporaries(parts_dir) + _remove_temporaries(cparts_dir)
    parts = _committed_parts(parts_dir)
    done: set[str] = set()
    n_fields = 0
    for p in parts.values():
        try:
            t = pq.read_table(p, columns=["key", "field_index"])
        except Exception as err:  # pyarrow raises ArrowInvalid / OSError
            raise ValueError(f"{p} is damaged ({err}); delete it (its inputs will be redone) "
                             "or pass overwrite=True to start afresh.") from None
        done.update(t.column("key").to_pylist())
        fi = [v for v in t.column("field_index").to_pylist() if v is not None and v >= 0]
        if fi:
            n_fields = max(n_fields, max(fi) + 1)
    for n, p in _committed_parts(cparts_dir).items():  # written before their part: orphans
        if n not in parts:
            p.unlink(missing_ok=True)
            removed += 1
    _truncate_zarr(root / BATCH_FILES["fields"], n_fields)
    if removed:
        log.warning("%s: removed %d unfinished file(s) of an interrupted run", root, removed)
    return done, (max(parts) + 1 if parts else 0), n_fields


def _truncate_zarr(path: Path, n: int) -> None:
    """Cut the cube back to the rows that committed parts point at."""
    if not path.exists():
        return
    if n == 0:
        shutil.rmtree(path)
        return
    import zarr

    group = zarr.open_group(str(path), mode="r+")
    for _, arr in group.arrays():
        dims = arr.attrs.get("_ARRAY_DIMENSIONS") or getattr(arr.metadata, "dimension_names",
                                                             None) or ()
        first = dims[0] if isinstance(dims, list | tuple) and dims else None
        if first == "query" and arr.shape[0] != n:
            arr.resize((n, *arr.shape[1:]))


# -- one chunk ------------------------------------------------------------------------------
def _process_chunk(runner: Runner, values: list[str], settings: dict[str, Any],
                   seed: int) -> dict[str, Any]:
    """Geolocate one chunk (runs on a Dask worker or in this process); plain data out."""
    import pandas as pd

    with stage("geolocating a chunk"):
        preds, fld = runner.predict(
            values, field=bool(settings["fields"]), resolution=settings["resolution"],
            n_samples=settings["n_samples"], views=settings["views"],
            sampler=settings["sampler"], steps=settings["steps"], seed=seed,
            names=bool(settings.get("names", True)), progress=False)
    lat = preds["lat"].to_numpy(np.float64)
    lon = preds["lon"].to_numpy(np.float64)
    conf = preds["confidence"].to_numpy(np.float64)
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise FloatingPointError(
            "the model produced non-finite predictions (NaN/inf in its weights or inputs); "
            "check the checkpoint.")
    scale = settings["countries_scale"]
    table = pd.DataFrame({
        "lat": lat, "lon": lon, "confidence": conf,
        **country_columns(lat, lon, scale)})
    for col in ("place", "names", "source"):  # what decided (names, LocDiff-H's models)
        if col in preds:
            table[col] = preds[col].to_numpy()
    out: dict[str, Any] = {"table": table, "field": None, "countries": None, "attrs": {}}
    if fld is not None:
        values_ = np.asarray(fld.values, dtype=np.float32)
        if not np.isfinite(values_).all():
            raise FloatingPointError("a probability field holds NaN/inf; check the checkpoint.")
        out["field"] = values_
        out["attrs"] = {k: v for k, v in fld.attrs.items()
                        if k not in ("units", "long_name", "field_kind")}
        out["countries"] = _country_masses(fld, scale, float(settings["min_country_prob"]))
    return out


def _country_masses(fld: Any, scale: Literal["10m", "lowres"], min_prob: float) -> Any:
    import pandas as pd

    from ..geo import countries, zonal_probability

    world = countries(scale)[["name", "iso_a3", "geometry"]]
    zonal = zonal_probability(fld.assign_coords(query=np.arange(fld.sizes["query"])), world,
                              progress=False, layout="long")
    prob = zonal["prob"].to_numpy(np.float64)
    idx = zonal["query_index"].to_numpy()
    names, iso = zonal["name"].to_numpy(), zonal["iso_a3"].fillna("").to_numpy()
    keep = prob >= min_prob
    return pd.DataFrame({"index": idx[keep], "country": names[keep], "iso_a3": iso[keep],
                         "probability": prob[keep]})


class _Writer:
    """Writes each chunk's results into ``out_dir`` (driver side, one chunk at a time)."""

    def __init__(self, root: Path, settings: dict[str, Any], next_part: int, next_field: int,
                 model_label: str) -> None:
        self.root, self.settings = root, settings
        self.part, self.next_field = next_part, next_field
        self.model_label = model_label
        self.n_written = 0

    def write(self, items: list[InputItem], res: dict[str, Any]) -> Path:
        import geopandas as gpd

        from ..sphere.distance import geodesic_km

        k = len(items)
        t = res["table"]
        first = self.next_field
        if res["field"] is not None:
            self._append_field(items, res["field"], res["attrs"])
        part_name = _PART.format(self.part)
        if res["countries"] is not None:
            c = res["countries"]
            keys = np.array([it.key for it in items], dtype=object)
            c = c.assign(key=keys[c["index"].to_numpy()],
                         query=np.array([it.label for it in items], dtype=object)[
                             c["index"].to_numpy()]).drop(columns=["index"])
            c = c[["key", "query", "country", "iso_a3", "probability"]]
            with atomic_path(self.root / BATCH_FILES["country_parts"] / part_name) as tmp:
                c.to_parquet(tmp, index=False)
        tlat = np.array([it.true_lat for it in items], dtype=np.float64)
        tlon = np.array([it.true_lon for it in items], dtype=np.float64)
        err = np.full(k, np.nan)
        has = np.isfinite(tlat) & np.isfinite(tlon)
        if has.any():
            err[has] = geodesic_km(tlat[has], tlon[has], t["lat"].to_numpy()[has],
                                   t["lon"].to_numpy()[has])
        cols = {
            "key": [it.key for it in items], "query": [it.label for it in items],
            "row": np.array([it.row for it in items], dtype=np.int64),
            "lat": t["lat"].to_numpy(), "lon": t["lon"].to_numpy(),
            "confidence": t["confidence"].to_numpy(), "country": t["country"].to_numpy(),
            "iso_a3": t["iso_a3"].to_numpy(), "true_lat": tlat, "true_lon": tlon,
            "error_km": err,
            "field_index": (np.arange(first, first + k, dtype=np.int64)
                            if res["field"] is not None else np.full(k, -1, dtype=np.int64)),
        }
        if "source" in t:
            cols["source"] = t["source"].to_numpy()
        gdf = gpd.GeoDataFrame(cols, geometry=gpd.points_from_xy(cols["lon"], cols["lat"]),
                               crs="EPSG:4326")
        target = self.root / BATCH_FILES["parts"] / part_name
        with atomic_path(target) as tmp:  # the commit: a part that exists is complete
            gdf.to_parquet(tmp, index=False)
        self.part += 1
        self.n_written += k
        return target

    def _append_field(self, items: list[InputItem], values: np.ndarray,
                      attrs: dict[str, Any]) -> None:
        from ..geo import to_geotiff
        from ..sphere.grid import LatLonGrid

        k = len(items)
        grid = LatLonGrid.global_(float(self.settings["resolution"]))
        idx = np.arange(self.next_field, self.next_field + k, dtype=np.int64)
        da = grid.to_dataarray(values, kind="mass", leading_dim="query", leading_coords=idx,
                               name="probability",
                               attrs={**attrs, "batch_model": self.model_label,
                                      # each chunk's noise seed derives from the run's seed
                                      "seed": int(self.settings["seed"])})
        da = da.assign_coords(key=("query", np.array([it.key for it in items], dtype=object)))
        da["query"].attrs.update(long_name="row of the cube (field_index in the GeoParquet)")
        if self.settings.get("cogs"):  # before the part commits: redone on resume if cut
            folder = self.root / BATCH_FILES["cogs"]
            folder.mkdir(exist_ok=True)
            for i, it in enumerate(items):
                one = da.isel(query=i).drop_vars(["query", "key"]).assign_attrs(query=it.label)
                to_geotiff(one, folder / f"{it.key}.tif", overwrite=True, qml=False)
        ds = da.to_dataset().rio.write_crs("EPSG:4326")
        # the grid mapping as an attribute (not only encoding), so it survives Zarr appends
        ds["probability"].encoding.pop("grid_mapping", None)
        ds["probability"].attrs["grid_mapping"] = "spatial_ref"
        path = self.root / BATCH_FILES["fields"]
        if self.next_field == 0 or not path.exists():
            # Zarr v2: what zarr 2 writes anyway, GDAL and every xarray read, stable strings
            fmt = {"zarr_format": 2} if _zarr_major() >= 3 else {}
            ds.to_zarr(path, mode="w", consolidated=False, encoding={
                "probability": {"chunks": (1, *grid.shape)}}, **fmt)
        else:
            ds.drop_vars("spatial_ref").to_zarr(path, append_dim="query", consolidated=False)
        self.next_field += k


def _zarr_major() -> int:
    import zarr

    return int(str(zarr.__version__).split(".")[0])


# -- execution: serial or Dask ----------------------------------------------------------------
def _chunks(items: Iterator[InputItem], size: int) -> Iterator[list[InputItem]]:
    buf: list[InputItem] = []
    for it in items:
        buf.append(it)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def _chunk_seed(seed: int, items: list[InputItem]) -> int:
    """The chunk's noise seed: from the run seed and the chunk's inputs (any worker, same)."""
    return int(fingerprint(int(seed), [it.key for it in items], length=16), 16) % (2**63)


_PRE_SPAWN = "distributed.nanny.pre-spawn-environ"


@contextlib.contextmanager
def local_client(workers: int | None = None, *, dashboard: bool = False) -> Iterator[Any]:
    """A ``dask.distributed`` client on a new LocalCluster, as :func:`locate_batch` starts it.

    One single-threaded worker process per core (or ``workers``). Dask's nanny gives its
    workers ``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes glibc's mmap threshold
    at 128 KiB, so every field, grid and batch buffer becomes a fresh mmap whose pages
    fault in again: a worker spent ~60 % more time per query, most of it in the kernel.
    These workers keep glibc's defaults (the rest of Dask's worker environment stays).
    For a cluster started by hand, unset ``MALLOC_TRIM_THRESHOLD_`` in the workers'
    environment (or ``distributed.nanny.pre-spawn-environ`` in Dask's config) likewise.

    The workers' statistical profiler (a stack sample every 10 ms) and GIL monitor are
    off: they feed only the dashboard's profile and GIL pages, and when every core runs
    a worker their CPU comes out of the geolocation (~5 % per chunk with 2 workers on 2
    cores). The rest of the dashboard works; for the profile page, pass a client of
    your own.

    Examples
    --------
    >>> with local_client(2) as client:  # doctest: +SKIP
    ...     res = locate_batch("captions.txt", "out", scheduler=client)
    """
    import dask
    from distributed import Client, LocalCluster

    n = int(workers) if workers else max(1, len(os.sched_getaffinity(0))
                                         if hasattr(os, "sched_getaffinity") else
                                         (os.cpu_count() or 1))
    opts: dict[str, Any] = {"n_workers": n, "threads_per_worker": 1, "processes": True,
                            "dashboard_address": ":0" if dashboard else None}
    cfg = {f"{_PRE_SPAWN}.MALLOC_TRIM_THRESHOLD_": None,
           "distributed.worker.profile.enabled": False,
           "distributed.admin.system-monitor.gil.enabled": False}
    with dask.config.set(cfg), LocalCluster(**opts) as cluster, Client(cluster) as client:
        yield client


@contextlib.contextmanager
def _client(scheduler: Any, workers: int | None, dashboard: bool) -> Iterator[Any]:
    """A Dask client: given, at an address, or a LocalCluster sized to the machine."""
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    if address:
        with Client(address, timeout=30) as client:
            yield client
        return
    with local_client(workers, dashboard=dashboard) as client:
        yield client


def _run_dask(client: Any, runner: Runner, chunks: Iterator[list[InputItem]],
              settings: dict[str, Any], seed: int, on_result: Any) -> None:
    from distributed import as_completed

    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    import importlib.util

    hint = "" if importlib.util.find_spec("bokeh") else "; pip install bokeh for its pages"
    print(f"Dask: {n_workers} worker(s), dashboard {client.dashboard_link}{hint}",
          file=sys.stderr)
    # the model goes to every worker once; tasks refer to that copy
    [shared] = client.scatter([runner], broadcast=True, hash=False)
    pending: dict[Any, list[InputItem]] = {}
    ac = as_completed()
    limit = 2 * n_workers  # bounded: results in flight never grow with the collection

    def submit_next() -> bool:
        for chunk in chunks:
            fut = client.submit(_process_chunk, shared, [it.value for it in chunk], settings,
                                _chunk_seed(seed, chunk), pure=False)
            pending[fut] = chunk
            ac.add(fut)
            return True
        return False

    try:
        for _ in range(limit):
            if not submit_next():
                break
        for fut in ac:
            chunk = pending.pop(fut)
            res = fut.result()
            fut.release()
            on_result(chunk, res)
            submit_next()
    finally:
        for fut in pending:
            fut.cancel()


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- the end of a run -------------------------------------------------------------------------
def _finish(root: Path, reader: InputReader, run_info: dict[str, Any]) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet as pq

    from ..metrics import summarize_errors

    parts = _committed_parts(root / BATCH_FILES["parts"])
    # skipped.csv
    # inputs left out, then inputs geolocated without their (unusable) ground truth
    sk = pd.DataFrame([(s.row, s.input, s.reason)
                       for s in [*reader.skipped, *reader.truth_problems]],
                      columns=["row", "input", "reason"])
    with atomic_path(root / BATCH_FILES["skipped"], overwrite=True) as tmp:
        sk.to_csv(tmp, index=False)
    # predictions.gpkg, streamed part by part (memory: one part at a time)
    gpkg = root / BATCH_FILES["predictions"]
    errors: list[Any] = []
    counts: dict[tuple[str, str], int] = {}
    if parts:
        import geopandas as gpd
        import pyogrio

        with atomic_path(gpkg, overwrite=True) as tmp:
            for i, p in enumerate(parts.values()):
                g = gpd.read_parquet(p)
                pyogrio.write_dataframe(g, tmp, layer="predictions", driver="GPKG",
                                        append=i > 0, VERSION="1.2")
        for p in parts.values():
            t = pq.read_table(p, columns=["country", "iso_a3", "error_km"]).to_pandas()
            e = t["error_km"].to_numpy(np.float64)
            errors.append(e[np.isfinite(e)])
            for (c, iso), n in t.fillna({"country": "", "iso_a3": ""}).groupby(
                    ["country", "iso_a3"]).size().items():
                counts[(c, iso)] = counts.get((c, iso), 0) + int(n)
    elif gpkg.exists():
        gpkg.unlink()
    # countries.csv: predictions per country, and the expected number from the fields
    expected: dict[tuple[str, str], float] = {}
    for p in _committed_parts(root / BATCH_FILES["country_parts"]).values():
        t = pq.read_table(p, columns=["country", "iso_a3", "probability"]).to_pandas()
        for (c, iso), v in t.groupby(["country", "iso_a3"])["probability"].sum().items():
            expected[(c, iso)] = expected.get((c, iso), 0.0) + float(v)
    names = sorted(set(counts) | set(expected), key=lambda k: (-counts.get(k, 0),
                                                                -expected.get(k, 0.0), k))
    total = sum(counts.values())
    table = pd.DataFrame({
        "country": [c or NO_COUNTRY for c, _ in names],
        "iso_a3": [iso for _, iso in names],
        "n_predicted": [counts.get(k, 0) for k in names],
        "share": [counts.get(k, 0) / total if total else 0.0 for k in names],
    })
    if expected:
        table["expected"] = [expected.get(k, 0.0) for k in names]
    with atomic_path(root / BATCH_FILES["countries"], overwrite=True) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    _summary_map(root, parts)
    # accuracy.json
    errs = np.concatenate(errors) if errors else np.zeros(0)
    acc = summarize_errors(errs) if errs.size else None
    acc_path = root / BATCH_FILES["accuracy"]
    if acc is not None:
        _write_json(acc_path, acc)
    elif acc_path.exists():
        acc_path.unlink()
    return {"n_done": total, "accuracy": acc}


def _summary_map(root: Path, parts: dict[int, Path]) -> None:
    """``map.png``: every prediction on a world map, coloured by confidence (needs matplotlib)."""
    import importlib.util

    target = root / BATCH_FILES["map"]
    if not parts or importlib.util.find_spec("matplotlib") is None:
        if target.exists():
            target.unlink()
        return
    import pyarrow.parquet as pq
    from matplotlib.figure import Figure

    from ..geo import countries

    cols = [pq.read_table(p, columns=["lat", "lon", "confidence"]) for p in parts.values()]
    lat = np.concatenate([c.column("lat").to_numpy() for c in cols])
    lon = np.concatenate([c.column("lon").to_numpy() for c in cols])
    conf = np.concatenate([c.column("confidence").to_numpy() for c in cols])
    fig = Figure(figsize=(12, 6.4), layout="constrained")
    ax = fig.subplots()
    countries("lowres").boundary.plot(ax=ax, color="0.55", linewidth=0.4)
    order = np.argsort(conf)  # confident points on top
    sc = ax.scatter(lon[order], lat[order], c=conf[order], s=max(1.0, 30.0 / np.sqrt(
        max(len(lat), 1) / 100.0)), cmap="viridis", vmin=0.0, vmax=1.0, linewidths=0)
    fig.colorbar(sc, ax=ax, shrink=0.7, label="confidence")
    ax.set(xlim=(-180, 180), ylim=(-90, 90), aspect="equal", xlabel="longitude (°)",
           ylabel="latitude (°)", title=f"{len(lat):,} predictions (EPSG:4326)")
    with atomic_path(target, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# -- the public entry point -----------------------------------------------------------------
def locate_batch(
    source: Any,
    out_dir: str | os.PathLike,
    *,
    model: Any = None,
    encoder: Any = None,
    backbone: Any = None,
    column: str | None = None,
    fields: bool = False,
    cogs: bool = False,
    resolution: float = 1.0,
    n_samples: int = 32,
    views: int = 8,
    sampler: Literal["ddpm", "ddim", "dpm++"] = "dpm++",
    steps: int | None = None,
    seed: int = 0,
    names: bool = True,
    chunk_size: int = 64,
    scheduler: Any = None,
    workers: int | None = None,
    countries_scale: Literal["10m", "lowres"] = "10m",
    min_country_prob: float = 1e-4,
    overwrite: bool = False,
    retrain_default: bool = False,
    progress: bool = True,
    dashboard: bool = True,
) -> BatchResult:
    """Geolocate a whole collection into ``out_dir``, streaming and resumable.

    Parameters
    ----------
    source
        A folder of images (recursive), a text file (one description per line), a
        CSV/TSV/Parquet/GeoParquet table (with ``column``) or a list of strings (see
        :mod:`geodiffloc.pipeline.inputs`).
    out_dir
        Output folder (see the module notes for its files). Created if missing.
    model, encoder, backbone
        Any model ``locate`` accepts (:func:`~geodiffloc.pipeline.models.resolve_runner`):
        ``None``/``"default"``, a checkpoint path, ``"geoclip-official"``,
        ``"locdiff-h:PATH"``, or an object; its encoder; GeoCLIP's image backbone.
    column
        The table column with the texts or image paths (default: found by name).
    fields
        Also write the probability fields (``fields.zarr``) and the per-country masses.
    cogs
        With ``fields``: also one Cloud-Optimized GeoTIFF per input,
        ``cogs/<key>.tif`` (density per km², like ``locate``'s raster).
    resolution
        Cell size of the fields in degrees (``180 / resolution`` a whole number).
    names
        Text inputs: read their place names too, as :func:`~geodiffloc.pipeline.locate`
        does (the predictions gain ``place``, ``names`` and ``source`` columns).
    n_samples, views, sampler, steps, seed
        LocDiff's ensemble and sampler, as in :func:`~geodiffloc.pipeline.locate`. Each
        chunk's noise is seeded from ``seed`` and the chunk's input keys, so a chunk gives
        the same result on any worker.
    chunk_size
        Inputs per task (and per GeoParquet part).
    scheduler
        ``None``: ``$DASK_SCHEDULER_ADDRESS`` if set, else a ``LocalCluster`` sized to
        the machine (:func:`local_client`; in this process without
        ``dask[distributed]``); an address
        (``"tcp://host:8786"``) or a ``distributed.Client``: that cluster; ``"serial"``:
        in this process, no Dask.
    workers
        Workers of the local cluster (default: one per CPU core).
    countries_scale, min_country_prob
        Natural Earth polygons of the country columns and tables; per-query country
        masses below ``min_country_prob`` are left out of ``countries.parquet``.
    overwrite
        Start afresh: delete this function's outputs in ``out_dir`` first (nothing else).
    retrain_default
        Retrain the built-in default model first.
    progress
        A tqdm bar over inputs on stderr.
    dashboard
        Serve (and print the link of) the local cluster's Dask dashboard.

    Returns
    -------
    BatchResult

    Raises
    ------
    FileExistsError
        ``out_dir`` holds a run of another model or other settings, or files that are not
        a batch run, and ``overwrite`` is false.
    ValueError
        A bad setting, an unknown model, a source of the wrong kind for the model.
    FileNotFoundError
        A source or checkpoint that does not exist.

    Examples
    --------
    >>> res = locate_batch("captions.parquet", "out", column="caption")  # doctest: +SKIP
    >>> res.predictions().head()  # doctest: +SKIP
    >>> locate_batch("photos/", "out2", model="geoclip-official", fields=True,
    ...              scheduler="tcp://10.0.0.5:8786")  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    if int(n_samples) < 1 or int(views) < 1 or int(chunk_size) < 1:
        raise ValueError(f"n_samples, views and chunk_size must be >= 1; got {n_samples}, "
                         f"{views}, {chunk_size}.")
    if not (resolution > 0 and abs(180.0 / resolution - round(180.0 / resolution)) < 1e-9):
        raise ValueError(f"resolution must divide 180 degrees into whole cells (e.g. 1, 0.5); "
                         f"got {resolution}.")
    if cogs and not fields:
        raise ValueError("cogs=True (CLI: --cogs) writes the probability fields as GeoTIFFs; "
                         "add fields=True (CLI: --fields).")
    if workers is not None and int(workers) < 1:
        raise ValueError(f"workers must be >= 1; got {workers}.")
    from .._optional import require

    if scheduler is None and not os.environ.get("DASK_SCHEDULER_ADDRESS") and not \
            _installed("distributed"):
        log.info("dask[distributed] is not installed: running in this process")
        scheduler = "serial"
    if scheduler != "serial":
        require("distributed", extra="batch", feature="batch runs on Dask (scheduler=)")
    if fields:
        require("zarr", extra="batch", feature="the probability cube (fields=True)")
    root = Path(out_dir)
    with stage("loading the model"):
        runner = resolve_runner(model, encoder=encoder, backbone=backbone, progress=progress,
                                retrain_default=retrain_default)
    if runner.modality not in ("text", "image"):
        raise ValueError(
            f"the model {runner.label!r} has no encoder for raw inputs (a GeoCLIP without an "
            "image backbone); pass backbone= (CLI: --backbone), e.g. a local open_clip "
            "checkpoint of the backbone it was trained with.")
    reader = InputReader(source, modality=runner.modality, column=column)
    settings = {"resolution": float(resolution), "n_samples": int(n_samples),
                "views": int(views), "sampler": sampler, "steps": steps, "seed": int(seed),
                "fields": bool(fields), "cogs": bool(cogs), "names": bool(names),
                "countries_scale": countries_scale, "min_country_prob": float(min_country_prob)}
    run_info = {"format": FORMAT, "geodiffloc": __version__, "model": runner.label,
                "model_kind": runner.kind, "model_fingerprint": runner.fingerprint,
                "encoder": getattr(runner.encoder, "name", None), "settings": settings}
    with _exclusive(root):  # one run at a time writes into out_dir
        _prepare(root, run_info, overwrite)
        done, next_part, next_field = _recover(root)
        _write_json(root / BATCH_FILES["run"], {**run_info, "complete": False})
        writer = _Writer(root, settings, next_part, next_field, runner.label)
        resumed = 0

        def todo() -> Iterator[InputItem]:
            nonlocal resumed
            for it in reader:
                if it.key in done:
                    resumed += 1
                    continue
                yield it

        timings: dict[str, float] = {}
        total = len(source) if isinstance(source, list | tuple) else None
        with tqdm(total=total, unit="input", desc="geolocating", disable=not progress,
                  file=sys.stderr) as bar:

            def on_result(chunk: list[InputItem], res: dict[str, Any]) -> None:
                writer.write(chunk, res)
                if "first_result_s" not in timings:
                    timings["first_result_s"] = time.perf_counter() - t0
                bar.update(len(chunk))
                bar.set_postfix(skipped=len(reader.skipped), resumed=resumed, refresh=False)

            chunks = _chunks(todo(), int(chunk_size))
            with stage("geolocating the inputs"):
                if scheduler == "serial":
                    for chunk in chunks:
                        on_result(chunk, _process_chunk(runner, [it.value for it in chunk],
                                                        settings, _chunk_seed(seed, chunk)))
                else:
                    with _client(scheduler, workers, dashboard) as client:
                        _run_dask(client, runner, chunks, settings, int(seed), on_result)
        with stage("writing the GeoPackage and the summaries"):
            summary = _finish(root, reader, run_info)
        if reader.truth_problems:
            first = reader.truth_problems[0]
            log.warning("%d input(s) were geolocated but not scored: their ground truth is "
                        "unusable (first: row %s, %s); see %s", len(reader.truth_problems),
                        first.row, first.reason, root / BATCH_FILES["skipped"])
        timings["total_s"] = time.perf_counter() - t0
        _write_json(root / BATCH_FILES["run"], {
            **run_info, "complete": True, "n_done": summary["n_done"],
            "n_skipped": len(reader.skipped), "n_bad_truth": len(reader.truth_problems),
            "last_run": {"n_new": writer.n_written,
                                                           "n_resumed": resumed, **timings}})
    paths = {k: root / n for k, n in BATCH_FILES.items() if (root / n).exists()}
    return BatchResult(out_dir=root, paths=paths, n_new=writer.n_written,
                       n_done=summary["n_done"], n_resumed=resumed,
                       n_skipped=len(reader.skipped), accuracy=summary["accuracy"],
                       timings=timings, n_bad_truth=len(reader.truth_problems))
