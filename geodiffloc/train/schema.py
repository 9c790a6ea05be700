"""The training-config schema as pydantic models (one class per section).

:func:`~geodiffloc.train.config.load_config` validates a config with these classes and
turns pydantic's errors into one-line ``ValueError`` messages that name the key and the
allowed values. Model sections take their defaults from the model constructors, so a
default changed in :class:`~geodiffloc.LocDiff` or :class:`~geodiffloc.GeoCLIP` is the
config's default too.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..models.g3 import G3
from ..models.g3.descriptions import DESCRIPTION_LEVELS
from ..models.geoclip import GeoCLIP
from ..models.hierloc import HierLoc
from ..models.locdiff import DiffusionConfig, LocDiff
from ..models.locdiff.diffusion import RECOMMENDED_BANK, RECOMMENDED_LOSS, diffusion_loss

__all__ = ["CONFIGS", "FAMILIES", "SOURCES", "G3Config", "GeoCLIPConfig", "HierLocConfig",
           "LocDiffConfig", "loss_options"]

FAMILIES = ("locdiff", "geoclip", "hierloc", "g3")
SOURCES = ("gazetteer", "feature_store", "arrays", "csv", "folder")
PRECISIONS = ("32-true", "32", "16-mixed", "bf16-mixed")


def _ctor(cls: type, name: str) -> Any:
    """A constructor default (lists for tuples, as YAML writes them)."""
    d = inspect.signature(cls).parameters[name].default
    return list(d) if isinstance(d, tuple) else d


def loss_options() -> tuple[str, ...]:
    """Keyword options of the LocDiff loss that a config's ``loss`` section may set.

    Read from the signatures of :meth:`LocDiff.training_loss` and
    :func:`~geodiffloc.models.locdiff.diffusion.diffusion_loss`, so a new loss option
    is configurable as soon as the loss accepts it.
    """
    own = ("anchor_sampler", "targets", "generator", "loss_options")
    names = set()
    for fn in (LocDiff.training_loss, diffusion_loss):
        for p in inspect.signature(fn).parameters.values():
            if p.kind is p.KEYWORD_ONLY and p.name not in own:
                names.add(p.name)
    return tuple(sorted(names))


class Section(BaseModel):
    """A config section: unknown keys are errors; YAML's ``3e-5`` strings are numbers."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


# -- data ------------------------------------------------------------------------------
class GazetteerSection(Section):
    n_train: int = Field(20000, ge=1)
    n_test: int = Field(1000, ge=1)
    split: Literal["random", "region"] = "random"
    seed: int | None = None  # default: the global seed
    min_population: int = Field(0, ge=0)
    weighting: Literal["sqrt", "population", "uniform"] = "sqrt"
    test_frac: float = Field(0.2, gt=0.0, le=0.99)
    cache_dir: Any = None


class DataSection(Section):
    source: Literal["gazetteer", "feature_store", "arrays", "csv", "folder"]
    path: str | None = None
    val_path: str | None = None
    val_fraction: float = Field(0.1, ge=0.0, le=0.99)
    batch_size: int = Field(256, ge=1)
    val_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)
    pin_memory: bool = False
    encoder: str | None = None
    encoder_path: str | None = None
    store: str | None = None
    views: int = Field(1, ge=1)
    encode_batch_size: int = Field(64, ge=1)
    image_root: str | None = None
    path_col: str | None = None
    lat_col: str | None = None
    lon_col: str | None = None
    check: str = "open"
    recursive: bool = True
    gazetteer: GazetteerSection = Field(default_factory=GazetteerSection)

    @model_validator(mode="after")
    def _needs(self) -> DataSection:
        src = self.source
        if src != "gazetteer" and not self.path:
            what = {"feature_store": "the feature store folder", "arrays": "the .npz file",
                    "csv": "the CSV file", "folder": "the photo folder"}[src]
            raise ValueError(f"data.path is required for data.source={src!r}: {what}.")
        if src in ("csv", "folder") and not self.encoder:
            raise ValueError(
                f"data.encoder is required for data.source={src!r}: the encoder that embeds "
                "the images, e.g. 'efficientnet:lite0/imagenet' or "
                "'open_clip:ViT-L-14/openai:image'.")
        if self.val_path and src != "feature_store":
            raise ValueError("data.val_path (a separate validation feature store) needs "
                             "data.source='feature_store'.")
        return self


# -- trainer, checkpoint, export -----------------------------------------------------------
class TrainerSection(Section):
    """``lightning.pytorch.Trainer`` arguments, plus ``logger``."""

    max_epochs: int | None = Field(10, ge=-1)
    max_steps: int = Field(-1, ge=-1)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps", "tpu"] = "auto"
    devices: int | str | list[int] = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = "32-true"
    deterministic: bool | Literal["warn"] = False
    gradient_clip_val: float | None = Field(None, ge=0.0)
    accumulate_grad_batches: int = Field(1, ge=1)
    log_every_n_steps: int = Field(50, ge=1)
    val_check_interval: int | float | None = None
    check_val_every_n_epoch: int | None = Field(1, ge=1)
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    num_sanity_val_steps: int = Field(2, ge=-1)
    enable_progress_bar: bool = True
    logger: Literal["csv", "tensorboard", "none"] = "csv"

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, v: Any) -> str:
        if str(v) not in PRECISIONS:
            raise ValueError(
                f"trainer.precision must be one of {', '.join(PRECISIONS)}; got {v!r} "
                "(half-precision '-true' modes would cast the (lat, lon) targets to 16 bits, "
                "~0.1 degree steps; use a '-mixed' mode instead).")
        return str(v)

    @field_validator("logger", mode="before")
    @classmethod
    def _logger(cls, v: Any) -> Any:
        return "none" if v in (None, False) else v

    @model_validator(mode="after")
    def _stops(self) -> TrainerSection:
        if self.max_epochs in (None, -1) and self.max_steps == -1:
            raise ValueError("set trainer.max_epochs or trainer.max_steps; otherwise training "
                             "never stops.")
        return self


class CheckpointSection(Section):
    monitor: str | None = "val/median_km"
    mode: Literal["min", "max"] = "min"
    save_top_k: int = Field(1, ge=-1)
    save_last: bool = True
    every_n_epochs: int | None = Field(1, ge=0)
    every_n_train_steps: int | None = Field(None, ge=1)


class ExportSection(Section):
    path: str = Field("model.safetensors", min_length=1)
    weights: Literal["best", "last"] = "best"
    evaluate: bool = True


# -- LocDiff ---------------------------------------------------------------------------
class DiffusionSection(Section):
    num_train_timesteps: int = Field(DiffusionConfig.num_train_timesteps, ge=2)
    beta_schedule: Literal["squaredcos_cap_v2", "linear", "scaled_linear", "sigmoid"] = \
        DiffusionConfig.beta_schedule  # type: ignore[assignment]
    beta_start: float = Field(DiffusionConfig.beta_start, gt=0.0)
    beta_end: float = Field(DiffusionConfig.beta_end, gt=0.0)
    scale: float = Field(DiffusionConfig.scale, gt=0.0)


class LocDiffModelSection(Section):
    """:class:`~geodiffloc.LocDiff` arguments (``cond_dim`` comes from the data)."""

    L: int = Field(_ctor(LocDiff, "L"), ge=1)
    widths: list[int] | None = _ctor(LocDiff, "widths")
    time_dim: int = Field(_ctor(LocDiff, "time_dim"), ge=1)
    w0: float = Field(_ctor(LocDiff, "w0"), gt=0.0)
    taper: Any = _ctor(LocDiff, "taper")
    diffusion: DiffusionSection = Field(default_factory=DiffusionSection)
    init: str | None = None


class LocDiffOptim(Section):
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: list[float] = Field([0.9, 0.999], min_length=2, max_length=2)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)


class LossSection(BaseModel):
    """KL anchors, plus any keyword option of the LocDiff loss (checked by name)."""

    model_config = ConfigDict(extra="allow", validate_default=True)

    anchors: Literal["uniform", "mixed"] = "uniform"
    n_anchors: int = Field(2048, ge=1)
    n_local: int = Field(256, ge=1)
    local_radius_km: float | None = Field(None, gt=0.0)
    # null: fresh anchors every batch (the paper); a number: a fixed bank of that many
    bank: int | None = Field(RECOMMENDED_BANK, ge=1)
    p_uncond: float = Field(0.0, ge=0.0, le=1.0)
    # the recommended loss; the paper's: kl_scales null, aux_weight 0
    kl_scales: list[int] | Literal["auto"] | None = RECOMMENDED_LOSS["kl_scales"]
    kl_direction: Literal["reverse", "forward"] = "reverse"
    aux_weight: float = Field(RECOMMENDED_LOSS["aux_weight"], ge=0.0)

    @model_validator(mode="after")
    def _known_options(self) -> LossSection:
        allowed = set(loss_options()) | set(type(self).model_fields)
        unknown = [k for k in (self.model_extra or {}) if k not in allowed]
        if unknown:
            raise _UnknownKeys("loss", unknown, sorted(allowed))
        return self


class LocDiffValidation(Section):
    sampler: Literal["ddpm", "ddim", "dpm++"] = "dpm++"
    steps: int | None = Field(10, ge=1)
    n_samples: int = Field(1, ge=1)
    aggregate: Literal["auto", "mixture_mode", "centroid"] = "auto"


# -- GeoCLIP ---------------------------------------------------------------------------
class GeoCLIPModelSection(Section):
    """:class:`~geodiffloc.GeoCLIP` arguments (``backbone_dim`` comes from the data)."""

    embed_dim: int = Field(_ctor(GeoCLIP, "embed_dim"), ge=1)
    sigmas: list[float] = _ctor(GeoCLIP, "sigmas")
    n_freqs: int = Field(_ctor(GeoCLIP, "n_freqs"), ge=1)
    hidden_dim: int = Field(_ctor(GeoCLIP, "hidden_dim"), ge=1)
    temperature: float = Field(_ctor(GeoCLIP, "temperature"), gt=0.0)
    queue_size: int = Field(_ctor(GeoCLIP, "queue_size"), ge=0)
    batch_noise_m: float = Field(_ctor(GeoCLIP, "batch_noise_m"), ge=0.0)
    queue_noise_m: float = Field(_ctor(GeoCLIP, "queue_noise_m"), ge=0.0)
    gallery: Any = None  # default: the training locations (written next to the model)
    init: str | None = None


class GeoCLIPOptim(Section):
    lr: float = Field(3e-5, gt=0.0)
    weight_decay: float = Field(1e-6, ge=0.0)
    gamma: float = Field(0.87, gt=0.0, le=1.0)
    step_size: int = Field(1, ge=1)


class GeoCLIPValidation(Section):
    gallery: Any = "train"
    max_gallery: int = Field(100_000, ge=1)


# -- HierLoc ---------------------------------------------------------------------------
class HierarchySection(Section):
    """Where HierLoc's entities come from.

    ``source: gazetteer``: :func:`~geodiffloc.data.gazetteer_hierarchy` (``min_population``,
    ``countries``; ``country_polygons``: ``"naturalearth_10m"``, ``"naturalearth_lowres"``
    or null). ``source: file``: a vector file at ``path`` (GeoPackage, GeoParquet,
    shapefile, ...) read with geopandas, passed to
    :meth:`~geodiffloc.data.EntityHierarchy.from_geodataframe` with the column options.
    """

    source: Literal["gazetteer", "file"] = "gazetteer"
    min_population: int = Field(15_000, ge=0)
    countries: list[str] | None = None
    country_polygons: Literal["naturalearth_10m", "naturalearth_lowres"] | None = \
        "naturalearth_10m"
    path: str | None = None
    layer: str | None = None
    id_col: str = "id"
    parent_col: str = "parent"
    name_col: str | None = "name"
    level_col: str | None = None
    level_names: list[str] | None = None
    reproject: bool = False

    @model_validator(mode="after")
    def _needs_path(self) -> HierarchySection:
        if self.source == "file" and not self.path:
            raise ValueError("model.hierarchy.path is required for model.hierarchy.source="
                             "'file': the vector file holding the entities.")
        return self


class HierLocModelSection(Section):
    """:class:`~geodiffloc.HierLoc` arguments (``input_dim`` comes from the data)."""

    hierarchy: HierarchySection = Field(default_factory=HierarchySection)
    embed_dim: int = Field(_ctor(HierLoc, "embed_dim"), ge=1)
    hidden_dim: int = Field(_ctor(HierLoc, "hidden_dim"), ge=1)
    temperature: float = Field(_ctor(HierLoc, "temperature"), gt=0.0)
    max_radius: float = Field(_ctor(HierLoc, "max_radius"), gt=0.0)
    sigma_km: list[float] | None = _ctor(HierLoc, "sigma_km")
    geo_weight: float = Field(_ctor(HierLoc, "geo_weight"), ge=0.0, le=1.0)
    level_weights: list[float] | None = _ctor(HierLoc, "level_weights")
    consistency_weight: float = Field(_ctor(HierLoc, "consistency_weight"), ge=0.0)
    margin: float = Field(_ctor(HierLoc, "margin"), ge=0.0)
    n_edges: int = Field(_ctor(HierLoc, "n_edges"), ge=1)
    n_negatives: int | None = Field(_ctor(HierLoc, "n_negatives"), ge=1)
    n_near: int = Field(_ctor(HierLoc, "n_near"), ge=1)
    entity_init: Literal["geo", "random"] = _ctor(HierLoc, "entity_init")
    init: str | None = None


class HierLocOptim(Section):
    """Riemannian Adam (geoopt): the head at ``lr``, the entities at ``entity_lr``."""

    lr: float = Field(1e-3, gt=0.0)
    entity_lr: float | None = Field(None, gt=0.0)  # default: lr
    weight_decay: float = Field(0.0, ge=0.0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)


class HierLocValidation(Section):
    method: Literal["flat", "beam"] = "flat"
    beam_width: int = Field(10, ge=1)


# -- G3 --------------------------------------------------------------------------------
class G3ModelSection(Section):
    """:class:`~geodiffloc.G3` arguments (``input_dim`` from the data, ``text_dim`` from the
    text encoder), plus where the descriptions and the exported references come from.

    ``text_encoder``: the encoder of the place descriptions (an encoder name; null: the
    data's encoder, which must then be a text encoder, e.g. the gazetteer task's MiniLM).
    ``descriptions``: ``"gazetteer"`` (reverse geocoding, ``description_levels``) or a CSV
    path with ``lat``, ``lon`` (or ``LAT``, ``LON``) and ``description`` columns.
    ``references``: ``"train"`` stores the training embeddings (at most
    ``max_references``, a seeded subset) as the exported model's reference database;
    null exports none.
    """

    embed_dim: int = Field(_ctor(G3, "embed_dim"), ge=1)
    sigmas: list[float] = _ctor(G3, "sigmas")
    n_freqs: int = Field(_ctor(G3, "n_freqs"), ge=1)
    hidden_dim: int = Field(_ctor(G3, "hidden_dim"), ge=1)
    temperature: float = Field(_ctor(G3, "temperature"), gt=0.0)
    queue_size: int = Field(_ctor(G3, "queue_size"), ge=0)
    batch_noise_m: float = Field(_ctor(G3, "batch_noise_m"), ge=0.0)
    queue_noise_m: float = Field(_ctor(G3, "queue_noise_m"), ge=0.0)
    loss_weights: list[float] = Field(_ctor(G3, "loss_weights"), min_length=3, max_length=3)
    text_encoder: str | None = None
    text_encoder_path: str | None = None
    descriptions: str = "gazetteer"
    description_levels: list[str] = Field(list(DESCRIPTION_LEVELS), min_length=1)
    references: Literal["train"] | None = "train"
    max_references: int = Field(100_000, ge=1)
    init: str | None = None

    @field_validator("description_levels")
    @classmethod
    def _levels(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in DESCRIPTION_LEVELS]
        if bad:
            raise ValueError(f"model.description_levels: unknown level(s) {bad}; allowed: "
                             f"{list(DESCRIPTION_LEVELS)}.")
        return v


class G3Optim(Section):
    """Adam over the heads, the location encoder and the logit scales."""

    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-6, ge=0.0)
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)


class G3Validation(Section):
    """``gallery``: GPS retrieval over the distinct training locations (query–GPS
    similarity, as GeoCLIP's validation); at most ``max_gallery`` of them."""

    method: Literal["gallery"] = "gallery"
    max_gallery: int = Field(100_000, ge=1)


# -- whole configs -----------------------------------------------------------------------
class _Common(Section):
    family: str
    seed: int = Field(0, ge=0)
    out_dir: str | None = None
    resume: str | None = None
    overwrite: bool = False
    data: DataSection
    trainer: TrainerSection = Field(default_factory=TrainerSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    export: ExportSection = Field(default_factory=ExportSection)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, raw: Any) -> Any:
        # an absent data section reports its missing keys ("data.source"), not "data"
        if isinstance(raw, dict) and raw.get("data") is None:
            raw = {**raw, "data": {}}
        return raw

    @model_validator(mode="after")
    def _out_dir(self) -> _Common:
        if self.out_dir is None:
            self.out_dir = os.path.join("runs", self.family)
        return self


class LocDiffConfig(_Common):
    """A complete LocDiff training config."""

    family: Literal["locdiff"] = "locdiff"
    model: LocDiffModelSection = Field(default_factory=LocDiffModelSection)
    optim: LocDiffOptim = Field(default_factory=LocDiffOptim)
    loss: LossSection = Field(default_factory=LossSection)
    validation: LocDiffValidation = Field(default_factory=LocDiffValidation)

    @model_validator(mode="after")
    def _steps(self) -> LocDiffConfig:
        steps, T = self.validation.steps, self.model.diffusion.num_train_timesteps
        if steps is not None and steps > T:
            raise ValueError(f"validation.steps ({steps}) cannot exceed "
                             f"model.diffusion.num_train_timesteps ({T}).")
        return self


class GeoCLIPConfig(_Common):
    """A complete GeoCLIP training config."""

    family: Literal["geoclip"] = "geoclip"
    model: GeoCLIPModelSection = Field(default_factory=GeoCLIPModelSection)
    optim: GeoCLIPOptim = Field(default_factory=GeoCLIPOptim)
    validation: GeoCLIPValidation = Field(default_factory=GeoCLIPValidation)


class HierLocConfig(_Common):
    """A complete HierLoc training config."""

    family: Literal["hierloc"] = "hierloc"
    model: HierLocModelSection = Field(default_factory=HierLocModelSection)
    optim: HierLocOptim = Field(default_factory=HierLocOptim)
    validation: HierLocValidation = Field(default_factory=HierLocValidation)


class G3Config(_Common):
    """A complete G3 training config."""

    family: Literal["g3"] = "g3"
    model: G3ModelSection = Field(default_factory=G3ModelSection)
    optim: G3Optim = Field(default_factory=G3Optim)
    validation: G3Validation = Field(default_factory=G3Validation)


CONFIGS: dict[str, type[_Common]] = {"locdiff": LocDiffConfig, "geoclip": GeoCLIPConfig,
                                     "hierloc": HierLocConfig, "g3": G3Config}


class _UnknownKeys(ValueError):
    """Unknown keys found by a validator (formatted like pydantic's ``extra_forbidden``)."""

    def __init__(self, where: str, keys: list[str], allowed: list[str]) -> None:
        from .config import unknown_keys_message

        super().__init__(unknown_keys_message(where, keys, allowed))
