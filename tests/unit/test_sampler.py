"""The generate hook: one-call samplers, diffusion loops under diffusers' schedulers, trajectories, and the model
card's sampler section refusing what cannot work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compressor.errors import ConfigError
from compressor.modelcard import ModelCard
from compressor.sampler import (
    DiffusionSampler,
    OneStepSampler,
    generate_all,
    sampler_for,
    torch_call,
    trajectory_inputs,
)
from compressor.testing.models import TinyGenerator, card_dict

pytest.importorskip("diffusers")

SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2", "prediction_type": "epsilon"}


def _card(scheduler: str = "ddim", steps: int = 10, **overrides) -> ModelCard:
    card = {
        "name": "denoiser", "family": "diffusion",
        "inputs": {"sample": {"shape": [1, 4, 4]}, "timestep": {"shape": [], "dtype": "int64", "prior": "integers", "range": [0, 999]}},
        "outputs": {"noise": {"shape": [1, 4, 4], "image": False}},
        "sampler": {"scheduler": scheduler, "steps": steps, "range": [-1.0, 1.0], "config": SCHEDULE},
    }
    for key, value in overrides.items():
        card["sampler"][key] = value
    return ModelCard.model_validate(card)


class OracleDenoiser(nn.Module):
    """The exact noise prediction for a data set of one image, `target`: eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t).
    Any correct sampler must then generate `target` itself."""

    def __init__(self, target: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("target", target)
        self.register_buffer("alphas", alphas_cumprod)

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        alpha = self.alphas[timestep].view(-1, 1, 1, 1)
        return (sample - alpha.sqrt() * self.target) / (1 - alpha).sqrt()


def _oracle(sampler: DiffusionSampler, target: torch.Tensor) -> OracleDenoiser:
    return OracleDenoiser(target, sampler._scheduler().alphas_cumprod.float())


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm-solver"])
def test_a_denoiser_that_knows_its_one_image_generates_that_image(scheduler):
    sampler = sampler_for(_card(scheduler, steps=25))
    target = torch.linspace(-0.8, 0.8, 16).view(1, 4, 4)
    images = sampler.generate(torch_call(_oracle(sampler, target)), sampler.start(3, seed=0), seed=0)
    assert images.shape == (3, 1, 4, 4)
    np.testing.assert_allclose(images, np.broadcast_to(target.numpy(), images.shape), atol=2e-3)


def test_same_seed_same_images_and_a_stochastic_scheduler_draws_its_noise_from_the_seed():
    sampler = sampler_for(_card("ddpm", steps=8))
    noisy = lambda feeds: [np.zeros_like(feeds["sample"])]  # noqa: E731 - predicts no noise: the sampler's own noise stays
    start = sampler.start(4, seed=1)
    first, again, other = (sampler.generate(noisy, start, seed) for seed in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_trajectory_inputs_cover_every_step_of_the_loop():
    sampler = sampler_for(_card("ddim", steps=10))
    call = torch_call(_oracle(sampler, torch.zeros(1, 4, 4)))
    inputs = trajectory_inputs(sampler, call, count=40, seed=0)
    assert set(inputs) == {"sample", "timestep"} and len(inputs["sample"]) == 40
    scheduler = sampler._scheduler()
    scheduler.set_timesteps(10)
    assert set(inputs["timestep"].tolist()) == set(scheduler.timesteps.tolist())  # all steps, not random t
    assert inputs["timestep"].dtype == np.int64


def test_one_step_sampler_is_one_call_on_prior_samples():
    card = ModelCard.model_validate(card_dict("gan", 8))
    model = TinyGenerator().eval()
    sampler = sampler_for(card)
    assert isinstance(sampler, OneStepSampler) and sampler.steps == 1
    start = sampler.start(5, seed=2)
    with torch.no_grad():
        expected = model(torch.from_numpy(start["z"])).numpy()
    np.testing.assert_allclose(generate_all(sampler, torch_call(model), start, batch=2), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sample": "x_t"}, "sampler.sample names 'x_t', which is not one of the inputs"),
        ({"scheduler": "heun"}, "unknown scheduler 'heun'; known: ddim, ddpm, dpm-solver"),
    ],
)
def test_a_sampler_that_does_not_fit_the_card_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        _card(**overrides)


def test_a_float_timestep_input_is_refused():
    card = _card().model_dump()
    card["inputs"]["timestep"] = {"shape": [], "prior": "uniform", "range": [0, 999]}
    with pytest.raises(ValueError, match="timestep input 'timestep' must be one int64 per sample"):
        ModelCard.model_validate(card)


def test_a_scheduler_config_the_scheduler_refuses_fails_before_any_work():
    with pytest.raises(ConfigError, match="DDIMScheduler refuses config"):
        sampler_for(_card(config={**SCHEDULE, "beta_schedule": "wiggly"}))
