"""The model card: what a generative model takes (inputs, their prior) and gives (outputs, value range).

Knowing the latent prior is what lets calibration, parity checks and benchmarks run data-free:
`sample_inputs` draws seeded samples from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compressor.errors import ConfigError, validation_summary
from compressor.files import read_yaml

if TYPE_CHECKING:
    import torch

CARD_FILE = "compressor.yaml"


class InputSpec(BaseModel):
    """One model input: its per-sample shape (batch axis excluded) and the prior it is drawn from."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: tuple[int, ...] = Field(description="Per-sample shape, batch axis excluded, e.g. [64].")
    prior: Literal["normal", "uniform"] = Field(
        "normal", description="normal: N(0, I); uniform: U(-1, 1)."
    )


class OutputSpec(BaseModel):
    """One model output: per-sample shape and the value range the model produces."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    shape: tuple[int, ...] | None = Field(None, description="Per-sample shape, batch axis excluded.")
    range: tuple[float, float] | None = Field(None, description="Value range, e.g. [-1, 1] after tanh.")


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

    @property
    def output_range(self) -> tuple[float, float] | None:
        """The declared value range of the first output (the one parity and quality judge)."""
        return next(iter(self.outputs.values())).range


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
    import torch  # here, so listing targets and profiles does not pay for importing torch

    generator = torch.Generator().manual_seed(seed)
    samples = {}
    for name, spec in card.inputs.items():
        shape = (batch, *spec.shape)
        if spec.prior == "normal":
            samples[name] = torch.randn(shape, generator=generator)
        else:
            samples[name] = torch.rand(shape, generator=generator) * 2 - 1
    return samples


def as_output_list(output) -> list:
    """A model's output as a list of tensors, whether it returned one tensor or a tuple/list of them."""
    return list(output) if isinstance(output, (tuple, list)) else [output]
