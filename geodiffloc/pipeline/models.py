"""One way to name a model for ``locate``: every family behind one small runner.

``locate`` (one call, in memory) and ``locate_batch`` (a collection, streamed, on
Dask) accept the same ``model=``:

``None`` / ``"default"`` / ``"locdiff"``
    The built-in place-description LocDiff (trained and cached on first use).
a path to a ``.safetensors`` checkpoint
    A LocDiff or a GeoCLIP checkpoint (the family is read from the file).
``"locdiff:PATH"`` / ``"geoclip:PATH"``
    The same, with the family named.
``"geoclip-official"``
    GeoCLIP's official pretrained location encoder, image head and MP16 gallery (from
    the installed ``geoclip`` package), with the open_clip ViT-L/14 image backbone
    (``backbone=`` a local checkpoint or an encoder; else open_clip's hub weights if
    they are cached or reachable).
``"locdiff-h:PATH"``
    LocDiff-H: the LocDiff checkpoint at ``PATH`` proposes candidates, the official
    GeoCLIP reranks the gallery points near them (default density rule, see
    :class:`~geodiffloc.LocDiffH`; both must read the same images).
``"g3:PATH"``
    A G3 checkpoint (with its reference database); candidates from the offline
    retrieval generator, verified by the aligned query–GPS similarity.
``"hierloc:PATH"`` (or a HierLoc checkpoint path)
    A :class:`~geodiffloc.HierLoc`: the most probable leaf entity (its centroid) per
    input, its probability as the confidence, the entity and its ancestors as
    ``place`` ("city, admin-2, admin-1, country"), and the leaf masses spread over
    the grid as the field.
a model object
    A :class:`~geodiffloc.LocDiff`, :class:`~geodiffloc.GeoCLIP`,
    :class:`~geodiffloc.LocDiffH` or :class:`~geodiffloc.HierLoc`.

:func:`resolve_runner` turns any of these into a :class:`Runner`: the model, its
encoder, the input modality, a fingerprint that keys resumable outputs, and one
method, :meth:`Runner.predict`, that gives the point predictions and (on request)
the probability fields of a list of inputs. A runner built from a name or a path
pickles as that recipe, so a Dask worker loads the model itself, once.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._fingerprint import fingerprint, module_fingerprint

__all__ = ["MODEL_NAMES", "Runner", "resolve_runner"]

#: The model names ``--model`` / ``model=`` accept (besides checkpoint paths and objects).
MODEL_NAMES: tuple[str, ...] = ("default", "locdiff", "locdiff-h", "geoclip",
                                "geoclip-official", "hierloc", "g3")

#: The image backbone of the official GeoCLIP (open_clip config / pretrained tag).
OFFICIAL_BACKBONE = ("ViT-L-14", "openai")

# runners loaded from a recipe in this process (a Dask worker loads each model once)
_LOADED: dict[Any, Runner] = {}


def _unknown(spec: str) -> ValueError:
    return ValueError(
        f"unknown model {spec!r}: give 'default', a checkpoint path (.safetensors), or one of "
        f"{', '.join(MODEL_NAMES)} (locdiff:PATH, geoclip:PATH, locdiff-h:PATH, hierloc:PATH "
        "and g3:PATH name a checkpoint)."
    )


def _checkpoint_family(path: Path) -> str:
    """``"geoclip"`` / ``"hierloc"`` for a GeoCLIP / HierLoc checkpoint, else ``"locdiff"``.

    Anything that is not clearly a GeoCLIP checkpoint (a LocDiff one, a damaged or
    foreign file) goes to ``LocDiff.load``, whose checks name what is wrong with it.
    """
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        fmt = meta.get("format") or json.loads(meta.get("config", "{}")).get("format", "")
    except Exception:  # unreadable: LocDiff.load says why
        return "locdiff"
    if str(fmt).startswith("geodiffloc.g3"):
        return "g3"
    if str(fmt).startswith("geodiffloc.hierloc"):
        return "hierloc"
    return "geoclip" if str(fmt).startswith("geodiffloc.geoclip") else "locdiff"


def _parse(spec: str) -> tuple[str, str | None]:
    """A model string -> (family, checkpoint path or None)."""
    text = spec.strip()
    low = text.lower()
    if low in ("default", "locdiff"):
        return "default", None
    if low == "geoclip-official":
        return "geoclip-official", None
    if low == "hierloc" or low.startswith("hierloc:"):
        path = text[len("hierloc:"):] if ":" in low else ""
        if not path:
            raise ValueError(f"model {spec!r} needs a HierLoc checkpoint: hierloc:PATH (train "
                             "one with `geodiffloc train hierloc`).")
        if not Path(path).is_file():
            raise FileNotFoundError(f"model checkpoint {path!r} (in {spec!r}) does not exist.")
        return "hierloc", path
    for fam in ("locdiff-h", "locdiff", "geoclip", "g3"):
        if low.startswith(fam + ":"):
            path = text[len(fam) + 1:]
            if not Path(path).is_file():
                raise FileNotFoundError(f"model checkpoint {path!r} (in {spec!r}) does not "
                                        "exist.")
            return fam, path
    if low in ("geoclip", "locdiff-h"):
        need = ("a GeoCLIP checkpoint: geoclip:PATH, or 'geoclip-official' for the "
                "pretrained weights" if low == "geoclip" else
                "the LocDiff checkpoint whose candidates GeoCLIP reranks: locdiff-h:PATH "
                "(a LocDiff trained on the same image backbone as the official GeoCLIP)")
        raise ValueError(f"model {spec!r} needs {need}.")
    if low == "g3":
        raise ValueError(f"model {spec!r} needs a G3 checkpoint: g3:PATH (geodiffloc train g3 "
                         "exports one with its reference database).")
    if Path(text).is_file():
        return _checkpoint_family(Path(text)), text
    if Path(text).suffix.lower() in (".safetensors", ".ckpt", ".pt", ".pth") or os.sep in text:
        raise FileNotFoundError(f"model checkpoint {text!r} does not exist.")
    raise _unknown(spec)


def _official_geoclip(backbone: Any, device: Any = None) -> Any:
    """GeoCLIP.from_official with a backbone that is really there (or one clear error)."""
    from ..models.geoclip import GeoCLIP

    try:
        model = GeoCLIP.from_official(backbone=None, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise ValueError(f"geoclip-official: {err} (pip install geoclip ships the official "
                         "weights).") from None
    if backbone is None or isinstance(backbone, str | os.PathLike):
        from ..encoders.openclip import OpenCLIPImageEncoder

        name, tag = OFFICIAL_BACKBONE
        source = tag if backbone is None else os.fspath(backbone)
        try:
            backbone = OpenCLIPImageEncoder(name, source, device=device)
        except Exception as err:  # open_clip / huggingface_hub raise many kinds
            first = str(err).strip().splitlines()[0][:160] if str(err).strip() else \
                type(err).__name__
            raise ValueError(
                f"geoclip-official needs the CLIP {name} image backbone, which could not be "
                f"loaded from {source!r} ({first}). Download it once on a machine with network "
                "access (python -c \"import open_clip; open_clip.create_model('ViT-L-14', "
                "pretrained='openai')\"), or give a local open_clip checkpoint: --backbone "
                "PATH (Python: backbone=PATH)."
            ) from None
    model.set_backbone(backbone)
    return model


class Runner:
    """A model, its encoder and one ``predict`` for every family.

    Build it with :func:`resolve_runner`.

    Attributes
    ----------
    kind
        ``"locdiff"``, ``"geoclip"``, ``"locdiff-h"``, ``"hierloc"`` or ``"g3"``.
    model, encoder
        The model object and the encoder of raw inputs (GeoCLIP: its image backbone).
    modality
        ``"text"`` or ``"image"``: what the inputs are.
    label
        How the model was named (``"default"``, a path, ``"geoclip-official"``, a class).
    """

    def __init__(self, kind: str, model: Any, encoder: Any, label: str,
                 recipe: tuple[Any, ...] | None = None) -> None:
        self.kind, self.model, self.encoder, self.label = kind, model, encoder, label
        self._recipe = recipe
        self._fp: str | None = None

    def __reduce__(self) -> Any:
        # built from a name or a path: ship the recipe; the receiving process loads the
        # model once (see _LOADED) instead of unpickling megabytes of weights per task
        if self._recipe is not None:
            return (_load_recipe, self._recipe)
        return (Runner, (self.kind, self.model, self.encoder, self.label, None))

    @property
    def modality(self) -> str:
        enc = self.encoder
        if enc is None and self.kind == "geoclip":
            return "image" if getattr(self.model, "backbone_spec", None) else "embedding"
        return str(getattr(enc, "modality", "text"))

    @property
    def fingerprint(self) -> str:
        """Content digest of the weights and encoder: keys resumable batch outputs."""
        if self._fp is None:
            enc = getattr(self.encoder, "name", None) or getattr(self.model, "backbone_spec",
                                                                 None)
            if self.kind == "locdiff-h":
                parts: list[Any] = [module_fingerprint(self.model.locdiff),
                                    module_fingerprint(self.model.geoclip),
                                    self.model.radius_km, self.model.n_candidates,
                                    self.model.rerank, self.model.bandwidth_km]
            else:
                parts = [module_fingerprint(self.model)]
            if self.kind in ("geoclip", "locdiff-h"):
                gc = self.model if self.kind == "geoclip" else self.model.geoclip
                parts.append(str(gc.resolve_gallery().key))
            if self.kind == "g3" and self.model.references is not None:
                parts.append(self.model.references.fingerprint())
            self._fp = fingerprint(self.kind, enc, *parts, length=24)
        return self._fp

    def describe(self) -> str:
        """One line: family, how it was named, encoder."""
        enc = getattr(self.encoder, "name", None) or "(no encoder)"
        return f"{self.kind} ({self.label}; inputs: {self.modality}, encoder {enc})"

    def predict(self, items: list[Any], *, field: bool = False, resolution: float = 1.0,
                n_samples: int = 32, views: int = 8, sampler: str = "dpm++",
                steps: int | None = None, seed: int = 0, names: bool = True,
                progress: bool = False) -> tuple[Any, Any]:
        """Point predictions (and probability fields) of a list of raw inputs.

        Parameters
        ----------
        items
            Descriptions (text models) or image paths (image models).
        field
            Also return the probability fields (cell masses on the global grid).
        resolution
            Grid cell size in degrees.
        n_samples, views, sampler, steps
            LocDiff's ensemble: samples per input, augmented views per image, sampler.
        seed
            Seed of the diffusion noise (LocDiff, LocDiff-H).
        names
            A LocDiff on texts: read the place names in them too
            (:class:`~geodiffloc.models.toponymic.ToponymGeolocator`); the predictions
            then carry ``place``, ``names`` and ``source`` columns.
        progress
            Progress bars.

        Returns
        -------
        (GeoDataFrame, DataArray or None)
            One row per item with at least ``lat``, ``lon``, ``confidence`` (EPSG:4326);
            the fields as ``("query", "lat", "lon")`` cell masses (each summing to 1).

        Examples
        --------
        >>> r = resolve_runner(model, encoder=enc)  # doctest: +SKIP
        >>> preds, fld = r.predict(["Kyoto temple"], field=True, resolution=2.0)  # doctest: +SKIP
        """
        if self.kind == "geoclip":
            return self._geoclip(items, field, resolution, progress)
        if self.kind == "g3":
            return self._g3(items, field, resolution)
        if self.kind == "hierloc":
            return self._hierloc(items, field, resolution)
        if self.kind == "locdiff-h":
            return self._hybrid(items, field, resolution, n_samples, sampler, steps, seed,
                                progress)
        return self._locdiff(items, field, resolution, n_samples, views, sampler, steps, seed,
                             progress, names=names)

    def _ensemble(self, n_samples: int, views: int) -> tuple[int, dict[str, int]]:
        if self.modality == "image" and views > 1:
            return int(views), {"n_views": int(views),
                                "samples_per_view": max(1, math.ceil(n_samples / views))}
        return 1, {"n_views": int(n_samples), "samples_per_view": 1}

    def _locdiff(self, items: list[Any], field: bool, resolution: float, n_samples: int,
                 views: int, sampler: str, steps: int | None, seed: int, progress: bool,
                 names: bool = True) -> tuple[Any, Any]:
        model = self.model
        n_embed, ensemble = self._ensemble(n_samples, views)
        cond = model.embed_views(items, n_views=n_embed, encoder=self.encoder)
        if n_embed == 1:
            cond = cond[:, 0]
        kw: dict[str, Any] = {**ensemble, "sampler": sampler, "steps": steps, "seed": int(seed)}
        texts = [str(t) for t in items] if names and self.modality == "text" else None
        return predict_and_map(model, cond, kw, float(resolution), progress, field=field,
                               texts=texts, encoder=self.encoder)

    def _geoclip(self, items: list[Any], field: bool, resolution: float, progress: bool,
                 ) -> tuple[Any, Any]:
        gc = self.model
        if self.encoder is not None and self.encoder is not getattr(gc, "_backbone", None):
            q = gc.embed_queries(self.encoder.encode(items), "backbone")
        else:
            q = gc.embed_queries(items, "images", progress=progress)
        preds = gc.predict(q, input_kind="head", progress=progress)
        preds = preds.drop(columns=["query"]).rename(columns={"prob": "confidence"})
        fld = gc.probability_map(q, resolution=resolution, input_kind="head",
                                 progress=progress) if field else None
        return preds.reset_index(drop=True), fld

    def _g3(self, items: list[Any], field: bool, resolution: float) -> tuple[Any, Any]:
        g3 = self.model
        x = self.encoder.encode(items) if self.encoder is not None else items
        cand = g3.candidates(x)
        preds = g3.predict(x, candidates=cand).drop(columns=["query"])
        fld = g3.probability_map(x, resolution=resolution, candidates=cand) if field else None
        return preds.reset_index(drop=True), fld

    def _hierloc(self, items: list[Any], field: bool, resolution: float) -> tuple[Any, Any]:
        """HierLoc: the top leaf entity per item, and the leaf masses spread over the grid."""
        model = self.model
        if self.encoder is None:
            raise ValueError("this HierLoc has no encoder for raw inputs; pass encoder= (the "
                             "encoder of its training embeddings).")
        x = self.encoder.encode(items, batch_size=64, progress=False)
        preds = model.predict(x)
        names = [preds[lv].to_numpy(object) for lv in reversed(model.hierarchy.level_names)
                 if lv in preds]
        place = [", ".join(dict.fromkeys(str(v[i]) for v in names if v[i]))
                 for i in range(len(preds))]
        preds = preds.rename(columns={"prob": "confidence"}).assign(place=place)
        preds = preds[["lat", "lon", "confidence", "place", "entity_id", "geometry"]]
        fld = model.probability_map(x, resolution=resolution) if field else None
        return preds.reset_index(drop=True), fld

    def _hybrid(self, items: list[Any], field: bool, resolution: float, n_samples: int,
                sampler: str, steps: int | None, seed: int, progress: bool,
                ) -> tuple[Any, Any]:
        h = self.model
        preds = h.predict(items, items, encoder=self.encoder, geoclip_input_kind="images",
                          sampler=sampler, steps=steps, seed=int(seed), progress=progress)
        fld = None
        if field:  # LocDiff's own field: the candidates' density, not GeoCLIP's retrieval
            fld = h.locdiff.probability_map(items, resolution=resolution, n_views=n_samples,
                                            encoder=self.encoder, sampler=sampler, steps=steps,
                                            seed=int(seed), progress=progress)
        return preds, fld


def _sample_once(model: Any, cond: Any, kw: dict[str, Any], progress: bool) -> tuple[Any, Any]:
    """Draw every query's samples once, in chunks, with a progress bar over queries."""
    import torch
    from tqdm.auto import tqdm

    per_query = int(kw["n_views"]) * int(kw["samples_per_view"])
    chunk = max(1, 256 // per_query)  # ~256 latents denoised together
    gen = torch.Generator().manual_seed(int(kw["seed"]))
    coeffs, samples = [], []
    n = int(cond.shape[0])
    with tqdm(total=n, desc="sampling", unit="query", disable=not progress) as bar:
        for q0 in range(0, n, chunk):
            c, s = model.sample_locations(
                cond[q0:q0 + chunk], n_views=kw["n_views"],
                samples_per_view=kw["samples_per_view"], sampler=kw["sampler"],
                steps=kw["steps"], generator=gen)
            coeffs.append(c)
            samples.append(s)
            bar.update(int(c.shape[0]))
    return torch.cat(coeffs), torch.cat(samples)


def predict_and_map(model: Any, cond: Any, kw: dict[str, Any], resolution: float,
                    progress: bool, *, field: bool = True, texts: list[str] | None = None,
                    encoder: Any = None) -> tuple[Any, Any]:
    """LocDiff's predictions and probability field from ONE set of samples per query.

    With ``texts``, the place names in them are read too
    (:class:`~geodiffloc.models.toponymic.ToponymGeolocator`).
    """
    if not all(hasattr(model, a) for a in ("sample_locations", "predictions_from_samples",
                                           "field_from_samples")):
        # A model without the sample-once API samples twice, as before.
        preds = model.predict(cond, aggregate="mixture_mode", **kw)
        return preds, (model.probability_map(cond, resolution=resolution, **kw)
                       if field else None)
    coeffs, samples = _sample_once(model, cond, kw, progress)
    if field and hasattr(model, "predictions_and_field"):  # one synthesis serves both
        preds, fld = model.predictions_and_field(
            coeffs, samples, resolution=resolution, aggregate="mixture_mode",
            sampler=kw["sampler"], steps=kw["steps"], seed=kw["seed"])
    else:
        preds = model.predictions_from_samples(coeffs, samples, aggregate="mixture_mode")
        fld = model.field_from_samples(coeffs, resolution=resolution, sampler=kw["sampler"],
                                       steps=kw["steps"], seed=kw["seed"]) if field else None
    if texts is not None:
        from ..models.toponymic import ToponymGeolocator

        preds, fld = ToponymGeolocator(model, encoder).refine(texts, coeffs, preds, fld)
    return preds, fld


def _load_recipe(family: str, path: str | None, backbone: Any) -> Runner:
    """Rebuild (once per process) the runner a recipe names."""
    key = (family, path, None if backbone is None else str(backbone))
    if key not in _LOADED:
        _LOADED[key] = _build(family, path, backbone, progress=False)
    return _LOADED[key]


def _encoder_for(model: Any) -> Any:
    name = model.encoder_record.get("name")
    if not name or name == "precomputed":
        raise ValueError(
            "this model was trained on precomputed embeddings and does not record its "
            "encoder; pass encoder= (the encoder that made its training embeddings)."
        )
    from ..encoders import encoder_from_name

    return encoder_from_name(name)


def _build(family: str, path: str | None, backbone: Any, *, progress: bool,
           retrain: bool = False, encoder: Any = None) -> Runner:
    recipe = (family, path, backbone)
    if family == "default":
        from .default_model import default_model

        model, enc = default_model(retrain=retrain, progress=progress)
        return Runner("locdiff", model, enc, "default", recipe)
    if family == "locdiff":
        from ..models.locdiff import LocDiff

        model = LocDiff.load(path)  # type: ignore[arg-type]
        enc = encoder if encoder is not None else _encoder_for(model)
        return Runner("locdiff", model, enc, str(path), recipe)
    if family == "geoclip":
        from ..models.geoclip import GeoCLIP

        model = GeoCLIP.load(path)  # type: ignore[arg-type]
        if backbone is not None:
            model.set_backbone(backbone if not isinstance(backbone, os.PathLike)
                               else os.fspath(backbone))
        return Runner("geoclip", model, getattr(model, "_backbone", None), str(path), recipe)
    if family == "g3":
        from ..models.g3 import G3

        model = G3.load(path)  # type: ignore[arg-type]
        enc = encoder if encoder is not None else _encoder_for(model)
        model.set_encoder(enc)
        return Runner("g3", model, enc, str(path), recipe)
    if family == "hierloc":
        from ..models.hierloc import HierLoc

        model = HierLoc.load(path)  # type: ignore[arg-type]
        enc = encoder if encoder is not None else _encoder_for(model)
        return Runner("hierloc", model, enc, f"hierloc:{path}", recipe)
    if family == "geoclip-official":
        model = _official_geoclip(backbone)
        return Runner("geoclip", model, model.backbone, "geoclip-official", recipe)
    if family == "locdiff-h":
        from ..models.locdiff import LocDiff, LocDiffH

        ld = LocDiff.load(path)  # type: ignore[arg-type]
        gc = _official_geoclip(backbone)
        enc = gc.backbone if encoder is None else encoder
        return Runner("locdiff-h", LocDiffH(ld, gc), enc, f"locdiff-h:{path}", recipe)
    raise _unknown(family)


def resolve_runner(model: Any = None, *, encoder: Any = None, backbone: Any = None,
                   progress: bool = True, retrain_default: bool = False) -> Runner:
    """Any ``model=`` (name, checkpoint path, object, ``None``) -> a :class:`Runner`.

    Parameters
    ----------
    model
        See the module notes: ``None``/``"default"``/``"locdiff"``, a checkpoint path,
        ``"locdiff:PATH"``, ``"geoclip:PATH"``, ``"geoclip-official"``,
        ``"locdiff-h:PATH"``, ``"hierloc:PATH"``, ``"g3:PATH"``, or a LocDiff / GeoCLIP /
        LocDiffH / HierLoc / G3 object.
    encoder
        The encoder of raw inputs (default: rebuilt from the name the model recorded;
        for GeoCLIP: its backbone). An encoder *object* makes the runner pickle as
        objects rather than as a recipe.
    backbone
        GeoCLIP's image backbone for ``geoclip-official`` / ``locdiff-h`` / GeoCLIP
        checkpoints: a local open_clip ViT-L/14 checkpoint path or an encoder.
    progress
        Progress bars while the default model trains on first use.
    retrain_default
        Retrain the built-in default model.

    Returns
    -------
    Runner

    Raises
    ------
    ValueError
        An unknown name (the valid ones are listed), a checkpoint of another kind, a
        model/encoder mismatch, or a backbone that cannot be loaded.
    FileNotFoundError
        A checkpoint path that does not exist.

    Examples
    --------
    >>> resolve_runner("no-such-model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown model 'no-such-model': give 'default', a checkpoint path ...
    """
    from ..encoders.base import check_encoder_matches

    if isinstance(model, Runner):
        return model
    if model is None or isinstance(model, str | os.PathLike):
        family, path = _parse("default" if model is None else os.fspath(model))
        runner = _build(family, path, backbone, progress=progress, retrain=retrain_default,
                        encoder=encoder)
        if encoder is None:
            return runner
        # an explicit encoder object: checked, used, and shipped as an object
        if runner.kind == "geoclip":
            runner.model.set_backbone(encoder)
        elif runner.kind == "g3":
            runner.model.set_encoder(encoder)
        elif runner.kind == "hierloc":
            check_encoder_matches(runner.model.encoder_record, encoder)
        else:
            ld = runner.model if runner.kind == "locdiff" else runner.model.locdiff
            check_encoder_matches(ld.encoder_record, encoder)
        return Runner(runner.kind, runner.model, encoder, runner.label)
    kind = _object_kind(model)
    if kind == "g3":
        encoder = encoder if encoder is not None else (model._encoder or _encoder_for(model))
        model.set_encoder(encoder)
        return Runner(kind, model, encoder, type(model).__name__)
    if kind in ("locdiff", "hierloc"):
        if encoder is None:
            encoder = getattr(model, "_encoder", None) or _encoder_for(model)
        check_encoder_matches(model.encoder_record, encoder)
    elif kind == "locdiff-h":
        encoder = encoder or model.geoclip.backbone
    elif encoder is not None:
        model.set_backbone(encoder)
    elif getattr(model, "_backbone", None) is not None:
        encoder = model._backbone
    return Runner(kind, model, encoder, type(model).__name__)


def _object_kind(model: Any) -> str:
    if hasattr(model, "build_index") and hasattr(model, "candidates"):
        return "g3"
    if hasattr(model, "locdiff") and hasattr(model, "geoclip"):
        return "locdiff-h"
    if hasattr(model, "sample_locations") and hasattr(model, "encoder_record"):
        return "locdiff"
    if hasattr(model, "embed_queries") and hasattr(model, "gallery_embeddings"):
        return "geoclip"
    if hasattr(model, "entity_logits") and hasattr(model, "hierarchy"):
        return "hierloc"
    raise ValueError(
        f"model must be a LocDiff, GeoCLIP, LocDiffH, HierLoc or G3 object, a checkpoint path or "
        "one of "
        f"{', '.join(MODEL_NAMES)}; got {type(model).__name__}."
    )


def field_values(fld: Any) -> np.ndarray:
    """A field's ``(query, lat, lon)`` values as float32 (what the Zarr cube stores)."""
    return np.asarray(fld.values, dtype=np.float32)
