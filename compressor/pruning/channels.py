"""Structured pruning: remove whole channels, physically, through Torch-Pruning's dependency graph.

Torch-Pruning traces the model once and knows which layers must shrink together: a conv's output channels
with the BatchNorm after it and every layer that reads them, the rows of a Linear whose output a `view`
turns into channels, both sides of a residual add, the slices of a concatenated skip. We use its graph and
its pruning functions, and add three things it leaves to the caller:

- The index unit of a group. Torch-Pruning yields a group rooted at whichever layer it met first; rooted at a
  Linear whose 4096 rows become 256 channels through a `view`, pruning 4096 row indices breaks the view (its
  MetaPruner then skipped that group silently). We root each group at its coarsest member (the BatchNorm or
  conv that sees 256 channels) and let the graph map each channel to its rows.
- GroupNorm. Its pruner drops channels but keeps `num_groups`, which changes every group's statistics or
  breaks the layer. We remove whole GroupNorm groups and lower `num_groups`, so the groups kept compute
  exactly what they did.
- The model's outputs. A group whose channels reach an output (the image head) would change the output's
  shape; it is never pruned.
- Attention heads. Torch-Pruning passes channels through the attention op as if it were elementwise, so the
  q, k and v projections and the output projection's inputs form one group; cutting arbitrary channels there
  would change each head's size, which the model's own reshapes read. Such a group is cut only in whole heads
  (its unit is the head size), and only in a module that states its head count in an attribute (`heads`,
  `num_heads`, ... as diffusers' Attention does), which is lowered with the cut. Before a head group is
  offered, one head of each is removed on a copy and the output compared with the model whose output
  projection ignores that head: attention code that reads a head count from anywhere else fails that check
  and the group stays whole.

A group is named after the first conv or linear layer that produces its channels (`inspect` names), and
layer rules with `skip: true` on any of its layers leave it whole. `prune_channels` returns a record (each
group's kept channel indices) from which `rebuild` makes the same architecture from the user's model again.
"""

from __future__ import annotations

import math
import re
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from compressor.errors import CompressorError, ConfigError, first_line

if TYPE_CHECKING:
    from compressor.layer_rules import LayerRule

_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear)
_ROOTS = (*_PRODUCERS, nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
_ATTENTION = re.compile(r"Attention|Softmax|Bmm")  # autograd nodes of q @ k and attention kernels
HEAD_ATTRIBUTES = ("heads", "num_heads", "n_heads", "num_attention_heads")  # diffusers, torch/timm, GPT-style, HF
HEAD_CHECK_TOLERANCE = 1e-4  # relative to the output's scale: float reordering only, a wrong head split is far above
SEARCH_SECONDS = 60  # the demos' and test models' searches take well under a second


@dataclass
class ChannelGroup:
    """Channels that must be removed together, and how many there are."""

    name: str  # the first conv/linear that produces them
    layers: list[str]  # every module whose weights shrink with them
    channels: int
    unit: int = 1  # channels removed together (a GroupNorm group), so counts stay multiples of it
    root: tuple[nn.Module, Any] = field(default=None, repr=False)  # (module, pruning fn) the graph is asked with
    group_norms: list[nn.GroupNorm] = field(default_factory=list, repr=False)
    heads: tuple[str, str] | None = None  # (attention module, its head-count attribute) for a group of whole heads
    readers: list[str] = field(default_factory=list, repr=False)  # layers whose inputs are these channels

    def kept_count(self, ratio: float, multiple: int) -> int:
        """Channels kept when `ratio` of them are removed, rounded to a multiple of `multiple` and of the unit
        (at least one step is kept)."""
        step = math.lcm(self.unit, multiple)
        if self.channels <= step:
            return self.channels
        kept = round(self.channels * (1.0 - ratio) / step) * step
        return int(min(max(kept, step), self.channels))


class PrunableGraph:
    """The model's dependency graph and its channel groups (the model is changed in place by `prune`).
    `check_heads=False` skips the check of attention head groups (see the module docstring) where the caller
    only prunes groups that a checked graph of the same model offered."""

    def __init__(self, model: nn.Module, example: tuple[torch.Tensor, ...], rules: list[LayerRule] = (), check_heads: bool = True):
        import torch_pruning as tp

        self.model = model
        names = {module: name for name, module in model.named_modules()}
        # Layers a rule skips stay in the graph (left out, the layers that read them would not shrink with their
        # inputs); the groups they belong to are kept whole instead.
        try:
            with torch.enable_grad():  # the graph is read from autograd
                self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=list(example))
        except Exception as exc:  # tracing can fail in as many ways as the model's code
            raise CompressorError(
                f"prune: Torch-Pruning could not trace the model ({type(exc).__name__}: {first_line(exc)}); "
                "drop the prune stage (channel pruning needs that graph)"
            ) from exc
        self.groups: dict[str, ChannelGroup] = {}
        self.skipped: dict[str, str] = {}
        heads: list[str] = []  # attention groups offered in whole heads, once checked
        with _time_limit(SEARCH_SECONDS, "prune: Torch-Pruning's search for the layers that shrink together did not "
                         f"finish in {SEARCH_SECONDS} s (it can loop on some attention reshapes); drop the prune stage for "
                         "this model"):
            for group in self.graph.get_all_groups(root_module_types=_ROOTS):
                found = _describe(group, names)
                if found is None:
                    continue
                reason = _unprunable(group, found, rules)
                if reason == ATTENTION_REASON and _as_heads(found, model):
                    reason = _unprunable(group, found, rules, heads=True)
                    if not reason:
                        heads.append(found.name)
                if reason:
                    self.skipped[found.name] = reason
                else:
                    self.groups[found.name] = found
        if heads and check_heads:
            self._check_heads(example, heads)

    def prune(self, name: str, kept: list[int]) -> None:
        """Keep only the channels `kept` (indices into the group's current channels) of group `name`."""
        found = self.groups[name]
        removed = sorted(set(range(found.channels)) - set(kept))
        if removed:
            module, handler = found.root
            self.graph.get_pruning_group(module, handler, removed).prune()
        for norm in found.group_norms:
            norm.num_groups = norm.num_channels // found.unit  # whole groups went; the rest keep their statistics
        if found.heads:
            owner, attribute = found.heads
            setattr(self.model.get_submodule(owner), attribute, len(kept) // found.unit)
        found.channels = len(kept)

    def _check_heads(self, example: tuple[torch.Tensor, ...], names: list[str]) -> None:
        """Offer a head group only if removing a head on a copy leaves exactly what the model computes when its
        output projection ignores that head (see the module docstring); all at once, then one by one on failure."""
        if _heads_cut_exactly(self.model, example, [self.groups[name] for name in names]):
            return
        for name in names:
            if not _heads_cut_exactly(self.model, example, [self.groups[name]]):
                owner, attribute = self.groups[name].heads
                self.skipped[name] = (f"its channels are attention heads, and removing one of `{owner}` and lowering its "
                                      f"`{attribute}` changes what the other heads compute (the code splits heads by "
                                      "another number)")
                del self.groups[name]

    def importance(self, name: str) -> torch.Tensor:
        """One magnitude score per channel of group `name`: the L2 norm of every weight that goes with that
        channel across the group's layers (Torch-Pruning's group magnitude), summed over a GroupNorm group's
        channels so whole groups are ranked."""
        import torch_pruning as tp

        found = self.groups[name]
        module, handler = found.root
        group = self.graph.get_pruning_group(module, handler, list(range(found.channels)))
        with torch.no_grad():
            scores = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)(group)
        if scores is None or scores.numel() != found.channels:
            raise CompressorError(f"prune: could not score the channels of group {name}; skip it with a rule "
                                  f"{{match: '{name}', skip: true}}")
        return scores

    def keep_strongest(self, name: str, count: int) -> list[int]:
        """Indices of the `count` channels with the largest importance (whole units for GroupNorm groups)."""
        found = self.groups[name]
        scores = self.importance(name).reshape(-1, found.unit).sum(dim=1)
        units = torch.argsort(scores, descending=True)[: count // found.unit]
        return sorted(int(u) * found.unit + offset for u in units for offset in range(found.unit))


def prune_channels(
    model: nn.Module, example: tuple[torch.Tensor, ...], kept_counts: dict[str, int], rules: list[LayerRule] = (),
    removed_blocks: list[str] = (),
) -> dict[str, Any]:
    """Remove the named blocks, then prune each named group to its count (strongest channels kept), in place;
    returns the rebuild record. The pruned model is run once: a group whose pruning breaks the forward pass (a
    reshape that reads a width from another tensor, as attention code does) is named with the rule that keeps
    it whole."""
    import copy

    from compressor.pruning.blocks import remove_blocks

    original = copy.deepcopy(model)
    remove_blocks(model, list(removed_blocks))
    graph = PrunableGraph(model, example, rules, check_heads=False)  # the counts name groups of a checked graph
    record = {}
    for old_name, count in kept_counts.items():
        name = _same_group(old_name, graph)
        if name is None:
            continue  # all of it was inside a removed block
        found = graph.groups[name]
        channels = found.channels
        kept = graph.keep_strongest(name, count)
        graph.prune(name, kept)
        record[name] = {"layers": found.layers, "channels": channels, "kept": kept}
    if forward_fails(original, model, example):
        for name, entry in record.items():
            alone = copy.deepcopy(original)
            remove_blocks(alone, list(removed_blocks))
            PrunableGraph(alone, example, rules, check_heads=False).prune(name, entry["kept"])
            failure = forward_fails(original, alone, example)
            if failure:
                raise CompressorError(f"prune: cutting channel group '{name}' breaks the model ({failure}); keep it "
                                      f"whole with a rule in the prune stage: {{match: '{name}', skip: true}}")
        raise CompressorError(f"prune: the pruned model no longer runs ({forward_fails(original, model, example)}); "
                              "keep groups whole with skip rules in the prune stage, or drop the stage")
    return {"removed_blocks": list(removed_blocks), "groups": record}


def _same_group(name: str, graph: PrunableGraph) -> str | None:
    """The group a name found on the whole model has once blocks are removed: the same name, or the group that
    now holds the layer it was named after (its first member may have been inside a removed block)."""
    if name in graph.groups:
        return name
    return next((other for other, group in graph.groups.items() if name in group.layers), None)


def _instance_norm_widths(model: nn.Module) -> list:
    """Hooks that set each InstanceNorm's num_features to the channels it sees on the next forward pass: without
    affine weights it is in no group, and a stale count only makes torch warn on every call."""
    return [module.register_forward_pre_hook(lambda mod, args: setattr(mod, "num_features", args[0].shape[1]))
            for module in model.modules() if isinstance(module, nn.modules.instancenorm._InstanceNorm)]


def forward_fails(original: nn.Module, pruned: nn.Module, example: tuple[torch.Tensor, ...]) -> str | None:
    """Why the pruned model's forward pass fails or changes the output shapes, or None when it works."""
    from compressor.modelcard import as_output_list

    handles = _instance_norm_widths(pruned)
    with torch.no_grad():
        expected = [tuple(t.shape) for t in as_output_list(original(*example))]
        try:
            actual = [tuple(t.shape) for t in as_output_list(pruned(*example))]
        except Exception as exc:  # whatever the user's forward raises on mismatched widths
            return f"{type(exc).__name__}: {first_line(exc)}"
        finally:
            for handle in handles:
                handle.remove()
    return None if actual == expected else f"output shapes {actual} instead of {expected}"


def rebuild(model: nn.Module, example: tuple[torch.Tensor, ...], record: dict[str, Any]) -> nn.Module:
    """The pruned architecture from the user's model (in place) and a release's `student.json` record; load
    `student.safetensors` into the result to get the shipped weights."""
    from compressor.pruning.blocks import remove_blocks

    remove_blocks(model, record.get("removed_blocks", []))
    graph = PrunableGraph(model, example, check_heads=False)  # the record names groups a checked graph offered
    for name, entry in record["groups"].items():
        if name not in graph.groups or graph.groups[name].channels != entry["channels"]:
            raise ConfigError(f"student.json: group {name} is not in this model as recorded; rebuild from the model it was pruned from")
        graph.prune(name, entry["kept"])
    handles = _instance_norm_widths(model)
    with torch.no_grad():
        model(*example)
    for handle in handles:
        handle.remove()
    return model


def _rule_for(layer: str, rules: list[LayerRule]) -> tuple[bool, str]:
    """(skip?, which rule) for one layer: the last matching rule wins."""
    for index, rule in reversed(list(enumerate(rules))):
        if fnmatchcase(layer, rule.match):
            return rule.skip, f"rule {index} (match '{rule.match}')"
    return False, ""


@contextmanager
def _time_limit(seconds: float, message: str):
    """Raise CompressorError(message) if the block runs longer than `seconds` (a SIGALRM timer: only the main
    thread can take one, so elsewhere the block runs without a limit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise CompressorError(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _as_heads(found: ChannelGroup, model: nn.Module) -> bool:
    """Make an attention group (q/k/v outputs, output projection inputs) one of whole heads, if the innermost
    module holding all its layers states a head count that divides its channels; False if none does."""
    owner = _common_parent(found.layers)
    while owner is not None:
        module = model.get_submodule(owner)
        for attribute in HEAD_ATTRIBUTES:
            count = getattr(module, attribute, None)
            if isinstance(count, int) and not isinstance(count, bool) and count > 1 and found.channels % count == 0:
                found.heads, found.unit = (owner, attribute), math.lcm(found.unit, found.channels // count)
                return True
        owner = owner.rpartition(".")[0] if owner else None
    return False


def _common_parent(layers: list[str]) -> str:
    parts = [layer.split(".")[:-1] for layer in layers]
    common = []
    for level in zip(*parts):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


def _heads_cut_exactly(model: nn.Module, example: tuple[torch.Tensor, ...], groups: list[ChannelGroup]) -> bool:
    """Whether removing each group's last head gives the output of the model whose output projections read
    zeros for that head's channels."""
    import copy

    from compressor.modelcard import as_output_list

    masked, cut = copy.deepcopy(model), copy.deepcopy(model)
    graph = PrunableGraph(cut, example, check_heads=False)
    for group in groups:
        if group.name not in graph.groups:
            return False
        for reader in group.readers:
            _zero_inputs(masked.get_submodule(reader), list(range(group.channels - group.unit, group.channels)))
        graph.prune(group.name, list(range(group.channels - group.unit)))
    with torch.no_grad():
        try:
            expected, actual = as_output_list(masked(*example)), as_output_list(cut(*example))
        except Exception:  # the user's attention code cannot run with fewer heads
            return False
    return len(expected) == len(actual) and all(
        e.shape == a.shape and float((e - a).abs().max()) <= HEAD_CHECK_TOLERANCE * max(float(e.abs().max()), 1.0)
        for e, a in zip(expected, actual))


def _zero_inputs(layer: nn.Module, channels: list[int]) -> None:
    with torch.no_grad():
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            layer.weight[channels] = 0
        else:
            layer.weight[:, channels] = 0


def _describe(group, names: dict[nn.Module, str]) -> ChannelGroup | None:
    """The group's name, layers, channel count and coarsest root; None for a group with no named layer."""
    members = [(dep.target.module, dep.handler, len(indices)) for dep, indices in group if dep.target.module in names]
    if not members:
        return None
    layers = sorted({names[module] for module, _, _ in members}, key=list(names.values()).index)
    producers = [names[m] for m, handler, _ in members if isinstance(m, _PRODUCERS) and "out" in handler.__name__]
    name = min(producers or layers, key=list(names.values()).index)
    module, handler, channels = min(members, key=lambda member: member[2])  # the coarsest index unit
    norms = [m for m, _, _ in members if isinstance(m, nn.GroupNorm)]
    unit = math.lcm(*(norm.num_channels // norm.num_groups for norm in norms)) if norms else 1
    readers = [names[m] for m, handler, _ in members if isinstance(m, _PRODUCERS) and "in" in handler.__name__.split("_")]
    return ChannelGroup(name, layers, channels, unit, (module, handler), norms, readers=readers)


ATTENTION_REASON = ("its channels are attention heads: only whole heads can go, and its module states no head count above 1 "
                    f"that divides them ({', '.join(f'`{name}`' for name in HEAD_ATTRIBUTES)})")


def _unprunable(group, found: ChannelGroup, rules: list[LayerRule], heads: bool = False) -> str | None:
    """Why the group must stay whole, or None; `heads`: an attention group already made one of whole heads."""
    if any(not dep.target.outputs for dep, _ in group):  # a node nothing reads: the channels reach an output
        return "its channels are a model output"
    if not heads and any(dep.target.grad_fn is not None and _ATTENTION.search(dep.target.grad_fn.name()) for dep, _ in group):
        # q/k/v widths are head sizes: the model's own reshapes (heads, head size) would silently change meaning
        return ATTENTION_REASON
    for layer in found.layers:
        skip, why = _rule_for(layer, rules)
        if skip:
            return f"{why} on {layer}"
    if found.channels % found.unit:
        return f"{found.channels} channels are not whole GroupNorm groups of {found.unit}"
    return None
