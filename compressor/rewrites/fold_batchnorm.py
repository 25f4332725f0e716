"""Fold eval-mode BatchNorm into the Conv / ConvTranspose / Linear that feeds it.

Folding removes a whole memory pass per BatchNorm and is what quantizers expect (a BN left between a
conv and its activation blocks fusion). torch's own `fuse_conv_bn_eval` does the arithmetic; this
module finds the pairs with torch.fx, including the generator pattern Linear -> view(B, C, H, W) ->
BatchNorm2d, which torch's fuser does not handle (each channel owns a contiguous block of Linear rows).
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from compressor.rewrites.graph import finish, replace_module, trace

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_RESHAPES = {"view", "reshape", "unflatten"}


def fold_batchnorm(model: nn.Module, example: tuple | None = None) -> tuple[nn.Module, list[str]]:
    """Return a GraphModule with every foldable BatchNorm folded, and the names of the folded BatchNorms."""
    graph_module = trace(model)
    modules = dict(graph_module.named_modules())
    folded = []
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BATCHNORMS):
            continue
        batchnorm = modules[node.target]
        producer, through_reshape = _producer(node)
        if producer is None or batchnorm.training or batchnorm.running_mean is None:
            continue
        fused = _fuse(modules[producer.target], batchnorm, through_reshape)
        if fused is None:
            continue
        replace_module(graph_module, producer.target, fused)
        node.replace_all_uses_with(node.args[0])
        graph_module.graph.erase_node(node)
        folded.append(node.target)
    return finish(graph_module), folded


def _producer(bn_node: fx.Node) -> tuple[fx.Node | None, bool]:
    """The module call feeding this BatchNorm (possibly through one reshape), if nothing else reads it."""
    source = bn_node.args[0]
    through_reshape = False
    if isinstance(source, fx.Node) and source.op == "call_method" and source.target in _RESHAPES:
        if len(source.users) != 1:
            return None, False
        source, through_reshape = source.args[0], True
    if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
        return None, False
    return source, through_reshape


def _fuse(layer: nn.Module, batchnorm: nn.Module, through_reshape: bool) -> nn.Module | None:
    if isinstance(layer, _CONVS) and not through_reshape:
        return fuse_conv_bn_eval(layer, batchnorm)
    if isinstance(layer, _TRANSPOSED) and not through_reshape:
        return fuse_conv_bn_eval(layer, batchnorm, transpose=True)
    if isinstance(layer, nn.Linear) and not through_reshape:
        return fuse_linear_bn_eval(layer, batchnorm)
    if isinstance(layer, nn.Linear) and layer.out_features % batchnorm.num_features == 0:
        return _fuse_linear_into_channels(layer, batchnorm)
    return None


@torch.no_grad()
def _fuse_linear_into_channels(linear: nn.Linear, batchnorm: nn.Module) -> nn.Linear:
    """Linear -> view(B, C, ...) -> BatchNorm over C: channel c scales rows [c*k, (c+1)*k) of the Linear.

    This assumes the view keeps channels outermost (row-major, channels first), the only layout in
    which BatchNorm's channel axis 1 lines up with contiguous row blocks; the rewrite stage checks the
    folded model's outputs against the original, so a channels-last view would be caught there.
    """
    rows_per_channel = linear.out_features // batchnorm.num_features
    ones = torch.ones_like(batchnorm.running_var)
    gamma = batchnorm.weight if batchnorm.weight is not None else ones  # affine=False BatchNorm
    beta = batchnorm.bias if batchnorm.bias is not None else ones * 0
    scale = gamma / torch.sqrt(batchnorm.running_var + batchnorm.eps)
    shift = beta - batchnorm.running_mean * scale
    scale_rows = scale.repeat_interleave(rows_per_channel)
    shift_rows = shift.repeat_interleave(rows_per_channel)
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True)
    fused.weight.copy_(linear.weight * scale_rows[:, None])
    bias = linear.bias if linear.bias is not None else torch.zeros_like(shift_rows)
    fused.bias.copy_(bias * scale_rows + shift_rows)
    return fused.eval()
