"""The generate hook: how a model makes images from its prior, used by every consumer that judges or feeds it.

A GAN generator or VAE decoder makes an image in one call on prior samples (`OneStepSampler`). A diffusion
network makes one in `steps` calls driven by a scheduler (`DiffusionSampler`): its activations drift across
timesteps, so calibration, sensitivity, distillation and QAT feed it the inputs a real sampling loop produces
(`trajectory_inputs`), and parity and quality judge the final images of the whole loop, never one call.

Like ModelOpt's `forward_loop`, a sampler never owns the model: `generate(call, start, seed)` drives any
`call` (a torch model through `torch_call`, or a runtime's runner over exported files) from the same start
state, so an artifact and the original are compared on identical seeds and identical scheduler noise.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from compressor.errors import ConfigError
from compressor.modelcard import SCHEDULERS, ModelCard, as_output_list, sample_inputs

Call = Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # input arrays by name -> output arrays


def torch_call(model) -> Call:
    """A call (input arrays by name -> output arrays) for a torch model, like the runtimes' runners."""
    import torch

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = model(*(torch.from_numpy(v) for v in feeds.values()))
        return [t.numpy() for t in as_output_list(out)]

    return call


class OneStepSampler:
    """One model call on prior samples makes the image (its first output)."""

    steps = 1

    def __init__(self, card: ModelCard) -> None:
        self.card = card

    @property
    def range(self) -> tuple[float, float] | None:
        return self.card.output_range

    @property
    def image_declared(self) -> bool | None:
        return self.card.output_is_image

    def start(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """What one image is made from: seeded draws of every input from its prior."""
        return {name: t.numpy() for name, t in sample_inputs(self.card, batch, seed).items()}

    def generate(self, call: Call, start: dict[str, np.ndarray], seed: int = 0) -> np.ndarray:
        return call(start)[0]


class DiffusionSampler:
    """`steps` calls of a noise-prediction network under one of diffusers' schedulers, from x_T to the image."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.spec = card.sampler
        self.steps = self.spec.steps
        self._scheduler_class = _scheduler_class(self.spec.scheduler)
        self._scheduler()  # a config the scheduler refuses fails now, not in the middle of a run

    @property
    def range(self) -> tuple[float, float] | None:
        return self.spec.range

    @property
    def image_declared(self) -> bool | None:
        return None  # the final sample is judged by its shape; the card's `image: false` is about one call's output

    def start(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """x_T and the held inputs (conditioning) of `batch` images; the timestep is the sampler's to set."""
        drawn = sample_inputs(self.card, batch, seed)
        return {name: t.numpy() for name, t in drawn.items() if name != self.spec.timestep}

    def generate(self, call: Call, start: dict[str, np.ndarray], seed: int = 0) -> np.ndarray:
        """The images `call` makes from `start`; stochastic schedulers (ddpm) draw their noise from `seed`."""
        import torch

        scheduler = self._scheduler()  # schedulers keep state between steps: a fresh one per loop
        scheduler.set_timesteps(self.steps)
        x = torch.from_numpy(start[self.spec.sample]) * scheduler.init_noise_sigma
        noise = torch.Generator().manual_seed(seed)
        for t in scheduler.timesteps:
            feeds = self._feeds(start, scheduler.scale_model_input(x, t), int(t))
            predicted = torch.from_numpy(np.ascontiguousarray(call(feeds)[0], dtype=np.float32))
            x = scheduler.step(predicted, t, x, generator=noise).prev_sample
        images = x.numpy().astype(np.float32)
        return np.clip(images, *self.range) if self.range else images

    def _feeds(self, start: dict[str, np.ndarray], x, t: int) -> dict[str, np.ndarray]:
        batch = len(x)
        feeds = {}
        for name in self.card.inputs:  # in the order forward() takes them
            if name == self.spec.sample:
                feeds[name] = x.numpy().astype(np.float32)
            elif name == self.spec.timestep:
                feeds[name] = np.full((batch,), t, dtype=np.int64)
            else:
                feeds[name] = start[name]
        return feeds

    def _scheduler(self):
        try:
            return self._scheduler_class(**self.spec.config)
        except Exception as exc:
            raise ConfigError(
                f"model card sampler: {self._scheduler_class.__name__} refuses config {self.spec.config} "
                f"({type(exc).__name__}: {exc}); use the keys of its scheduler_config.json"
            ) from exc


Sampler = OneStepSampler | DiffusionSampler


def sampler_for(card: ModelCard) -> Sampler:
    return DiffusionSampler(card) if card.sampler is not None else OneStepSampler(card)


def generate_all(sampler: Sampler, call: Call, start: dict[str, np.ndarray], batch: int, seed: int = 0,
                 progress: Callable[..., None] | None = None) -> np.ndarray:
    """The images of every start state, `batch` at a time (chunk k draws scheduler noise from seed + k); a
    multi-step sampler's progress(text, done, total) is told after each chunk (one call's is not worth a line)."""
    count = len(next(iter(start.values())))
    chunks = []
    for i in range(0, count, batch):
        chunks.append(sampler.generate(call, {k: v[i : i + batch] for k, v in start.items()}, seed + i // batch))
        if progress and sampler.steps > 1:
            done = min(i + batch, count)
            progress(f"sampling {done}/{count} images ({sampler.steps} steps each)", done, count)
    return np.concatenate(chunks)


def trajectory_inputs(sampler: Sampler, call: Call, count: int, seed: int, batch: int = 64,
                      progress: Callable[..., None] | None = None) -> dict[str, np.ndarray]:
    """`count` single-call inputs as real sampling produces them: whole loops of `call` are run from seeded
    start states and every call's inputs are kept, so all timesteps are covered (not random t); when the loops
    made more than `count`, an evenly spread subset is kept (the same steps of every loop)."""
    loops = max(1, math.ceil(count / sampler.steps))
    recorded: list[dict[str, np.ndarray]] = []

    def recording(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        recorded.append(feeds)
        return call(feeds)

    generate_all(sampler, recording, sampler.start(loops, seed), batch, seed, progress)
    inputs = {name: np.concatenate([feeds[name] for feeds in recorded]) for name in recorded[0]}
    total = len(next(iter(inputs.values())))
    keep = np.linspace(0, total - 1, num=min(count, total)).round().astype(int)
    return {name: array[keep] for name, array in inputs.items()}


def _scheduler_class(name: str):
    try:
        import diffusers
    except ImportError as exc:
        raise ConfigError(
            "the model card's sampler needs diffusers' schedulers: pip install -e '.[diffusion]'"
        ) from exc
    return getattr(diffusers, SCHEDULERS[name])
