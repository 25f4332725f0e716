"""NNCF plumbing for the qat stage, imported only when a qat stage runs (NNCF is an optional extra).

NNCF's fake quantizers run a C++ extension that torch compiles on first use into its extensions cache, guarded by
a `lock` file; NNCF gives up waiting for it after NNCF_EXTENSION_LOAD_TIMEOUT seconds. A build whose process
ends first (killed, or failed on that timeout) leaves the lock behind, and every later load waits on it until
the timeout, then fails with NNCF's opaque ExtensionLoaderTimeoutException. load_extension() loads the extension
up front and turns a stale lock or a too-slow build into one line with the fix.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from compressor.errors import ConfigError
from compressor.quiet import quieted

_WRAPPER_PREFIX = "model."  # parameter names inside Wrapped


MAX_INPUTS = 4
TIMEOUT_ENV = "NNCF_EXTENSION_LOAD_TIMEOUT"  # NNCF's own variable, read when it loads the extension
# NNCF's default of 60 s is shorter than a first build on a busy shared 2-core machine (it took longer there).
SLOW_MACHINE_TIMEOUT_S = 300
# NNCF node types of the ops whose weights int8 quantization is about (not norms' affine weights).
_WEIGHTED_OPS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
                 "linear", "matmul", "addmm", "bmm", "baddbmm"}


class Wrapped(nn.Module):
    """Holds the model as a child: NNCF sends a torch.fx GraphModule (what rewrites return) to its
    experimental FX backend, which fails on it; a plain module goes to its regular torch backend.

    The inputs are named parameters, not *inputs: NNCF quantizes a model input only when it arrives as a
    named argument of forward(), and without that quantizer the first layer would run in float."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_0, input_1=None, input_2=None, input_3=None):
        return self.model(*(x for x in (input_0, input_1, input_2, input_3) if x is not None))


def import_nncf():
    """NNCF, with its C++ extension loaded (load_extension), so the qat stage never waits on it mid-way."""
    os.environ.setdefault("NNCF_CI", "1")  # no telemetry (docs/architecture.md)
    try:
        import nncf
    except ImportError as exc:
        raise ConfigError(f"qat needs NNCF ({exc}); pip install -e '.[qat]'") from exc
    load_extension()
    return nncf


def load_extension() -> None:
    """Build (first time) and load NNCF's CPU quantization extension; one ConfigError line when a build lock
    blocks it. `make install` calls this once, so the first qat run does not pay for the build."""
    from nncf.torch.extensions import ExtensionLoaderTimeoutException
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU, QuantizedFunctionsCPULoader

    build_dir = Path(QuantizedFunctionsCPULoader.get_build_dir())
    load_unblocked(build_dir, lambda: QuantizedFunctionsCPU.get("Quantize_forward"), ExtensionLoaderTimeoutException)


def load_unblocked(build_dir: Path, load: Callable[[], object], timeout_error: type[Exception]) -> None:
    """Run NNCF's `load` of the extension built in `build_dir`, with the slow-machine timeout unless the user set
    one; a stale build lock, or `timeout_error` (NNCF giving up), becomes one ConfigError line with the fix."""
    os.environ.setdefault(TIMEOUT_ENV, str(SLOW_MACHINE_TIMEOUT_S))  # before NNCF reads it; a user's own value wins
    timeout = extension_timeout()
    # A lock older than any build takes would block this load too: say so now, not after the wait.
    stale_lock_check(build_dir, timeout if timeout > 0 else SLOW_MACHINE_TIMEOUT_S)
    try:
        load()
    except timeout_error as exc:
        stale_lock_check(build_dir, timeout)  # a lock older than the wait: another build that never finished
        # Else this run's own build was too slow; its lock outlives the process, so it must go too.
        raise ConfigError(
            f"qat: NNCF's C++ extension did not build within {timeout} s; clear the unfinished build with "
            f"`rm -rf {build_dir}`, then rerun with {TIMEOUT_ENV} set to more seconds (0: no limit)"
        ) from exc


def extension_timeout() -> int:
    """NNCF's load timeout in seconds, as it reads it; 0 (or less) is no limit."""
    raw = os.environ.get(TIMEOUT_ENV, str(SLOW_MACHINE_TIMEOUT_S))
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={raw!r}: expected whole seconds; set it to e.g. {SLOW_MACHINE_TIMEOUT_S}") from None


def stale_lock_check(build_dir: Path, older_than_s: float) -> None:
    """ConfigError naming torch's build lock in `build_dir` and the command that clears it, when the lock is
    at least `older_than_s` seconds old: no build takes that long (NNCF stops waiting then), so the process that
    took it is gone, and torch would wait on it forever. Nothing is deleted here: another run may be building."""
    lock = Path(build_dir) / "lock"  # torch.utils.cpp_extension's FileBaton
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return
    if age >= older_than_s:
        raise ConfigError(
            f"qat: NNCF's C++ extension build is blocked by {lock}, left {age:.0f} s ago by a build that never "
            f"finished; if no other qat run is building it, clear it with `rm -rf {build_dir}` and rerun"
        )


def quiet():
    """NNCF draws progress bars and logs INFO lines; torchao (imported by nncf.strip) warns about GPU kernels
    it cannot load on a CPU machine. None of it is for the user of a CLI that reports its own steps."""
    return quieted(("nncf", "torchao", "torch.utils._pytree"), stderr=True)


def use_weight_bits(quantized: nn.Module, weight_bits: int) -> None:
    """Put every weight quantizer on exactly the grid the target runs (7-bit weights on x86 without VNNI,
    config.py), so fine-tuning sees the rounding the deployed kernels do; the clipping range stays, the
    steps double, as ORT's reduce_range does. Set on the quantizers after nncf.quantize because NNCF's
    hardware config refuses 7-bit quantizers up front, and its "overflow fix" only initialises the scale
    for half the range, then trains and exports all 8 bits."""
    for _, module, _ in _weight_quantizers(quantized):
        module.num_bits = weight_bits


def bake_narrow_weights(quantized: nn.Module, example) -> None:
    """Make the model strippable after use_weight_bits: nncf.strip converts only 8-bit quantizers. Each
    weight is replaced by its fake-quantized value (what training used), and its quantizer becomes an
    8-bit one with the same step (scale x level_high(8) / level_high(n)). The baked weights sit on levels
    within the n-bit range, so the exported int8 weights are exactly the n-bit ones."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph
    from nncf.torch.model_graph_manager import get_const_node

    graph = build_nncf_graph(quantized, example)
    with torch.no_grad():
        for op_name, module, port in _weight_quantizers(quantized):
            if module.num_bits == 8:
                continue
            const = get_const_node(graph.get_node_by_name(op_name), port, graph)
            weight = quantized.get_parameter(const.layer_attributes.name)
            low, high = module.get_input_low_input_high()
            weight.copy_(module.quantize(torch.clamp(weight, low, high)))
            narrow_high = module.level_high
            module.num_bits = 8
            module.scale = nn.Parameter(module.scale * (module.level_high / narrow_high))


def _weight_quantizers(quantized: nn.Module):
    """(op name, quantizer, input port) of each weight quantizer: the per-channel ones NNCF hooks onto an
    op's input."""
    from nncf.torch.function_hook.hook_storage import decode_hook_name
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    for name, module in get_hook_storage(quantized).named_hooks():
        hook_type, op_name, port = decode_hook_name(name)
        if hook_type == "pre_hooks" and isinstance(module, BaseQuantizer) and module.per_channel:
            yield op_name, module, port


def quantizable_layers(wrapped: Wrapped, example) -> tuple[list[str], dict[str, list[str]]]:
    """Module names of the layers NNCF may quantize (the owners of weights that ops read, in graph order,
    named as the ptq stage and `compressor inspect` name them) and, per layer, the NNCF graph nodes that
    read its weight (what an IgnoredScope names to keep the layer in float)."""
    from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

    graph = build_nncf_graph(wrapped, example)
    op_nodes: dict[str, list[str]] = {}
    for node in graph.get_all_nodes():
        if node.node_type != "nncf_model_const" or not node.node_name.endswith(".weight"):
            continue
        layer = node.node_name.removeprefix(_WRAPPER_PREFIX).removesuffix(".weight")
        users = [edge.to_node.node_name for edge in graph.get_output_edges(node) if edge.to_node.node_type in _WEIGHTED_OPS]
        if users:
            op_nodes.setdefault(layer, []).extend(users)
    return list(op_nodes), op_nodes


def stripped(quantized: nn.Module, example) -> nn.Module:
    """NNCF's model with its quantizers turned into torch's own fake-quantize ops (which ONNX export maps to
    QuantizeLinear/DequantizeLinear)."""
    import nncf

    _unshare_quantizers(quantized)
    bake_narrow_weights(quantized, example)
    return nncf.strip(quantized, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example).eval()


def _unshare_quantizers(quantized: nn.Module) -> None:
    """Give every hook its own quantizer object. NNCF shares one quantizer among the inputs of a concat
    (unified scales), but nncf.strip converts only the first hook of a shared quantizer (it walks a
    de-duplicated list) and the others export as OpenVINO's FakeQuantize, which ORT cannot run. The copies
    keep the same scale, so the shared grid survives."""
    from nncf.torch.function_hook.wrapper import get_hook_storage

    storage = get_hook_storage(quantized)
    seen: set[int] = set()
    for hooks in (storage.pre_hooks, storage.post_hooks):
        for group in hooks.values():
            for key, module in list(group.items()):
                if id(module) in seen:
                    group[key] = copy.deepcopy(module)
                seen.add(id(group[key]))
