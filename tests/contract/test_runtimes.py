"""Every runtime keeps the contract in runtime_contract.py: one subclass per runtime, naming a target of it."""

from __future__ import annotations

import pytest
from runtime_contract import RuntimeContract

from compressor.runtimes.tensorrt import TensorRT


class TestOnnxRuntime(RuntimeContract):
    target = "cpu"


@pytest.mark.skipif(TensorRT.unavailable_reason() is not None, reason="the [tensorrt] extra is not installed")
class TestTensorRT(RuntimeContract):
    """Exported and checked here; its numerics are simulated on ONNX Runtime CPU, its latency pending."""

    target = "jetson"
