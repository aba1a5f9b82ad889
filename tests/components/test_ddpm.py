"""The small DDPM: its noise schedule, its loss, DDIM sampling."""

from __future__ import annotations

import pytest
import torch

from components.models.ddpm import Diffusion, timestep_embedding


def test_schedule_goes_from_almost_clean_to_almost_pure_noise():
    ddpm = Diffusion(1, 8, width=8, timesteps=1000)
    a = ddpm.alpha_bar
    assert a[0] == pytest.approx(1 - 1e-4, abs=1e-6)
    assert float(a[-1]) < 1e-4  # x_T carries (almost) nothing of x_0
    assert bool((a[1:] < a[:-1]).all())
    short = Diffusion(1, 8, width=8, timesteps=100, sample_steps=10)
    assert float(short.alpha_bar[-1]) < 1e-3  # a shorter chain ends as noisy


def test_untrained_loss_is_the_noise_variance_and_training_lowers_it(one_torch_thread):
    torch.manual_seed(0)
    ddpm = Diffusion(1, 8, width=8, timesteps=100, sample_steps=10)
    images = torch.rand(64, 1, 8, 8).round()  # a simple distribution: black/white pixels
    with torch.no_grad():
        first = float(ddpm.loss(images, torch.Generator().manual_seed(1)))
    assert first == pytest.approx(1.0, abs=0.1)  # the zero-initialised output predicts ε = 0
    opt = torch.optim.Adam(ddpm.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        ddpm.loss(images).backward()
        opt.step()
    with torch.no_grad():
        assert float(ddpm.loss(images, torch.Generator().manual_seed(1))) < 0.7 * first


def test_ddim_samples_are_images_of_their_seed_alone():
    ddpm = Diffusion(1, 8, width=8, timesteps=100, sample_steps=5)
    a = ddpm.sample_uint8([1, 2, 3])
    b = ddpm.sample_uint8([3, 1], steps=5)
    assert a.shape == (3, 8, 8) and a.dtype == torch.uint8
    assert torch.equal(a[0], b[1]) and torch.equal(a[2], b[0])
    assert not torch.equal(a[0], a[1])


def test_timestep_embedding_separates_timesteps():
    e = timestep_embedding(torch.tensor([0, 1, 500]), 16)
    assert e.shape == (3, 16)
    assert not torch.allclose(e[0], e[1])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="divisible by 4"):
        Diffusion(1, 10)
    with pytest.raises(ValueError, match="sampling steps"):
        Diffusion(1, 8, timesteps=10, sample_steps=20)
