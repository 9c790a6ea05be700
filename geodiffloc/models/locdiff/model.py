"""The high-level LocDiff model: SHDD space + CS-UNet + schedule + encoder record.

``LocDiff`` trains with :meth:`LocDiff.training_loss` through the Lightning module of
:mod:`geodiffloc.train` (:meth:`LocDiff.fit` is a convenience over it), samples SHDD
vectors with :meth:`LocDiff.sample`, and answers GIS questions with
:meth:`LocDiff.predict` (a GeoDataFrame) and :meth:`LocDiff.probability_map` (a
georeferenced DataArray). Checkpoints are one safetensors file holding the weights and
the config (L, widths, schedule, scaling, encoder name/dim) as JSON metadata.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ...encoders.base import Encoder, check_encoder_matches
from ...shdd._validate import check_coeff_values
from ...sphere import LatLonGrid, check_latlon_tensor
from .._validate import (
    check_sampling_args,
    check_state_dict,
    parse_checkpoint_config,
    real_embeddings,
)
from ..base import Geolocator, points_frame
from .aggregate import AGGREGATIONS, agreement, centroid, mixture_mode, partition_rows
from .csiren import CSUNet
from .diffusion import SAMPLERS, AnchorSampler, DiffusionConfig, diffusion_loss, sample_latents

__all__ = ["LocDiff"]

FORMAT = "geodiffloc.locdiff/1"


def _shdd(L: int, taper: Any) -> Any:
    from ...shdd import SHDD

    return SHDD(L, taper=taper)


class LocDiff(nn.Module, Geolocator):
    """LocDiff: conditional latent diffusion in SHDD space (paper Sec. 4.5-4.6).

    Parameters
    ----------
    L
        SHDD degree (23 and 47 in the paper).
    cond_dim
        Dimension of the condition embeddings.
    widths, time_dim, w0
        CS-UNet architecture (see :class:`~geodiffloc.models.locdiff.csiren.CSUNet`).
    diffusion
        Schedule and latent scaling (default :class:`DiffusionConfig`: T = 200, cosine,
        scale sqrt(4 pi)).
    encoder
        The condition encoder, or its record ``{"name", "dim"}``; default
        ``{"name": "precomputed", "dim": cond_dim}``. Recorded in checkpoints; predict
        refuses an encoder with another name or dimension.
    taper
        Passed to :class:`~geodiffloc.shdd.SHDD`.

    Raises
    ------
    ValueError
        If the encoder's dimension differs from ``cond_dim``.

    Examples
    --------
    >>> model = LocDiff(L=3, cond_dim=8, widths=(32, 16))
    >>> model.sample(torch.randn(2, 8), n_samples=3, sampler="dpm++", steps=5).shape
    torch.Size([2, 3, 16])
    """

    checkpoint_format = FORMAT
    model_name = "LocDiff"

    def __init__(
        self,
        L: int = 23,
        cond_dim: int = 512,
        *,
        widths: Sequence[int] | None = None,
        time_dim: int = 128,
        w0: float = 1.0,
        diffusion: DiffusionConfig | None = None,
        encoder: Encoder | dict[str, Any] | None = None,
        taper: Any = None,
    ) -> None:
        super().__init__()
        self.shdd = _shdd(int(L), taper)
        self.taper = taper
        self.net = CSUNet(int(L), int(cond_dim), widths=widths, time_dim=time_dim, w0=w0)
        self.diffusion = diffusion or DiffusionConfig()
        if encoder is None:
            record = {"name": "precomputed", "dim": int(cond_dim)}
        elif isinstance(encoder, dict):
            record = {"name": str(encoder.get("name", "precomputed")),
                      "dim": int(encoder.get("dim", cond_dim))}
        else:
            record = {"name": encoder.name, "dim": int(encoder.dim)}
        if record["dim"] != int(cond_dim):
            raise ValueError(
                f"encoder {record['name']!r} gives {record['dim']}-d embeddings but "
                f"cond_dim={cond_dim}; set cond_dim to the encoder's dimension."
            )
        self.encoder_record = record

    # -- config -----------------------------------------------------------------------
    @property
    def L(self) -> int:
        """SHDD degree."""
        return self.net.L

    @property
    def dim(self) -> int:
        """SHDD dimension ``(L + 1)**2``."""
        return self.net.dim

    @property
    def cond_dim(self) -> int:
        """Condition embedding dimension."""
        return self.net.cond_dim

    @property
    def device(self) -> torch.device:
        """Device of the network weights."""
        return next(self.net.parameters()).device

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (stored in checkpoints)."""
        return {
            "format": FORMAT,
            "L": self.L,
            "cond_dim": self.cond_dim,
            "widths": list(self.net.widths),
            "time_dim": self.net.time_dim,
            "w0": self.net.w0,
            "taper": self.taper,
            "diffusion": self.diffusion.to_dict(),
            "encoder": dict(self.encoder_record),
        }

    # -- training ---------------------------------------------------------------------
    def training_loss(
        self, cond: torch.Tensor, latlon: torch.Tensor, *,
        anchor_sampler: AnchorSampler | None = None, targets: torch.Tensor | None = None,
        generator: torch.Generator | None = None, **loss_options: Any,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """SHDD-KL diffusion loss of one batch (see :func:`~.diffusion.diffusion_loss`).

        Parameters
        ----------
        cond
            ``(n, cond_dim)`` condition embeddings.
        latlon
            ``(n, 2)`` true ``(lat, lon)`` degrees.
        anchor_sampler, targets, generator
            KL anchors, precomputed SHDD targets, seeding.
        **loss_options
            Any further keyword option of :func:`~.diffusion.diffusion_loss`
            (``p_uncond``, ``aux_weight``, ...); the training config's ``loss`` section
            passes its keys here.

        Returns
        -------
        (loss, logs)

        Raises
        ------
        ValueError
            Bad shapes or coordinates.
        """
        cond = self._check_cond(cond)
        latlon = check_latlon_tensor(latlon)
        if latlon.shape[0] != cond.shape[0]:
            raise ValueError(
                f"cond and latlon must have the same number of rows; got {cond.shape[0]} "
                f"and {latlon.shape[0]}."
            )
        return diffusion_loss(
            self.net, self.shdd, cond, latlon.to(cond.device, torch.float32), self.diffusion,
            anchor_sampler=anchor_sampler, targets=targets, generator=generator,
            **loss_options,
        )

    def fit(
        self, cond: torch.Tensor, latlon: torch.Tensor, *, steps: int = 1000,
        batch_size: int = 256, lr: float = 1e-3, anchor_sampler: AnchorSampler | None = None,
        p_uncond: float = 0.0, aux_weight: float | None = None, seed: int = 0,
        progress: bool = True, clip_grad_norm: float | None = 1.0, warmup_steps: int = 0,
        loss: dict[str, Any] | None = None, optim: dict[str, Any] | None = None,
    ) -> list[float]:
        """Train in place on in-memory tensors: a convenience over :mod:`geodiffloc.train`.

        Runs the same :class:`~geodiffloc.train.LocDiffModule` as ``geodiffloc train``
        (AdamW, optional linear warm-up, cosine decay over ``steps``, the SHDD-KL loss)
        with nothing written to disk; needs the ``[train]`` extra (Lightning).

        Parameters
        ----------
        cond, latlon
            ``(n, cond_dim)`` (or ``(n, views, cond_dim)``) embeddings and ``(n, 2)``
            locations.
        steps
            Optimiser steps.
        batch_size, lr
            Mini-batch size (items drawn with replacement) and peak learning rate.
        anchor_sampler, p_uncond, aux_weight
            See :meth:`training_loss`. By default the training config's: 2048 anchors
            per batch from a bank of 16 384, and the recommended loss
            (:data:`~.diffusion.RECOMMENDED_LOSS`: multi-scale KL plus 3x the x0 MSE);
            ``aux_weight=0, loss={"kl_scales": None, "bank": None}`` is the paper's.
        seed
            Seeds batches, timesteps, noise and anchors.
        progress
            Show a progress bar (stderr).
        clip_grad_norm
            Gradient-norm clipping (``None`` = off). The KL's gradients spike when a
            sharp predicted peak sits far from the truth; clipping keeps such steps from
            throwing the sine layers into a bad regime.
        warmup_steps
            Linear warm-up steps before the cosine decay.
        loss, optim
            Further keys of the training config's ``loss`` section (any option of
            :meth:`training_loss`) and ``optim`` section (``weight_decay``, ``betas``,
            ``schedule``, ``min_lr_ratio``).

        Returns
        -------
        list[float]
            The loss of every step.

        Raises
        ------
        ValueError
            Bad shapes or coordinates.
        """
        from ..._hooks import trainer

        fit_in_memory = trainer()  # geodiffloc.train.fitting.fit, handed over by the root

        opt = {"lr": float(lr), "warmup_steps": int(warmup_steps), **(optim or {})}
        ls: dict[str, Any] = {"p_uncond": float(p_uncond)}
        if aux_weight is not None:
            ls["aux_weight"] = float(aux_weight)
        ls.update(loss or {})
        return fit_in_memory(self, cond, latlon, steps=steps, batch_size=batch_size, optim=opt,
                             loss=ls, anchor_sampler=anchor_sampler,
                             clip_grad_norm=clip_grad_norm, seed=seed, progress=progress)

    # -- sampling ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, cond: torch.Tensor, n_samples: int = 1, *, steps: int | None = None,
        sampler: Literal["ddpm", "ddim", "dpm++"] = "dpm++",
        generator: torch.Generator | None = None, guidance_scale: float = 1.0,
        batch_size: int = 4096, progress: bool = False,
    ) -> torch.Tensor:
        """Sample SHDD coefficient vectors conditioned on embeddings.

        Parameters
        ----------
        cond
            ``(n, cond_dim)`` condition embeddings.
        n_samples
            Samples per row.
        steps
            Denoising steps (default: T for ddpm, 20 for ddim/dpm++).
        sampler
            ``"dpm++"`` (default; fast, deterministic), ``"ddim"`` or ``"ddpm"`` (the
            paper's, ancestral, T steps).
        generator
            CPU ``torch.Generator`` for reproducible samples.
        guidance_scale
            Classifier-free guidance weight (1 = off; needs a model trained with
            ``p_uncond > 0``).
        batch_size
            Latents denoised at once.
        progress
            Show progress.

        Returns
        -------
        torch.Tensor
            ``(n, n_samples, (L+1)**2)`` float32 SHDD coefficients (unscaled), on CPU.

        Raises
        ------
        ValueError
            Bad shapes, sampler or steps.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}.")
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1; got {n_samples}.")
        cond = self._check_cond(cond).to(self.device)
        self._check_sample_memory(cond.shape[0] * int(n_samples))
        flat = cond.repeat_interleave(int(n_samples), dim=0)
        self.net.eval()
        out = []
        for s in range(0, flat.shape[0], batch_size):
            x = sample_latents(
                self.net, flat[s:s + batch_size], self.diffusion, sampler=sampler, steps=steps,
                generator=generator, guidance_scale=guidance_scale, dim=self.dim,
                progress=progress,
            )
            out.append((x / self.diffusion.scale).cpu())
        return torch.cat(out).reshape(cond.shape[0], int(n_samples), self.dim)

    # -- inference --------------------------------------------------------------------
    def _check_sample_memory(self, n_total: int) -> None:
        """Refuse a sampling request whose repeated conditions and samples cannot fit."""
        from ..._memory import check_allocation

        # repeated conditions, the samples and the sampler's few working copies (float32)
        nbytes = 4.0 * n_total * (self.cond_dim + 4 * self.dim)
        check_allocation(nbytes, f"{n_total:,} diffusion samples",
                         "ask for fewer views/samples per input or fewer inputs per call")

    def _check_cond(self, cond: Any) -> torch.Tensor:
        cond = real_embeddings(cond, "condition embeddings")
        if cond.ndim != 2 or cond.shape[1] != self.cond_dim:
            raise ValueError(
                f"condition embeddings must have shape (n, {self.cond_dim}); got "
                f"{tuple(cond.shape)}. Pass embeddings from the encoder the model was trained "
                f"with ({self.encoder_record['name']!r}) or raw inputs with encoder=."
            )
        if not torch.isfinite(cond).all():
            raise ValueError("condition embeddings contain NaN or inf.")
        return cond.to(torch.float32)

    def embed_views(self, inputs: Any, *, n_views: int = 16, encoder: Encoder | None = None,
                    ) -> torch.Tensor:
        """Condition embeddings per input and view, ``(n, views, cond_dim)``.

        Embeddings given as ``(n, dim)`` count as one view each (the ensemble then
        differs only by diffusion noise); ``(n, views, dim)`` are used as they are. With an
        ``encoder``, raw ``inputs`` are encoded ``n_views`` times with augmentation on
        (off when ``n_views == 1``).

        Raises
        ------
        ValueError
            Mismatched encoder, bad shapes, or raw inputs without an encoder.
        """
        if int(n_views) < 1:
            raise ValueError(f"n_views must be >= 1; got {n_views}.")
        if encoder is not None:
            check_encoder_matches(self.encoder_record, encoder)
            views = [encoder.encode(inputs, augment=n_views > 1) for _ in range(int(n_views))]
            return torch.stack([self._check_cond(v) for v in views], dim=1)
        if not isinstance(inputs, torch.Tensor | np.ndarray):
            raise ValueError(
                "inputs are not an embedding tensor/array; pass encoder= to embed raw inputs "
                f"(this model expects {self.encoder_record['name']!r}, {self.cond_dim}-d)."
            )
        x = real_embeddings(inputs)
        if x.ndim == 2:
            return self._check_cond(x)[:, None]
        if x.ndim == 3:
            n, v, dm = x.shape
            return self._check_cond(x.reshape(n * v, dm)).reshape(n, v, dm)
        raise ValueError(f"embeddings must be (n, dim) or (n, views, dim); got {tuple(x.shape)}.")

    @torch.no_grad()
    def sample_locations(
        self, inputs: Any, *, n_views: int = 16, samples_per_view: int = 1,
        encoder: Encoder | None = None, sampler: Literal["ddpm", "ddim", "dpm++"] = "dpm++",
        steps: int | None = None, seed: int | None = 0, generator: torch.Generator | None = None,
        decode_anchors: torch.Tensor | None = None, guidance_scale: float = 1.0,
        progress: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled coefficients and their decoded locations, per input.

        Every input gets ``K = views * samples_per_view`` samples, where ``views`` is
        ``n_views`` for raw inputs and ``(n, dim)`` embeddings (the embedding repeated) and
        the given number for ``(n, views, dim)`` embeddings.

        Returns
        -------
        (coeffs, latlon)
            ``(n, K, d)`` float32 coefficients and ``(n, K, 2)`` float64 decoded locations.
        """
        check_sampling_args(steps=steps, guidance_scale=guidance_scale, n_views=n_views,
                            samples_per_view=samples_per_view)
        if encoder is None and isinstance(inputs, torch.Tensor | np.ndarray):
            n_in = int(inputs.shape[0]) if inputs.ndim >= 2 else 1
            self._check_sample_memory(n_in * int(n_views) * int(samples_per_view))
        views = self.embed_views(inputs, n_views=n_views, encoder=encoder)
        if views.shape[1] == 1 and encoder is None:
            views = views.expand(-1, int(n_views), -1)
        n, v, dm = views.shape
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        coeffs = self.sample(views.reshape(n * v, dm), int(samples_per_view), steps=steps,
                             sampler=sampler, generator=generator,
                             guidance_scale=guidance_scale, progress=progress)
        coeffs = coeffs.reshape(n, v * int(samples_per_view), self.dim)
        flat = check_coeff_values(coeffs.reshape(-1, self.dim), "the sampled SHDD coefficients")
        latlon = self.shdd.decode(flat, anchors=decode_anchors, refine=True)
        latlon = torch.as_tensor(latlon, dtype=torch.float64).reshape(n, -1, 2)
        return coeffs, latlon

    def predict(
        self, inputs: Any, *, n_views: int = 16, samples_per_view: int = 1,
        aggregate: Literal["mixture_mode", "centroid"] = "mixture_mode",
        encoder: Encoder | None = None, return_samples: bool = False,
        sampler: Literal["ddpm", "ddim", "dpm++"] = "dpm++", steps: int | None = None,
        seed: int | None = 0, generator: torch.Generator | None = None,
        decode_anchors: torch.Tensor | None = None, confidence_km: float | None = None,
        guidance_scale: float = 1.0, progress: bool = False,
    ) -> Any:
        """Predict one location per input.

        Parameters
        ----------
        inputs
            ``(n, dim)`` or ``(n, views, dim)`` embeddings (tensor/array), or raw inputs
            for ``encoder``.
        n_views
            Augmented views per input (paper: 16); for ``(n, dim)`` embeddings the number
            of noise draws; ignored for ``(n, views, dim)`` embeddings, whose views are
            used as given.
        samples_per_view
            Diffusion samples per view.
        aggregate
            ``"mixture_mode"`` (default; the heaviest mode of the mixture of sample
            densities, robust to multimodal ensembles) or ``"centroid"`` (the paper's
            geographic centre of the decoded samples).
        encoder
            Encoder for raw inputs; must match the one the model was trained with.
        return_samples
            Add a ``samples`` column holding each input's ``(K, 2)`` decoded samples.
        sampler, steps, seed, generator
            Sampler (default ``"dpm++"`` with 20 steps: as accurate as the paper's
            ``"ddpm"`` with T steps on ``benchmarks/accuracy.py`` and ~10x faster), step
            count and seeding (``seed`` is used when no generator is
            given; ``None`` for fresh randomness).
        decode_anchors
            Anchor set for the SHDD decoder (default: the decoder's own).
        confidence_km
            ``confidence`` = fraction of samples within this distance of the prediction
            (default: ``2 * shdd.width_km``, at least 25 km).
        guidance_scale
            Classifier-free guidance weight (1 = off).
        progress
            Show progress bars.

        Returns
        -------
        geopandas.GeoDataFrame
            One row per input; columns ``lat``, ``lon``, ``confidence``, ``geometry``
            (EPSG:4326 points) and ``samples`` on request.

        Raises
        ------
        ValueError
            Unknown aggregation, bad inputs or mismatched encoder.
        """

        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}; got {aggregate!r}.")
        check_sampling_args(confidence_km=confidence_km)
        coeffs, samples = self.sample_locations(
            inputs, n_views=n_views, samples_per_view=samples_per_view, encoder=encoder,
            sampler=sampler, steps=steps, seed=seed, generator=generator,
            decode_anchors=decode_anchors, guidance_scale=guidance_scale, progress=progress,
        )
        return self.predictions_from_samples(coeffs, samples, aggregate=aggregate,
                                             confidence_km=confidence_km,
                                             return_samples=return_samples)

    def predictions_from_samples(
        self, coeffs: torch.Tensor, samples: torch.Tensor, *,
        aggregate: Literal["mixture_mode", "centroid"] = "mixture_mode",
        confidence_km: float | None = None, return_samples: bool = False,
        log_partition: torch.Tensor | None = None,
    ) -> Any:
        """:meth:`predict`'s GeoDataFrame from already drawn samples (no new sampling).

        Parameters
        ----------
        coeffs, samples
            ``(n, K, d)`` coefficients and ``(n, K, 2)`` decoded locations, as returned
            by :meth:`sample_locations`.
        aggregate, confidence_km, return_samples
            As in :meth:`predict`.
        log_partition
            Optional ``(n * K,)`` log-partitions of the samples' densities, if already
            known (:meth:`predictions_and_field` passes its grid's); else computed.

        Examples
        --------
        >>> coeffs, samples = model.sample_locations(emb)  # doctest: +SKIP
        >>> preds = model.predictions_from_samples(coeffs, samples)  # doctest: +SKIP
        >>> field = model.field_from_samples(coeffs, resolution=0.5)  # doctest: +SKIP
        """
        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}; got {aggregate!r}.")
        pred = self.aggregate(coeffs, samples, how=aggregate, log_partition=log_partition)
        radius = confidence_km if confidence_km is not None else max(
            25.0, 2.0 * float(self.shdd.width_km))
        conf = agreement(samples, pred, radius).numpy()
        cols: dict[str, Any] = {"confidence": conf}
        if return_samples:
            cols["samples"] = list(samples.numpy())
        return points_frame(pred[:, 0].numpy(), pred[:, 1].numpy(), cols)

    def aggregate(self, coeffs: torch.Tensor, samples: torch.Tensor,
                  how: Literal["mixture_mode", "centroid"] = "mixture_mode", *,
                  log_partition: torch.Tensor | None = None) -> torch.Tensor:
        """Aggregate ``(n, K, d)`` coefficients and ``(n, K, 2)`` decoded samples -> ``(n, 2)``.

        ``log_partition``: optional ``(n * K,)`` log Z of the samples (mixture mode).

        Raises
        ------
        ValueError
            Unknown ``how``.
        """
        if how == "centroid":
            return centroid(samples)
        if how == "mixture_mode":
            return mixture_mode(self.shdd, coeffs, samples, log_z=log_partition)[0]
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}; got {how!r}.")

    @torch.no_grad()
    def probability_map(
        self, inputs: Any, *, resolution: float = 1.0, n_views: int = 16,
        samples_per_view: int = 1, encoder: Encoder | None = None,
        sampler: Literal["ddpm", "ddim", "dpm++"] = "dpm++", steps: int | None = None,
        seed: int | None = 0, generator: torch.Generator | None = None,
        guidance_scale: float = 1.0, progress: bool = False,
    ) -> Any:
        """The mixture of the sampled densities on the global grid, per input.

        Parameters
        ----------
        inputs, n_views, samples_per_view, encoder, sampler, steps, seed, generator,
        guidance_scale, progress
            As in :meth:`predict`.
        resolution
            Grid cell size in degrees (``180 / resolution`` a whole number).

        Returns
        -------
        xarray.DataArray
            ``("query", "lat", "lon")`` cell masses, each query summing to 1, EPSG:4326,
            with provenance attrs (model, L, sampler, steps, seed, n_samples).

        Raises
        ------
        ValueError
            Bad inputs or resolution.
        """
        LatLonGrid.global_(resolution)  # a bad resolution fails before sampling
        coeffs, _ = self.sample_locations(
            inputs, n_views=n_views, samples_per_view=samples_per_view, encoder=encoder,
            sampler=sampler, steps=steps, seed=seed, generator=generator,
            guidance_scale=guidance_scale, progress=progress,
        )
        return self.field_from_samples(
            coeffs, resolution=resolution, sampler=sampler, steps=steps,
            seed=None if generator is not None else seed)

    @torch.no_grad()
    def field_from_samples(
        self, coeffs: torch.Tensor, *, resolution: float = 1.0,
        sampler: str = "dpm++", steps: int | None = None, seed: int | None = None,
    ) -> Any:
        """:meth:`probability_map` from already drawn ``(n, K, d)`` coefficients.

        The mixture of the ``K`` sample densities per query on the global grid; the
        sampler, steps and seed only go into the provenance attrs.

        Returns
        -------
        xarray.DataArray
            ``("query", "lat", "lon")`` cell masses, each query summing to 1.
        """
        return self._field_and_log_partition(coeffs, resolution, sampler, steps, seed)[0]

    @torch.no_grad()
    def predictions_and_field(
        self, coeffs: torch.Tensor, samples: torch.Tensor, *, resolution: float = 1.0,
        aggregate: Literal["mixture_mode", "centroid"] = "mixture_mode",
        confidence_km: float | None = None, sampler: str = "dpm++",
        steps: int | None = None, seed: int | None = None,
    ) -> tuple[Any, Any]:
        """:meth:`predictions_from_samples` and :meth:`field_from_samples` together.

        Both need every sample's density normalised; the field's grid gives its ``log Z``
        on the way (midpoint rule), which the mixture mode then reuses instead of a
        synthesis of its own, whenever that grid is at least as fine as the one the
        mixture mode would use (:func:`~geodiffloc.models.locdiff.aggregate.partition_rows`).

        Returns
        -------
        (predictions, field)
            As the two methods return them.
        """
        fld, log_z = self._field_and_log_partition(coeffs, resolution, sampler, steps, seed)
        fine = fld.sizes["lat"] >= partition_rows(self.shdd)
        preds = self.predictions_from_samples(coeffs, samples, aggregate=aggregate,
                                              confidence_km=confidence_km,
                                              log_partition=log_z if fine else None)
        return preds, fld

    def _field_and_log_partition(self, coeffs: torch.Tensor, resolution: float,
                                 sampler: str, steps: int | None, seed: int | None,
                                 ) -> tuple[Any, torch.Tensor]:
        coeffs = torch.as_tensor(coeffs)
        if coeffs.ndim != 3 or coeffs.shape[2] != self.dim:
            raise ValueError(f"coeffs must be (n, K, {self.dim}) samples; got "
                             f"{tuple(coeffs.shape)}.")
        grid = LatLonGrid.global_(resolution)
        # one output array filled query by query (no list of maps and stacked copy)
        values = np.empty((coeffs.shape[0], *grid.shape), dtype=np.float64)
        log_z = torch.empty(coeffs.shape[:2], dtype=torch.float64)
        for q in range(coeffs.shape[0]):
            masses, log_z[q] = self.shdd.global_masses(coeffs[q], resolution)
            np.mean(masses.cpu().numpy(), axis=0, dtype=np.float64, out=values[q])
            del masses  # the next query's samples reuse its memory
        values /= values.sum(axis=(1, 2), keepdims=True)
        n_steps = steps if steps is not None else (
            self.diffusion.num_train_timesteps if sampler == "ddpm" else 20)
        attrs = {"model": "LocDiff", "L": self.L, "sampler": sampler, "steps": int(n_steps),
                 "seed": "none" if seed is None else int(seed),
                 "n_samples": int(coeffs.shape[1]), "encoder": self.encoder_record["name"]}
        fld = grid.to_dataarray(values, kind="mass", leading_dim="query", attrs=attrs,
                                name="probability")
        return fld, log_z.reshape(-1)

    # -- persistence ------------------------------------------------------------------
    def checkpoint_config(self) -> dict[str, Any]:
        return self.config()

    @classmethod
    def check_checkpoint(cls, cfg: dict[str, Any], tensors: dict[str, torch.Tensor],
                         path: str | os.PathLike) -> None:
        """Config keys, types and sizes, then tensor shapes on the ``meta`` device, then
        finite weights: a crafted config (L = 1023, widths 100000) costs no memory."""
        import json

        parse_checkpoint_config(json.dumps(cfg), path, None)

        def build() -> nn.Module:
            try:
                return cls.from_checkpoint_config(cfg).net
            except TypeError as err:
                raise ValueError(f"{os.fspath(path)!r}: bad diffusion config ({err}).") from None

        check_state_dict(build, tensors, path)
        super().check_checkpoint(cfg, tensors, path)

    @classmethod
    def from_checkpoint_config(cls, cfg: dict[str, Any], **kwargs: Any) -> LocDiff:
        try:
            return cls(
                L=cfg["L"], cond_dim=cfg["cond_dim"], widths=cfg["widths"],
                time_dim=cfg["time_dim"], w0=cfg["w0"],
                diffusion=DiffusionConfig(**cfg["diffusion"]), encoder=cfg["encoder"],
                taper=cfg.get("taper"))
        except KeyError as e:
            raise ValueError(f"the LocDiff checkpoint config lacks {e}; it is damaged or was "
                             "written by another program.") from e

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        # the network only: the SHDD basis is rebuilt from L
        return dict(self.net.state_dict())

    def load_checkpoint_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        from ..base import load_state_strict

        load_state_strict(self.net, tensors, "LocDiff checkpoint")

    @classmethod
    def load(  # type: ignore[override]
        cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
    ) -> LocDiff:
        """Load a checkpoint written by :meth:`save` (safetensors: no code execution).

        Raises
        ------
        ValueError
            If the file is not a LocDiff checkpoint.
        FileNotFoundError
            If ``path`` does not exist.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> _ = LocDiff(L=2, cond_dim=4, widths=(16,)).save(p)
        >>> LocDiff.load(p).L
        2
        """
        return super().load(path, device=map_location)

    def extra_repr(self) -> str:
        return (f"L={self.L}, cond_dim={self.cond_dim}, widths={self.net.widths}, "
                f"T={self.diffusion.num_train_timesteps}, encoder={self.encoder_record['name']!r}")
