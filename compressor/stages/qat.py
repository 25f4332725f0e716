"""The qat stage: quantization-aware fine-tuning, data-free, distilled from the fp32 model. The fake quantizer
is the one the target's runtime names: NNCF for the CPU targets (below), ModelOpt for TensorRT (qat_modelopt.py).

NNCF inserts fake quantizers (per-channel symmetric weights on the target's grid: 7-bit on cpu-x86, see
config.py; int8 activations) initialised by a post-training calibration on prior samples (or the user's
calibration file); the quantized model is then fine-tuned so that its output matches the frozen fp32
reference on fresh prior samples (mean squared error), which lets the weights and quantizer scales adapt to
the rounding. BatchNorm layers stay frozen (eval) while training: in train mode their batch statistics
destroyed quality (docs/architecture.md); the rewrite stage usually folds them first. The result leaves
through `nncf.strip` as a torch model with fake-quantize ops (a `FakeQuantizedPlan`), which the target
runtime exports as Q/DQ ONNX in the form its kernels want.

NNCF, not a loop of our own: it places quantizers the way int8 kernels fuse them, unifies the scales of
concatenated tensors and learns the scales. It is an optional extra (`pip install -e .[qat]`).
"""

from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from compressor.errors import ConfigError
from compressor.layer_rules import precision_plan
from compressor.modelcard import as_output_list
from compressor.quantization import FakeQuantizedPlan
from compressor.seeds import (
    CALIBRATION_SEED_OFFSET,
    QAT_CHECK_SEED_OFFSET,
    QAT_TRAIN_SEED_OFFSET,
)
from compressor.stages.base import StageResult
from compressor.stages.quantizing import QuantizingStage

if TYPE_CHECKING:
    import torch
    import torch.nn as nn


class QATConfig(QuantizingStage):
    """Fine-tune an int8 fake-quantized copy of the model against the fp32 one; the runtime exports it as QDQ."""

    kind: Literal["qat"] = "qat"
    steps: int = Field(300, ge=0, description="Fine-tuning steps (0 = NNCF's post-training init only).")
    batch: int = Field(32, ge=1, description="Prior samples per step.")
    lr: float = Field(1e-4, gt=0, description="Adam's starting learning rate (cosine decay to 0 over the steps).")

    def run(self, model: nn.Module, ctx) -> StageResult:
        self._check_supported(model, ctx)
        quantizer = ctx.config.target.runtime.qat_quantizer
        quantized, plan, exportable = (self._nncf if quantizer == "nncf" else self._modelopt)(copy.deepcopy(model), ctx)
        held_out = self._inputs(ctx, QAT_CHECK_SEED_OFFSET, 256)  # fewer latents moved PSNR by 2-3 dB
        reference = _first_output(ctx.reference, held_out)
        before = _psnr(reference, quantized, ctx, held_out)
        start, losses = time.perf_counter(), self._fine_tune(quantized, ctx)
        seconds, after = time.perf_counter() - start, _psnr(reference, quantized, ctx, held_out)
        metrics = {
            "quantizer": quantizer, "steps": self.steps, "train_seconds": seconds,
            "calibration": self.calibration or self.data_free_source(ctx), "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "psnr_db_before_training": before, "psnr_db_after_training": after,
        }
        return StageResult(model=model, plan=FakeQuantizedPlan(exportable(quantized), plan, self.min_psnr), metrics=metrics)

    def _check_supported(self, model: nn.Module, ctx) -> None:
        import torch

        from compressor.stages import qat_nncf

        self.check_target(ctx)
        if isinstance(model, torch.jit.ScriptModule):
            raise ConfigError(
                "qat: a TorchScript model cannot be fine-tuned as it is; keep the rewrite stage before qat (it turns the "
                "model into torch modules), or load the model from a folder or state_dict"
            )
        if ctx.config.target.runtime.qat_quantizer == "nncf" and len(ctx.card.inputs) > qat_nncf.MAX_INPUTS:
            raise ConfigError(f"qat: models with more than {qat_nncf.MAX_INPUTS} inputs are not supported yet; use ptq")

    def _calibration(self, ctx) -> list[tuple[torch.Tensor, ...]]:
        """NNCF's initial calibration batches: the user's file when given, else seeded prior samples."""
        import torch

        data = self.user_calibration(ctx)
        if data is None:
            inputs = self.data_free_inputs(ctx, self.samples, CALIBRATION_SEED_OFFSET)
            return [tuple(t[i : i + 16] for t in inputs.values()) for i in range(0, self.samples, 16)]
        from compressor.calibration import batches

        return [tuple(torch.from_numpy(a) for a in feed.values()) for feed in batches(data, 16)]

    def _subset(self, calibration: list[tuple[torch.Tensor, ...]]) -> int:
        return self.samples if self.calibration is None else sum(len(inputs[0]) for inputs in calibration)

    def _nncf(self, model: nn.Module, ctx):
        """NNCF's fake-quantized model (the CPU targets' scheme), each layer's precision, and how to make the
        trained model exportable (nncf.strip)."""
        from compressor.stages import qat_nncf

        example = _nncf_item(self._inputs(ctx, CALIBRATION_SEED_OFFSET, 2))
        with qat_nncf.quiet():
            quantized, plan = self._quantize(qat_nncf.Wrapped(model).eval(), example, ctx)

        def stripped(trained: nn.Module) -> nn.Module:
            with qat_nncf.quiet():
                return qat_nncf.stripped(trained, example)

        return quantized, plan, stripped

    def _modelopt(self, model: nn.Module, ctx):
        """ModelOpt's fake-quantized model (TensorRT's scheme: qat_modelopt.py), layers kept in float as the
        rules say, and each layer's precision; its quantizers export as they are."""
        from compressor.stages import qat_modelopt

        target = ctx.config.target
        quantized, layers = qat_modelopt.quantize(model.eval(), self._calibration(ctx))
        plan, _ = precision_plan(layers, self.rules, "qat.rules", target, target.runtime.float_precision)
        qat_modelopt.keep_in_float(quantized, [layer for layer, (precision, _) in plan.items() if precision != "int8"])
        return quantized, plan, lambda trained: trained.eval()

    def _quantize(self, wrapped: nn.Module, example, ctx) -> tuple[nn.Module, dict[str, tuple[str, str]]]:
        """NNCF's post-training int8 model (the starting point of fine-tuning), layers kept in float as the
        rules say, weights on the target's grid; and each layer's precision and why."""
        from compressor.stages import qat_nncf

        nncf = qat_nncf.import_nncf()
        target = ctx.config.target
        layers, op_nodes = qat_nncf.quantizable_layers(wrapped, example)
        plan, _ = precision_plan(layers, self.rules, "qat.rules", target, target.runtime.float_precision)
        float_ops = [node for layer, nodes in op_nodes.items() if plan[layer][0] != "int8" for node in nodes]
        calibration = self._calibration(ctx)
        # The activation scheme the target runs: MIXED = asymmetric activations (what ORT x86 runs),
        # PERFORMANCE = symmetric (TensorRT). On the demos both gave the same quality after fine-tuning
        # (512 latents: DCGAN 46.1 vs 46.1 dB, VAE 44.3 vs 44.6 dB), so this only keeps the grids honest.
        preset = nncf.QuantizationPreset.PERFORMANCE if target.quantization.activation_symmetric else nncf.QuantizationPreset.MIXED
        quantized = nncf.quantize(
            wrapped, nncf.Dataset([_nncf_item(inputs) for inputs in calibration]), subset_size=self._subset(calibration),
            preset=preset, ignored_scope=nncf.IgnoredScope(names=float_ops),
        )
        qat_nncf.use_weight_bits(quantized, target.quantization.weight_bits)
        return quantized, plan

    def _fine_tune(self, quantized: nn.Module, ctx) -> list[float]:
        """Distil the frozen fp32 reference into the fake-quantized model on fresh prior samples (the shared
        training loop, compressor/training.py; it keeps BatchNorm statistics frozen)."""
        import torch

        from compressor.distributed import world
        from compressor.training import train

        ranks = world()
        ranks.check_batch(self.batch, "stages.qat.batch")

        def step_loss(step: int) -> torch.Tensor:
            inputs = ranks.batch_slice(self._inputs(ctx, QAT_TRAIN_SEED_OFFSET + step, self.batch))
            with torch.no_grad():
                targets = as_output_list(ctx.reference(*inputs))
            outputs = as_output_list(quantized(*inputs))
            return sum(torch.nn.functional.mse_loss(o, t) for o, t in zip(outputs, targets))

        # Cosine decay to 0 (in train): at a constant rate Adam keeps moving weights across grid points (a 7-bit
        # step is a few 1e-4 here) and quality drifts down after its peak; measured on the DCGAN demo, 600 steps,
        # PSNR on 256 held-out latents: constant 1e-4 peaked at 45.1 dB and ended at 43.9, cosine ended at 45.7.
        return train({"model": quantized}, step_loss, self.steps, self.lr, progress=ctx.progress).losses

    @staticmethod
    def _inputs(ctx, offset: int, batch: int) -> tuple[torch.Tensor, ...]:
        return tuple(ctx.model_inputs(batch, offset).values())


def _nncf_item(inputs: tuple) -> object:
    """What NNCF feeds the model: a lone tensor for one input, not a 1-tuple (NNCF then also quantizes the
    model input, else the first layer runs in float), a tuple of positional inputs otherwise."""
    return inputs[0] if len(inputs) == 1 else inputs


def _first_output(model: nn.Module, inputs: tuple):
    import torch

    with torch.no_grad():
        return as_output_list(model(*inputs))[0].numpy()


def _psnr(reference, model: nn.Module, ctx, inputs: tuple) -> float:
    """PSNR of `model`'s first output vs the reference model's (computed once by the caller) on `inputs`."""
    from compressor.evaluate.paired import data_range_of, psnr

    value_range = data_range_of(ctx.card.output_range, reference)
    return psnr(reference, _first_output(model, inputs), value_range)
