"""The contract every runtime keeps, as one template test class (NNCF's style): a runtime's test module
subclasses `RuntimeContract`, names its target, and so inherits every test below.

The contract: the runtime exports a generator written the way users write them, without a plan (one final
fp32 artifact) and with ptq's plan (a baseline then a final artifact); its runner reproduces torch; it times
an artifact or says why it cannot here; a layer rule in the plan is honoured in the artifact and the record of
each layer's precision says what the artifact really holds; bad input is refused with one line.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from compressor.config import resolve
from compressor.context import RunContext
from compressor.errors import CompressorError, ConfigError
from compressor.evaluate.paired import psnr
from compressor.modelcard import ModelCard, sample_inputs
from compressor.runtimes import runtime_for
from compressor.runtimes.onnx.layers import int8_layers, node_layers
from compressor.stages.ptq import PTQConfig


class Generator(nn.Module):
    """Linear -> view -> ConvTranspose -> conv -> conv head, wide enough that every quantizer takes the body."""

    def __init__(self) -> None:
        super().__init__()
        self.project = nn.Linear(16, 32 * 4 * 4)
        self.body = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Conv2d(16, 3, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.project(z).view(-1, 32, 4, 4)))


CARD = ModelCard.model_validate({
    "name": "contract-generator", "inputs": {"z": {"shape": [16]}}, "outputs": {"image": {"shape": [3, 8, 8], "range": [-1, 1]}},
})
FLOAT_LAYER = "body.3"  # the layer the plan's rule keeps in float


class RuntimeContract:
    target: str  # set by each subclass
    min_psnr: float = 30.0  # int8 artifact vs torch
    unexportable_names_layer: bool = False  # whether an export failure names the layer it happened in

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls):
        torch.manual_seed(0)
        return Generator().eval()

    @classmethod
    def context(cls, model, tmp_path) -> RunContext:
        return RunContext.create(model, CARD, resolve(cls.target), tmp_path)

    @pytest.fixture(scope="class")
    @classmethod
    def exported(cls, model, tmp_path_factory):
        """(runtime, artifacts) of an export with ptq's plan, one layer kept in float by a rule."""
        out = tmp_path_factory.mktemp("contract")
        ctx = cls.context(model, out)
        ptq = PTQConfig(samples=64, method=cls.method(ctx), rules=[{"match": FLOAT_LAYER, "skip": True}])
        plan = ptq.run(model, ctx).plan
        runtime = runtime_for(ctx.config.target)
        return runtime, runtime.export(model, CARD, plan, out)

    @staticmethod
    def method(ctx) -> str:
        return next(stage.method for stage in ctx.config.profile.stages if stage.kind == "ptq")

    @staticmethod
    def outputs(runtime, artifact, model) -> tuple[np.ndarray, np.ndarray]:
        """(torch's output, the artifact's on the runtime's runner) on 32 seeded latents."""
        inputs = sample_inputs(CARD, 32, seed=123)
        with torch.no_grad():
            expected = model(*inputs.values()).numpy()
        return expected, runtime.load(artifact)({name: t.numpy() for name, t in inputs.items()})[0]

    def test_without_a_plan_the_fp32_export_is_final_and_matches_torch(self, model, tmp_path):
        runtime = runtime_for(self.context(model, tmp_path).config.target)
        (artifact,) = runtime.export(model, CARD, None, tmp_path)
        assert (artifact.role, artifact.precision, artifact.path.is_file()) == ("final", "fp32", True)
        expected, actual = self.outputs(runtime, artifact, model)
        np.testing.assert_allclose(actual, expected, atol=1e-4)

    def test_a_plan_gives_a_baseline_then_a_smaller_final_artifact(self, exported, model):
        _, (baseline, final) = exported
        assert (baseline.role, final.role) == ("baseline", "final")
        assert final.precision == "mixed" and final.path.stat().st_size < baseline.path.stat().st_size
        record = final.record()
        assert len(record["sha256"]) == 64 and record["bytes"] == final.path.stat().st_size

    def test_final_artifact_stays_close_to_torch(self, exported, model):
        runtime, (_, final) = exported
        expected, actual = self.outputs(runtime, final, model)
        assert psnr(expected, actual, 2.0) >= self.min_psnr

    def test_benchmark_times_the_artifact_or_says_why_not(self, exported):
        runtime, (_, final) = exported
        latency = runtime.benchmark(final, CARD, seed=0)
        if "pending" in latency:
            assert isinstance(latency["pending"], str) and latency["pending"]
        else:
            batches = runtime.target.benchmark.batch_sizes
            assert sorted(map(int, latency["batches"])) == sorted(batches)
            assert all(stats["median_ms"] > 0 for stats in latency["batches"].values())

    @staticmethod
    def int8_layers(baseline, final, model) -> set[str]:
        """The layers the final artifact holds in int8, read from the file itself (each runtime's format)."""
        return int8_layers(onnx.load(str(final.path)), node_layers(onnx.load(str(baseline.path))))

    def test_the_rule_is_honoured_and_the_record_says_what_the_artifact_holds(self, exported, model):
        _, (baseline, final) = exported
        layers = final.details["layers"]
        assert layers[FLOAT_LAYER]["precision"] != "int8" and layers[FLOAT_LAYER]["reason"].startswith("rule 0")
        actual = self.int8_layers(baseline, final, model)
        assert FLOAT_LAYER not in actual and {"project", "body.1"} <= actual
        assert {layer for layer, entry in layers.items() if entry["precision"] == "int8"} == actual

    def test_a_rule_for_a_precision_the_target_cannot_run_is_refused(self, model, tmp_path):
        ctx = self.context(model, tmp_path)
        rules = [{"match": "body.1", "precision": "fp32"}, {"match": "head.0", "precision": "fp16"}]  # one is not its float
        ptq = PTQConfig(samples=64, method=self.method(ctx), rules=rules)
        runtime = runtime_for(ctx.config.target)
        with pytest.raises(ConfigError, match=r"ptq.rules\[\d\]: layer '(body.1|head.0)' asks for fp(16|32)"):
            runtime.export(model, CARD, ptq.run(model, ctx).plan, tmp_path)

    def test_a_model_that_cannot_be_exported_is_one_line(self, tmp_path):
        class Eigen(nn.Module):
            def forward(self, z):
                return torch.linalg.eigvals(z.view(-1, 4, 4)).real  # no ONNX export, no LiteRT lowering

        class Broken(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.odd = Eigen()

            def forward(self, z):
                return self.odd(z)

        runtime = runtime_for(resolve(self.target).target)
        with pytest.raises(CompressorError) as info:
            runtime.export(Broken().eval(), CARD, None, tmp_path)
        assert "\n" not in info.value.message
        assert self.unexportable_names_layer is False or "'odd'" in info.value.message
