"""LocDiff (Wang et al. 2025): latent diffusion in SHDD space, and the LocDiff-H hybrid.

* :mod:`.csiren` — C-Siren blocks and the CS-UNet denoiser;
* :mod:`.diffusion` — scaling, schedule, SHDD-KL training loss, anchor sampling, samplers;
* :mod:`.solver` — the beta schedules and DPM-Solver++(2M), without importing diffusers;
* :mod:`.aggregate` — ensemble aggregation (mixture mode, geographic centre);
* :mod:`.model` — :class:`LocDiff` (train, sample, predict, probability maps, save/load);
* :mod:`.hybrid` — :class:`LocDiffH` (LocDiff candidates + GeoCLIP retrieval within R km).
"""

from .csiren import CSiren, CSUNet, default_widths
from .diffusion import AnchorSampler, DiffusionConfig, anchor_kl, diffusion_loss, sample_latents
from .hybrid import LocDiffH
from .model import LocDiff

__all__ = [
    "AnchorSampler",
    "CSUNet",
    "CSiren",
    "DiffusionConfig",
    "LocDiff",
    "LocDiffH",
    "anchor_kl",
    "default_widths",
    "diffusion_loss",
    "sample_latents",
]
