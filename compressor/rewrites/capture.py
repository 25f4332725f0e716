"""A module graph the rewrites can read, for every model a user brings, whatever it came as.

The rewrites match module calls (an nn.ConvTranspose2d, an nn.Upsample feeding an nn.Conv2d) in a torch.fx
graph. Three kinds of model give torch.fx no such graph:

- TorchScript modules (fx cannot trace them at all);
- Python models with control flow on shapes or Python containers (diffusers' blocks: "symbolically traced
  variables cannot be used as inputs to control flow"), which fx's symbolic tracer refuses;
- torch.export programs (`.pt2`), whose graph is ATen calls on flat weights, with no module calls left.

For those, `capture` records the model with torch.export, which runs the Python and specialises each shape
branch instead of failing (TorchScript goes through torch's TorchScript-to-export converter), and
`rewrites/lift.py` turns the ATen calls the rewrites know back into the nn modules they came from. Every
rewrite then runs unchanged on every format, and QAT and pruning, which need torch modules, get them too.

Why not rewrite the exported ONNX graph instead: the rewrites' fast forms (and what was measured about which
form ORT's int8 kernels run best) live in torch, and QAT must train the rewritten form; a second
implementation of each rewrite on ONNX would be two registries that must agree.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import operator
import warnings

import torch
import torch.fx as fx
import torch.nn as nn

from compressor.errors import first_line
from compressor.modelcard import as_output_list
from compressor.rewrites.lift import lift_modules


def capture(model: nn.Module, example: tuple) -> fx.GraphModule:
    """`model` as an fx GraphModule of module calls, recorded with torch.export on `example` (batch free)."""
    with _quiet_export():
        return _capture(model, example)


@contextlib.contextmanager
def _quiet_export():
    """torch.export logs a warning line per size it specialises (the 1x1 of a latent); they are expected here."""
    loggers = [logging.getLogger(name) for name in ("torch._export", "torch.export", "torch.fx.experimental.symbolic_shapes")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _capture(model: nn.Module, example: tuple) -> fx.GraphModule:
    if isinstance(model, torch.jit.ScriptModule):
        return lift_modules(_capture_torchscript(model, example))
    if is_exported_module(model):
        return lift_modules(model)
    dynamic = tuple({0: torch.export.Dim.AUTO} for _ in example)
    program = torch.export.export(model, example, dynamic_shapes=dynamic, strict=False)
    return lift_modules(plain_graph_module(program))


class _CallScripted(nn.Module):
    """torch.export refuses a ScriptModule, but not a module that calls one: run under export's fake tensors,
    the TorchScript interpreter dispatches ATen ops like any Python model (at the example's sizes)."""

    def __init__(self, scripted: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.scripted = _with_parameters(scripted)

    def forward(self, *inputs):
        return self.scripted(*inputs)


def _with_parameters(scripted: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """A copy whose parameters are nn.Parameter objects again: torch.jit.load gives plain tensors, which
    torch.export refuses as a module's parameters. The user's module is left as it is (it is the reference)."""
    copied = copy.deepcopy(scripted)
    for module in copied.modules():
        for name, tensor in list(module.named_parameters(recurse=False)):
            if not isinstance(tensor, nn.Parameter):
                setattr(module, name, nn.Parameter(tensor.detach(), requires_grad=False))
    return copied


def _capture_torchscript(model: torch.jit.ScriptModule, example: tuple) -> fx.GraphModule:
    """Through _CallScripted at the example's batch, freed and checked like a fixed-batch `.pt2`. Traces that
    record sizes as tensors (attention reshapes) defeat torch's TorchScript-to-export converter, which this
    path does not need; the converter stays the fallback for what this path cannot run."""
    try:
        # Off: the TorchScript executor would otherwise profile the run under export's fake tensors and specialise
        # the module (the user's too: copies share it) on them, breaking its later real runs.
        with torch.jit.optimized_execution(False):
            program = torch.export.export(_CallScripted(model), example, strict=False)
        return free_batch_checked(_without_prefix(plain_graph_module(program), "scripted"), model, example)
    except Exception as first:  # then the converter; if it fails too, both reasons matter
        from torch._export.converter import TS2EPConverter

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # notes on unused BatchNorm counters, not ours to fix
                return plain_graph_module(TS2EPConverter(model, example).convert())
        except Exception as second:
            raise RuntimeError(f"{type(first).__name__}: {first_line(first)}; converter: {type(second).__name__}: "
                               f"{first_line(second)}") from second


def _without_prefix(graph_module: fx.GraphModule, prefix: str) -> fx.GraphModule:
    """Move the children of `prefix` to the root and read weights from there: layers keep the names the
    user's model gives them ("conv_in", not "scripted.conv_in")."""
    holder = graph_module.get_submodule(prefix)
    for name, child in list(holder.named_children()):
        setattr(graph_module, name, child)
    for name, tensor in list(holder.named_parameters(recurse=False)) + list(holder.named_buffers(recurse=False)):
        setattr(graph_module, name, tensor)
    for node in graph_module.graph.nodes:
        if node.op in ("get_attr", "call_module") and node.target.startswith(f"{prefix}."):
            node.target = node.target[len(prefix) + 1:]
    delattr(graph_module, prefix)
    graph_module.recompile()
    return graph_module


def is_exported_module(model: nn.Module) -> bool:
    """True for a GraphModule made from a torch.export program (its graph calls ATen ops, not modules)."""
    if not isinstance(model, fx.GraphModule):
        return False
    return any(
        node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) for node in model.graph.nodes
    )


def plain_graph_module(program: torch.export.ExportedProgram) -> fx.GraphModule:
    """`program.module()` without its input guards (they pin the batch size it was exported with; the batch
    is freed and checked by the caller) and without pytree plumbing: forward takes the inputs positionally
    and returns one tensor or a tuple, as the model did."""
    module = program.module()
    graph = module.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
    single_output = program.call_spec.out_spec is not None and program.call_spec.out_spec.is_leaf()
    graph._codegen = fx.graph.CodeGen()
    output = next(node for node in graph.nodes if node.op == "output")
    values = output.args[0]
    if single_output and isinstance(values, (tuple, list)) and len(values) == 1:
        output.args = (values[0],)
    plain = fx.GraphModule(module, graph, "ExportedModel")
    if hasattr(plain, "_guards_fn"):
        del plain._guards_fn
    plain.graph.lint()
    plain.recompile()
    return plain


aten = torch.ops.aten
# Ops that take a shape list, and the position of that list: where a program exported with a fixed batch
# wrote its batch size as a number.
_SHAPE_ARGUMENT = {
    aten.view.default: 1, aten.reshape.default: 1, aten._unsafe_view.default: 1, aten.expand.default: 1,
    aten.new_zeros.default: 1, aten.new_ones.default: 1, aten.new_full.default: 1, aten.new_empty.default: 1,
    aten.zeros.default: 0, aten.ones.default: 0, aten.full.default: 0, aten.randn.default: 0,
}


def free_batch(graph_module: fx.GraphModule, batch: int) -> int:
    """Replace, in place, each shape list whose leading number is a multiple of `batch` (the fixed batch a
    program was exported with: `view(x, [2, 512, 64])`, `view(x, [2 * heads, ...])`) with the same multiple of
    the first input's actual batch size. Returns how many it changed. A guess by construction: the caller
    checks the result against the program at other batch sizes."""
    graph = graph_module.graph
    placeholders = [node for node in graph.nodes if node.op == "placeholder"]
    with graph.inserting_after(placeholders[-1]):
        size = graph.call_function(aten.sym_size.int, (placeholders[0], 0))
    from_inputs = _reachable(placeholders)
    changed = 0
    for node in list(graph.nodes):
        position = _SHAPE_ARGUMENT.get(node.target)
        shape = node.args[position] if position is not None and len(node.args) > position else None
        if not isinstance(shape, (list, tuple)) or not shape or not isinstance(shape[0], int) or shape[0] % batch:
            continue
        if position == 1 and node.args[0] not in from_inputs:
            continue  # a view of a weight or constant: its leading size is not the batch
        with graph.inserting_before(node):
            leading = size if shape[0] == batch else graph.call_function(operator.mul, (size, shape[0] // batch))
        args = list(node.args)
        args[position] = [leading, *shape[1:]]
        node.args = tuple(args)
        changed += 1
    if not changed:
        graph.erase_node(size)
    graph_module.recompile()
    return changed


def free_batch_checked(graph_module: fx.GraphModule, original: nn.Module, example: tuple) -> fx.GraphModule:
    """free_batch at the example's batch, then check_batch_is_free against `original` (raises on a mismatch)."""
    free_batch(graph_module, int(example[0].shape[0]))
    check_batch_is_free(original, graph_module, example)
    return graph_module


def _reachable(sources: list[fx.Node]) -> set[fx.Node]:
    """Every node whose value depends on one of `sources`."""
    seen, stack = set(sources), list(sources)
    while stack:
        for user in stack.pop().users:
            if user not in seen:
                seen.add(user)
                stack.append(user)
    return seen


def check_batch_is_free(original: nn.Module, freed: nn.Module, example: tuple) -> None:
    """freed(three batches stacked) == original(each batch alone), on the example and two perturbed copies."""
    generator = torch.Generator().manual_seed(0)
    batches = [example] + [
        tuple(t + 0.1 * torch.randn(t.shape, generator=generator) if t.is_floating_point() else t for t in example)
        for _ in range(2)
    ]
    with torch.no_grad():
        expected = [as_output_list(original(*inputs)) for inputs in batches]
        stacked = as_output_list(freed(*(torch.cat(parts) for parts in zip(*batches))))
    for position, actual in enumerate(stacked):
        reference = torch.cat([outputs[position] for outputs in expected])
        if actual.shape != reference.shape:
            raise ValueError(f"output {position} is {list(actual.shape)} at the stacked batch, expected {list(reference.shape)}")
        scale = float(reference.abs().max()) or 1.0
        if float((actual - reference).abs().max()) > 1e-4 * scale:
            raise ValueError(f"output {position} at another batch size differs from the program's")
