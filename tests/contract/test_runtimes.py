"""Every runtime keeps the contract in runtime_contract.py: one subclass per runtime, naming a target of it."""

from __future__ import annotations

import pytest
from runtime_contract import RuntimeContract

from compressor.runtimes.litert import LiteRT
from compressor.runtimes.tensorrt import TensorRT


class TestOnnxRuntime(RuntimeContract):
    target = "cpu"


@pytest.mark.skipif(TensorRT.unavailable_reason() is not None, reason="the [tensorrt] extra is not installed")
class TestTensorRT(RuntimeContract):
    """Exported and checked here; its numerics are simulated on ONNX Runtime CPU, its latency pending."""

    target = "jetson"


@pytest.mark.skipif(LiteRT.unavailable_reason() is not None, reason="the [tflite] extra is not installed")
class TestLiteRT(RuntimeContract):
    """Converted by litert-torch, int8 by litert-quantizer, run and timed by ai-edge-litert with XNNPACK."""

    target = "mobile"
    unexportable_names_layer = True

    @staticmethod
    def int8_layers(baseline, final, model) -> set[str]:
        from compressor.runtimes.litert_convert import fold_batchnorm_if_traceable
        from compressor.runtimes.litert_graph import int8_layers, module_scopes, read_ops

        return int8_layers(read_ops(final.path, module_scopes(fold_batchnorm_if_traceable(model))))
