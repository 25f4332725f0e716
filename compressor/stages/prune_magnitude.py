"""The prune stage with `method: magnitude`: zero the smallest weights, keep every shape
(compressor/pruning/magnitude.py holds the masks).

`pattern: unstructured` zeroes the `sparsity` fraction of the weights with the smallest magnitude, under one
threshold for all conv/linear layers (`scope: global`) or the same fraction in each (`scope: layer`).
`pattern: 2:4` zeroes two of every four weights along the input channels, which TensorRT runs on sparse
tensor cores (Ampere GPUs, Jetson Orin): the TensorRT targets then build their engine with sparsity enabled.

`iterations` > 1 reaches the sparsity in steps on a cubic schedule, with `fine_tune_steps` of training between
steps (the shared loop, compressor/training.py: the frozen original teaches the masked model on fresh prior
samples, output L1 + MSE), so the weights that stay can take over from those that go.

What zeros buy depends on the runtime, and the stage says so in the manifest and report: ONNX Runtime's CPU
kernels are dense, so the gain there is a smaller compressed file, not speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, model_validator

from compressor.layer_rules import LayerRule
from compressor.seeds import PRUNE_CHECK_SEED_OFFSET, PRUNE_TUNE_SEED_OFFSET
from compressor.stages.base import StageConfig, StageResult

if TYPE_CHECKING:
    import torch.nn as nn

# What zeroed weights buy on each runtime, said plainly in the manifest and report.
WHAT_SPARSITY_BUYS = {
    "onnxruntime": "ONNX Runtime's CPU kernels are dense: zeroed weights cost as much time as any other; the gain "
                   "is a smaller compressed file (zip or gzip the .onnx), not speed",
    ("tensorrt", "2:4"): "TensorRT runs the 2:4 layers on sparse tensor cores (Ampere and later GPUs, Jetson Orin) "
                         "when the engine is built with sparsity, which build_engine.sh and `compressor build-engine` "
                         "ask for; other layers and older GPUs run dense",
    ("tensorrt", "unstructured"): "TensorRT's kernels are dense for unstructured zeros: no speed, a smaller compressed "
                                  "file; use pattern 2:4 for its sparse tensor cores",
}


class MagnitudePruneConfig(StageConfig):
    """Zero the smallest weights (unstructured, global or per layer) or two of every four (2:4)."""

    kind: Literal["prune"] = "prune"
    method: Literal["magnitude"] = Field(description="magnitude: zero the smallest weights; shapes stay.")
    pattern: Literal["unstructured", "2:4"] = Field("unstructured", description="unstructured, or 2:4 (TensorRT sparse tensor cores).")
    sparsity: float | None = Field(None, gt=0, lt=1, description="Fraction of the weights zeroed (unstructured; 2:4 is 0.5).")
    scope: Literal["global", "layer"] = Field("global", description="One threshold for all layers, or the same fraction in each.")
    iterations: int = Field(1, ge=1, description="Pruning steps to reach the sparsity (cubic schedule).")
    fine_tune_steps: int = Field(0, ge=0, description="Training steps after each pruning step, taught by the original.")
    batch: int = Field(32, ge=1, description="Samples per fine-tuning step.")
    lr: float = Field(1e-4, gt=0, description="Adam's starting learning rate for fine-tuning (cosine decay).")
    check_samples: int = Field(128, ge=8, description="Held-out latents that score each step (PSNR vs the original).")
    rules: list[LayerRule] = Field(default_factory=list, description="`skip: true` leaves a layer dense; last match wins.")
    changes_model: ClassVar[bool] = True

    @model_validator(mode="after")
    def _amount_fits_pattern(self) -> MagnitudePruneConfig:
        if self.pattern == "2:4" and self.sparsity is not None:
            raise ValueError("prune: pattern 2:4 zeroes exactly half of each layer's weights; drop sparsity")
        if self.pattern == "unstructured" and self.sparsity is None:
            raise ValueError("prune: method magnitude needs a sparsity (fraction of weights zeroed), e.g. "
                             "--set stages.prune.sparsity=0.5, or pattern 2:4")
        if self.pattern == "2:4" and (self.scope != "global" or self.iterations != 1):
            raise ValueError("prune: scope and iterations apply to unstructured pruning only; drop them for pattern 2:4 "
                             "(fine_tune_steps still trains after the cut)")
        return self

    def run(self, model: nn.Module, ctx) -> StageResult:
        from compressor.pruning import magnitude
        from compressor.stages.prune import check_prunable

        check_prunable(model)
        layers, left = magnitude.prunable_layers(model, self.pattern, self._skipped(model))
        if not layers:
            raise _nothing_to_prune(left)
        before_bytes = _compressed_bytes(model)
        held_out = tuple(ctx.model_inputs(self.check_samples, PRUNE_CHECK_SEED_OFFSET).values())
        # 2:4 is one step (a mask computed again from the kept weights is the same mask); fine-tuning follows it.
        sparsities = magnitude.schedule(self.sparsity, self.iterations) if self.pattern == "unstructured" else [0.5]
        steps = []
        for iteration, sparsity in enumerate(sparsities):
            magnitude.apply_masks(layers, magnitude.magnitude_masks(layers, sparsity, self.scope, self.pattern))
            record = {"sparsity": sparsity, "psnr_db_pruned": _psnr(model, ctx, held_out)}
            if self.fine_tune_steps:
                self._fine_tune(model, ctx, iteration)
                record["psnr_db_tuned"] = _psnr(model, ctx, held_out)
            steps.append(record)
        magnitude.make_permanent(layers)
        zeros = {name: float((module.weight == 0).float().mean()) for name, module in layers.items()}
        total = sum(module.weight.numel() for module in layers.values())
        metrics = {
            "pattern": self.pattern, "sparsity": sum(zeros[n] * m.weight.numel() for n, m in layers.items()) / total,
            "layer_sparsity": zeros, "dense_layers": left, "steps": steps,
            "weights_zlib_bytes_before": before_bytes, "weights_zlib_bytes_after": _compressed_bytes(model),
            "what_it_buys": what_sparsity_buys(ctx.config.target.runtime.kind, self.pattern),
        }
        return StageResult(model=model, state={"pattern": self.pattern, "layers": sorted(layers)}, metrics=metrics)

    def _skipped(self, model: nn.Module) -> set[str]:
        from compressor.layer_rules import apply_rules

        names = [name for name, _ in model.named_modules() if name]
        return {layer for layer, (rule, _) in apply_rules(names, self.rules, "prune").items() if rule.skip}

    def _fine_tune(self, model: nn.Module, ctx, iteration: int) -> None:
        import torch

        from compressor.distillation import output_loss
        from compressor.distributed import world
        from compressor.modelcard import as_output_list
        from compressor.training import train

        ranks = world()
        ranks.check_batch(self.batch, f"stages.{self.kind}.batch")

        def step_loss(step: int) -> torch.Tensor:
            seed = PRUNE_TUNE_SEED_OFFSET + iteration * self.fine_tune_steps + step  # never a latent twice
            inputs = ranks.batch_slice(tuple(ctx.model_inputs(self.batch, seed).values()))
            with torch.no_grad():
                targets = as_output_list(ctx.reference(*inputs))
            return output_loss(as_output_list(model(*inputs)), targets)

        for parameter in model.parameters():
            parameter.requires_grad_(True)
        train({"model": model}, step_loss, self.fine_tune_steps, self.lr, progress=ctx.progress)
        for parameter in model.parameters():
            parameter.requires_grad_(False)


def what_sparsity_buys(runtime: str, pattern: str) -> str:
    return WHAT_SPARSITY_BUYS.get((runtime, pattern)) or WHAT_SPARSITY_BUYS.get(runtime) or "not measured for this runtime"


def _nothing_to_prune(left: dict[str, str]):
    from compressor.errors import ConfigError

    reasons = "; ".join(f"{name}: {why}" for name, why in list(left.items())[:3]) or "the model has no conv or linear layer"
    return ConfigError(f"prune: no layer can be magnitude-pruned ({reasons}); change the pattern or drop the stage")


def _psnr(model: nn.Module, ctx, inputs: tuple) -> float:
    import torch

    from compressor.evaluate.paired import data_range_of, psnr
    from compressor.modelcard import as_output_list

    with torch.no_grad():
        expected = as_output_list(ctx.reference(*inputs))[0].numpy()
        actual = as_output_list(model(*inputs))[0].numpy()
    return psnr(expected, actual, data_range_of(ctx.card.output_range, expected))


def _compressed_bytes(model: nn.Module) -> int:
    """Size of the fp32 weights after zlib (level 6): what a zipped file of them would take."""
    import zlib

    compressor = zlib.compressobj(6)
    size = 0
    for tensor in model.state_dict().values():
        size += len(compressor.compress(tensor.detach().cpu().contiguous().numpy().tobytes()))
    return size + len(compressor.flush())
