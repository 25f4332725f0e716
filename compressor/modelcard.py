"""The model card: what a generative model takes (inputs, their prior) and gives (outputs, value range).

Knowing the latent prior is what lets calibration, parity checks and benchmarks run data-free:
`sample_inputs` draws seeded samples from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compressor.errors import ConfigError, validation_summary
from compressor.files import read_yaml

if TYPE_CHECKING:
    import torch

CARD_FILE = "compressor.yaml"


class InputSpec(BaseModel):
    """One model input: its per-sample shape (batch axis excluded), dtype, and the prior it is drawn from.

    Latents are float with a `normal` or `uniform` prior. Conditioning inputs (a diffusion timestep, a class
    label, a guidance scale) are often integers or particular values: `integers` draws uniformly from the
    inclusive `range`, `choice` from the listed `values`, `fixed` is `value` for every sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: tuple[int, ...] = Field(description="Per-sample shape, batch axis excluded, e.g. [64]; [] for one number per sample.")
    dtype: Literal["float32", "int64"] = Field("float32", description="Element type the model takes.")
    prior: Literal["normal", "uniform", "integers", "choice", "fixed"] = Field(
        "normal",
        description="normal: N(0, I); uniform: U(range), U(-1, 1) by default; integers: uniform integers in the "
        "inclusive range; choice: one of values per sample; fixed: value for every sample.",
    )
    range: tuple[float, float] | None = Field(None, description="[low, high] for uniform and integers priors.")
    values: list[float] | None = Field(None, description="The values a choice prior draws from.")
    value: float | None = Field(None, description="The value of a fixed prior.")

    @model_validator(mode="after")
    def _prior_fits(self) -> InputSpec:
        needs = {"integers": "range", "choice": "values", "fixed": "value"}
        allowed = {"normal": set(), "uniform": {"range"}, "integers": {"range"}, "choice": {"values"}, "fixed": {"value"}}
        given = {key for key in ("range", "values", "value") if getattr(self, key) is not None}
        if self.prior in needs and needs[self.prior] not in given:
            raise ValueError(f"prior '{self.prior}' needs '{needs[self.prior]}'")
        if given - allowed[self.prior]:
            raise ValueError(f"prior '{self.prior}' takes no {sorted(given - allowed[self.prior])}")
        if self.dtype == "int64" and self.prior in ("normal", "uniform"):
            raise ValueError(f"an int64 input needs an integers, choice or fixed prior, not '{self.prior}'")
        if self.prior == "integers" and (self.dtype != "int64" or self.range[0] > self.range[1]):
            raise ValueError("prior 'integers' needs dtype int64 and a range [low, high] with low <= high")
        numbers = self.values if self.values is not None else [self.value] if self.value is not None else []
        if self.dtype == "int64" and any(float(v) != int(v) for v in numbers):
            raise ValueError(f"an int64 input's values must be whole numbers, got {numbers}")
        if self.values is not None and not self.values:
            raise ValueError("a choice prior needs at least one value")
        return self


class OutputSpec(BaseModel):
    """One model output: per-sample shape and the value range the model produces."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: tuple[int, ...] | None = Field(None, description="Per-sample shape, batch axis excluded.")
    range: tuple[float, float] | None = Field(None, description="Value range, e.g. [-1, 1] after tanh.")
    image: bool | None = Field(
        None,
        description="Whether the output is an image that image metrics (SSIM, FID) may judge; false for a diffusion "
        "UNet's noise prediction. Null: decided from its shape ([N, 1|3, H, W]).",
    )


# The diffusers schedulers a card may name (their integer timesteps feed an int64 timestep input).
SCHEDULERS = {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler", "dpm-solver": "DPMSolverMultistepScheduler"}


class SamplerSpec(BaseModel):
    """How the model makes an image from its prior. Without one, an image is one call of the model on prior
    samples (a GAN generator, a VAE decoder). With one, the model is a diffusion network called `steps` times by
    a diffusers scheduler: x_T is drawn from the `sample` input's prior, each call gets x_t and the step's
    integer timestep, and other inputs (conditioning) are drawn once per image and held."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    scheduler: str = Field(description=f"One of {sorted(SCHEDULERS)} (diffusers' {', '.join(SCHEDULERS.values())}).")
    steps: int = Field(gt=0, le=1000, description="Denoising steps per image (model calls per image).")
    sample: str = Field("sample", description="The input that carries x_t.")
    timestep: str = Field("timestep", description="The input that carries the step's timestep (int64, one per sample).")
    range: tuple[float, float] | None = Field(None, description="Value range of the generated images, e.g. [-1, 1].")
    config: dict = Field(default_factory=dict, description="The scheduler's config (the keys of diffusers' scheduler_config.json).")

    @model_validator(mode="after")
    def _known_scheduler(self) -> SamplerSpec:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler '{self.scheduler}'; known: {', '.join(sorted(SCHEDULERS))}")
        return self


class ModelCard(BaseModel):
    """Everything compressor needs to know about a model besides its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("model", description="Short name, used in file names and reports.")
    family: Literal["gan", "vae", "diffusion", "transformer", "other"] = "other"
    description: str = ""
    factory: str | None = Field(None, description="'<module or file in the folder>:<callable>' building the model.")
    kwargs: dict = Field(default_factory=dict, description="Keyword arguments for the factory.")
    weights: str | None = Field(None, description="Weights file in the folder (.safetensors or state_dict .pt).")
    inputs: dict[str, InputSpec] = Field(description="Model inputs, in the order forward() takes them.")
    outputs: dict[str, OutputSpec] = Field(default_factory=lambda: {"output": OutputSpec()})
    sampler: SamplerSpec | None = Field(None, description="How images are made when it takes more than one call (diffusion).")

    @model_validator(mode="after")
    def _names_distinct(self) -> ModelCard:
        clash = sorted(set(self.inputs) & set(self.outputs))
        if clash:
            raise ValueError(f"{clash} named both an input and an output; rename one (exported graphs need distinct names)")
        return self

    @model_validator(mode="after")
    def _sampler_fits_inputs(self) -> ModelCard:
        if self.sampler is None:
            return self
        for role in ("sample", "timestep"):
            name = getattr(self.sampler, role)
            if name not in self.inputs:
                raise ValueError(f"sampler.{role} names '{name}', which is not one of the inputs {sorted(self.inputs)}")
        timestep = self.inputs[self.sampler.timestep]
        if timestep.dtype != "int64" or timestep.shape != ():
            raise ValueError(
                f"the timestep input '{self.sampler.timestep}' must be one int64 per sample (shape: [], dtype: int64, "
                f"prior: integers), not shape {list(timestep.shape)} {timestep.dtype}: schedulers give integer timesteps"
            )
        if self.inputs[self.sampler.sample].dtype != "float32":
            raise ValueError(f"the sample input '{self.sampler.sample}' must be float32")
        return self

    @property
    def output_range(self) -> tuple[float, float] | None:
        """The declared value range of the first output (the one parity and quality judge)."""
        return next(iter(self.outputs.values())).range

    @property
    def output_is_image(self) -> bool | None:
        """What the card says about the first output being an image (None: not said)."""
        return next(iter(self.outputs.values())).image


def load_card(path: Path) -> ModelCard:
    """Read and validate a model card YAML file."""
    if not path.is_file():
        raise ConfigError(f"{path}: model card not found; write one like examples/digits-dcgan/{CARD_FILE}")
    try:
        return ModelCard.model_validate(read_yaml(path, "model card"))
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid model card: {validation_summary(exc)}") from exc


def sample_inputs(card: ModelCard, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """Draw `batch` seeded samples of every input from its prior (the same seed gives the same tensors)."""
    generator = _generator(seed)
    return {name: draw(spec, batch, generator) for name, spec in card.inputs.items()}


def _generator(seed: int):
    import torch  # here, so listing targets and profiles does not pay for importing torch

    return torch.Generator().manual_seed(seed)


def draw(spec: InputSpec, batch: int, generator) -> torch.Tensor:
    """`batch` samples of one input from its prior, in its dtype."""
    import torch

    shape = (batch, *spec.shape)
    dtype = torch.int64 if spec.dtype == "int64" else torch.float32
    if spec.prior == "normal":
        return torch.randn(shape, generator=generator)
    if spec.prior == "uniform":
        low, high = spec.range or (-1.0, 1.0)
        return torch.rand(shape, generator=generator) * (high - low) + low
    if spec.prior == "integers":
        return torch.randint(int(spec.range[0]), int(spec.range[1]) + 1, shape, generator=generator)
    if spec.prior == "fixed":
        return torch.full(shape, spec.value, dtype=dtype)
    values = torch.tensor(spec.values, dtype=dtype)
    return values[torch.randint(len(values), shape, generator=generator)]


def as_output_list(output) -> list:
    """A model's output as a list of tensors, whether it returned one tensor or a tuple/list of them."""
    return list(output) if isinstance(output, (tuple, list)) else [output]
