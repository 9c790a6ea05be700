"""The high-level LocDiff model: SHDD space + CS-UNet + schedule + encoder record.

``LocDiff`` trains with :meth:`LocDiff.training_loss` (or the small :meth:`LocDiff.fit`
loop), samples SHDD vectors with :meth:`LocDiff.sample`, and answers GIS questions with
:meth:`LocDiff.predict` (a GeoDataFrame) and :meth:`LocDiff.probability_map` (a
georeferenced DataArray). Checkpoints are one safetensors file holding the weights and
the config (L, widths, schedule, scaling, encoder name/dim) as JSON metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ..._io import atomic_path
from ...encoders.base import Encoder, check_encoder_matches
from ...shdd._validate import check_coeff_values
from ...sphere import LatLonGrid, check_latlon_tensor
from .._validate import check_sampling_args, check_state_dict, parse_checkpoint_config
from .aggregate import AGGREGATIONS, agreement, centroid, mixture_mode
from .csiren import CSUNet
from .diffusion import SAMPLERS, AnchorSampler, DiffusionConfig, diffusion_loss, sample_latents

__all__ = ["LocDiff"]

FORMAT = "geodiffloc.locdiff/1"


def _shdd(L: int, taper: Any) -> Any:
    from ...shdd import SHDD

    return SHDD(L, taper=taper)


class LocDiff(nn.Module):
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
        p_uncond: float = 0.0, aux_weight: float = 0.0, generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """SHDD-KL diffusion loss of one batch (see :func:`~.diffusion.diffusion_loss`).

        Parameters
        ----------
        cond
            ``(n, cond_dim)`` condition embeddings.
        latlon
            ``(n, 2)`` true ``(lat, lon)`` degrees.

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
            anchor_sampler=anchor_sampler, targets=targets, p_uncond=p_uncond,
            aux_weight=aux_weight, generator=generator,
        )

    def fit(
        self, cond: torch.Tensor, latlon: torch.Tensor, *, steps: int = 1000,
        batch_size: int = 256, lr: float = 1e-3, anchor_sampler: AnchorSampler | None = None,
        p_uncond: float = 0.0, aux_weight: float = 0.0, seed: int = 0, progress: bool = True,
        clip_grad_norm: float | None = 1.0,
    ) -> list[float]:
        """A minimal Adam training loop (cosine-decayed LR) over in-memory tensors.

        For real datasets use the Lightning module in :mod:`geodiffloc.train`; this is
        for small experiments, tests and benchmarks.

        Parameters
        ----------
        cond, latlon
            ``(n, cond_dim)`` embeddings and ``(n, 2)`` locations.
        steps
            Optimiser steps.
        batch_size, lr
            Mini-batch size and peak learning rate.
        anchor_sampler, p_uncond, aux_weight
            See :meth:`training_loss`.
        seed
            Seeds batches, timesteps, noise and anchors.
        progress
            Show a tqdm bar.
        clip_grad_norm
            Gradient-norm clipping (``None`` = off). The KL's gradients spike when a
            sharp predicted peak sits far from the truth; clipping keeps such steps from
            throwing the sine layers into a bad regime.

        Returns
        -------
        list[float]
            The loss of every step.

        Raises
        ------
        ValueError
            Bad shapes or coordinates.
        """
        from tqdm.auto import tqdm

        cond = self._check_cond(cond).to(self.device)
        latlon = check_latlon_tensor(latlon).to(self.device, torch.float32)
        targets = self.shdd.encode(latlon=latlon).to(self.device, torch.float32)
        g = torch.Generator().manual_seed(int(seed))
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
        losses = []
        self.train()
        bar = tqdm(range(int(steps)), disable=not progress, desc="LocDiff fit")
        for _ in bar:
            idx = torch.randint(0, cond.shape[0], (min(batch_size, cond.shape[0]),), generator=g)
            idx = idx.to(self.device)
            loss, logs = self.training_loss(
                cond[idx], latlon[idx], targets=targets[idx], anchor_sampler=anchor_sampler,
                p_uncond=p_uncond, aux_weight=aux_weight, generator=g,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(clip_grad_norm))
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(kl=f"{logs['kl']:.3f}")
        self.eval()
        return losses

    # -- sampling ---------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, cond: torch.Tensor, n_samples: int = 1, *, steps: int | None = None,
        sampler: Literal["ddpm", "ddim", "dpm++"] = "ddpm",
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
            ``"ddpm"`` (paper, ancestral), ``"ddim"`` or ``"dpm++"`` (fast, deterministic).
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
    def _check_cond(self, cond: Any) -> torch.Tensor:
        cond = torch.as_tensor(cond, dtype=torch.float32) if not torch.is_tensor(cond) else cond
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
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32)) if isinstance(
            inputs, np.ndarray) else inputs.to(torch.float32)
        if x.ndim == 2:
            return self._check_cond(x)[:, None]
        if x.ndim == 3:
            n, v, dm = x.shape
            return self._check_cond(x.reshape(n * v, dm)).reshape(n, v, dm)
        raise ValueError(f"embeddings must be (n, dim) or (n, views, dim); got {tuple(x.shape)}.")

    @torch.no_grad()
    def sample_locations(
        self, inputs: Any, *, n_views: int = 16, samples_per_view: int = 1,
        encoder: Encoder | None = None, sampler: Literal["ddpm", "ddim", "dpm++"] = "ddpm",
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
        sampler: Literal["ddpm", "ddim", "dpm++"] = "ddpm", steps: int | None = None,
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
            Sampler (``"ddpm"`` with T steps is the paper's; ``"dpm++"`` with 20 steps is
            ~10x faster), step count and seeding (``seed`` is used when no generator is
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
        import geopandas as gpd

        if aggregate not in AGGREGATIONS:
            raise ValueError(f"aggregate must be one of {AGGREGATIONS}; got {aggregate!r}.")
        check_sampling_args(confidence_km=confidence_km)
        coeffs, samples = self.sample_locations(
            inputs, n_views=n_views, samples_per_view=samples_per_view, encoder=encoder,
            sampler=sampler, steps=steps, seed=seed, generator=generator,
            decode_anchors=decode_anchors, guidance_scale=guidance_scale, progress=progress,
        )
        pred = self.aggregate(coeffs, samples, how=aggregate)
        radius = confidence_km if confidence_km is not None else max(
            25.0, 2.0 * float(self.shdd.width_km))
        conf = agreement(samples, pred, radius).numpy()
        lat, lon = pred[:, 0].numpy(), pred[:, 1].numpy()
        data: dict[str, Any] = {"lat": lat, "lon": lon, "confidence": conf}
        if return_samples:
            data["samples"] = list(samples.numpy())
        return gpd.GeoDataFrame(data, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")

    def aggregate(self, coeffs: torch.Tensor, samples: torch.Tensor,
                  how: Literal["mixture_mode", "centroid"] = "mixture_mode") -> torch.Tensor:
        """Aggregate ``(n, K, d)`` coefficients and ``(n, K, 2)`` decoded samples -> ``(n, 2)``.

        Raises
        ------
        ValueError
            Unknown ``how``.
        """
        if how == "centroid":
            return centroid(samples)
        if how == "mixture_mode":
            return mixture_mode(self.shdd, coeffs, samples)[0]
        raise ValueError(f"aggregate must be one of {AGGREGATIONS}; got {how!r}.")

    @torch.no_grad()
    def probability_map(
        self, inputs: Any, *, resolution: float = 1.0, n_views: int = 16,
        samples_per_view: int = 1, encoder: Encoder | None = None,
        sampler: Literal["ddpm", "ddim", "dpm++"] = "ddpm", steps: int | None = None,
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
        grid = LatLonGrid.global_(resolution)
        coeffs, _ = self.sample_locations(
            inputs, n_views=n_views, samples_per_view=samples_per_view, encoder=encoder,
            sampler=sampler, steps=steps, seed=seed, generator=generator,
            guidance_scale=guidance_scale, progress=progress,
        )
        maps = []
        for q in range(coeffs.shape[0]):
            da = self.shdd.field(coeffs[q], resolution=resolution, kind="mass")
            maps.append(np.asarray(da.values, dtype=np.float64).mean(axis=0))
        values = np.stack(maps)
        values /= values.sum(axis=(1, 2), keepdims=True)
        n_steps = steps if steps is not None else (
            self.diffusion.num_train_timesteps if sampler == "ddpm" else 20)
        attrs = {"model": "LocDiff", "L": self.L, "sampler": sampler, "steps": int(n_steps),
                 "seed": "none" if seed is None or generator is not None else int(seed),
                 "n_samples": int(coeffs.shape[1]), "encoder": self.encoder_record["name"]}
        return grid.to_dataarray(values, kind="mass", leading_dim="query", attrs=attrs,
                                 name="probability")

    # -- persistence ------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write config + weights to one safetensors file, atomically.

        Raises
        ------
        FileExistsError
            If ``path`` exists and ``overwrite`` is false.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.safetensors"
        >>> LocDiff(L=2, cond_dim=4, widths=(16,)).save(p)
        >>> LocDiff.load(p).L
        2
        """
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        meta = {"config": json.dumps(self.config())}
        with atomic_path(path, overwrite=overwrite) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
             ) -> LocDiff:
        """Load a checkpoint written by :meth:`save` (safetensors: no code execution).

        Raises
        ------
        ValueError
            If the file is not a LocDiff checkpoint.
        FileNotFoundError
            If ``path`` does not exist.
        """
        from safetensors import safe_open

        if not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint at {os.fspath(path)!r}.")
        try:
            with safe_open(os.fspath(path), framework="pt", device=str(map_location)) as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types
            raise ValueError(f"{os.fspath(path)!r} is not a safetensors checkpoint: {err}") from err
        cfg = parse_checkpoint_config(meta.get("config"), path, FORMAT)

        def build() -> LocDiff:
            try:
                diffusion = DiffusionConfig(**cfg["diffusion"])
            except TypeError as err:
                raise ValueError(f"{os.fspath(path)!r}: bad diffusion config ({err}).") from None
            return cls(L=cfg["L"], cond_dim=cfg["cond_dim"], widths=cfg["widths"],
                       time_dim=cfg["time_dim"], w0=cfg["w0"], diffusion=diffusion,
                       encoder=cfg["encoder"], taper=cfg.get("taper"))

        check_state_dict(lambda: build().net, tensors, path)
        model = build()
        model.net.load_state_dict(tensors)
        return model.to(map_location).eval()

    def extra_repr(self) -> str:
        return (f"L={self.L}, cond_dim={self.cond_dim}, widths={self.net.widths}, "
                f"T={self.diffusion.num_train_timesteps}, encoder={self.encoder_record['name']!r}")
