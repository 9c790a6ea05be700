"""Our schedules and DPM-Solver++(2M) against diffusers' own, step by step."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from geodiffloc.models.locdiff.diffusion import DiffusionConfig, sample_latents
from geodiffloc.models.locdiff.solver import (
    betas,
    dpm_solver_pp_2m_plan,
    dpm_solver_pp_2m_step,
)

diffusers = pytest.importorskip("diffusers")

SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear", "sigmoid")


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("T", [10, 200, 1000])
def test_betas_equal_diffusers(schedule, T) -> None:
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=schedule,
                                  beta_start=2e-4, beta_end=0.03)
    ours = betas(schedule, T, 2e-4, 0.03)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref.betas, rtol=0, atol=0)
    abar = DiffusionConfig(num_train_timesteps=T, beta_schedule=schedule, beta_start=2e-4,
                           beta_end=0.03).alphas_cumprod()
    torch.testing.assert_close(abar, ref.alphas_cumprod.double(), rtol=0, atol=0)


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="schedule"):
        betas("cosine", 10)


def _reference(schedule: str, T: int) -> diffusers.DPMSolverMultistepScheduler:
    return diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_schedule=schedule, prediction_type="sample",
        thresholding=False, algorithm_type="dpmsolver++", solver_order=2,
        timestep_spacing="trailing")


@pytest.mark.parametrize("steps", [1, 2, 3, 7, 14, 15, 20, 200])
def test_plan_equals_diffusers_timesteps_and_sigmas(steps) -> None:
    ref = _reference("squaredcos_cap_v2", 200)
    ref.set_timesteps(steps)
    abar = torch.cumprod(1 - betas("squaredcos_cap_v2", 200), 0)
    ts, sig = dpm_solver_pp_2m_plan(abar, steps)
    assert ts.tolist() == ref.timesteps.tolist()
    torch.testing.assert_close(sig, ref.sigmas, rtol=0, atol=0)
    with pytest.raises(ValueError, match="steps"):
        dpm_solver_pp_2m_plan(abar, 201)


def _toy_x0(x: torch.Tensor, t: int) -> torch.Tensor:
    # a nonlinear, timestep-dependent clean estimate, so every term of the update counts
    return torch.tanh(x * (1 + t / 100.0)) + 0.1 * torch.sin(3 * x)


@pytest.mark.parametrize("schedule", ["squaredcos_cap_v2", "linear", "scaled_linear"])
@pytest.mark.parametrize("steps", [1, 2, 5, 14, 15, 20, 50])
def test_trajectory_equals_diffusers(schedule, steps) -> None:
    T = 200
    ref = _reference(schedule, T)
    ref.set_timesteps(steps)
    abar = torch.cumprod(1 - betas(schedule, T), 0)
    ts, sig = dpm_solver_pp_2m_plan(abar, steps)
    x0 = torch.randn(64, 9, generator=torch.Generator().manual_seed(steps))
    x_ref, x_ours, prev = x0.clone(), x0.clone(), None
    for i, t in enumerate(ts.tolist()):
        x_ref = ref.step(_toy_x0(x_ref, t), t, x_ref).prev_sample
        d0 = _toy_x0(x_ours, t)
        x_ours, prev = dpm_solver_pp_2m_step(x_ours, d0, prev, sig, i), d0
        torch.testing.assert_close(x_ours, x_ref, rtol=1e-6, atol=1e-6)


def test_last_step_returns_the_clean_estimate() -> None:
    abar = torch.cumprod(1 - betas("squaredcos_cap_v2", 50), 0)
    _, sig = dpm_solver_pp_2m_plan(abar, 5)
    x, d0, d1 = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(dpm_solver_pp_2m_step(x, d0, d1, sig, 4), d0)


def test_sample_latents_dpm_matches_a_diffusers_loop() -> None:
    from geodiffloc.models.locdiff.csiren import CSUNet

    torch.manual_seed(0)
    net = CSUNet(2, cond_dim=3, widths=(16, 8)).eval()
    cond = torch.randn(5, 3)
    cfg = DiffusionConfig(num_train_timesteps=50)
    ours = sample_latents(net, cond, cfg, sampler="dpm++", steps=10,
                          generator=torch.Generator().manual_seed(4), dim=9)
    ref = _reference("squaredcos_cap_v2", 50)
    ref.set_timesteps(10)
    x = torch.randn((5, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for t in ref.timesteps:
            x = ref.step(net(x, torch.full((5,), int(t)), cond), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


def test_default_sampling_does_not_import_diffusers() -> None:
    code = (
        "import sys, torch\n"
        "from geodiffloc.models.locdiff.csiren import CSUNet\n"
        "from geodiffloc.models.locdiff.diffusion import DiffusionConfig, sample_latents\n"
        "net = CSUNet(2, cond_dim=3, widths=(8,)).eval()\n"
        "sample_latents(net, torch.zeros(2, 3), DiffusionConfig(), sampler='dpm++', dim=9)\n"
        "print('diffusers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
