"""The one registry of runtimes: config validation (each runtime's options schema), `compressor doctor` and the
run's loader all read `RUNTIMES`. Adding a runtime = one module with a `Runtime` subclass, listed here.

Runtime modules keep their heavy imports (onnxruntime, modelopt, tensorrt, litert) inside functions, so importing
this registry stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Union

from pydantic import Field

from compressor.errors import CompressorError
from compressor.runtimes.base import Runtime
from compressor.runtimes.litert import LiteRT
from compressor.runtimes.onnxruntime import OnnxRuntime
from compressor.runtimes.tensorrt import TensorRT

if TYPE_CHECKING:
    from compressor.config import Target

RUNTIMES: dict[str, type[Runtime]] = {runtime.name: runtime for runtime in (OnnxRuntime, TensorRT, LiteRT)}

AnyRuntimeOptions = Annotated[Union[tuple(runtime.Options for runtime in RUNTIMES.values())], Field(discriminator="kind")]


def runtime_for(target: Target) -> Runtime:
    """The back end for `target`, or a one-line error saying why it cannot run here."""
    runtime = RUNTIMES[target.runtime.kind]
    reason = runtime.unavailable_reason()
    if reason:
        raise CompressorError(f"target {target.name}: runtime '{runtime.name}' cannot run here: {reason}")
    return runtime(target)
