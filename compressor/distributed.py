"""Runs that scale past one process: `torchrun --nproc_per_node=N -m compressor run ...`.

torchrun starts N copies of the same command and tells each its rank (RANK, WORLD_SIZE, MASTER_ADDR, ...).
Every rank loads the model and runs the profile's stages together; only the expensive parts are split:
- the sensitivity sweep hands each rank its share of the settings and gathers the table (`shard`, `gather`);
- training (distill, qat, iterative pruning) gives each rank its slice of every step's batch and averages
  the gradients over the ranks before each optimizer step, which is what DistributedDataParallel computes
  (`average_gradients`), so N processes follow one process's training up to float summation order;
- rank 0 alone exports, checks, times and writes the release, in its temporary folder that is renamed into
  place only when the whole run finished: a run interrupted on any rank leaves no release behind.
Ranks that disagree on what they run (another config, another checkpoint), or whose models drift apart after a
stage, stop the run with one line. Backend: gloo on CPU, NCCL when every rank has a GPU.

Without torchrun (no WORLD_SIZE, or 1) the world is one process and every helper here is a no-op.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch

from compressor.errors import CompressorError

T = TypeVar("T")


class DistributedError(CompressorError):
    """Ranks of a torchrun launch that cannot work together."""


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of `items` (every size-th item from its rank on)."""
        return list(items[self.rank :: self.size])

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order (picklable objects; every rank must call it)."""
        if not self.distributed:
            return [value]
        gathered: list[Any] = [None] * self.size
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    def from_main(self, make: Callable[[], T]) -> T:
        """`make()` evaluated on rank 0 only and sent to every rank (a decision all ranks must share)."""
        if not self.distributed:
            return make()
        box = [make() if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def check_batch(self, batch: int, where: str) -> None:
        """A training batch must split evenly over the ranks, so the averaged gradient is the whole batch's."""
        if self.distributed and batch % self.size:
            raise DistributedError(f"{where}: batch {batch} does not split evenly over {self.size} processes; "
                                   f"use a multiple of {self.size} (--set {where}=...)")

    def batch_slice(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """This rank's rows of a step's batch (every rank draws the same whole batch from the same seed)."""
        return inputs if not self.distributed else tuple(t[self.rank :: self.size] for t in inputs)

    def average_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks (DistributedDataParallel's all-reduce, in one flat
        bucket). Not DDP's wrapper itself: the losses call the student inside feature-recording hooks and train
        adapters through a method, and DDP's reducer only follows calls that go through its own forward."""
        if not self.distributed:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.size
        offset = 0
        for parameter, grad in zip(parameters, grads):
            count = grad.numel()
            parameter.grad = flat[offset : offset + count].view_as(grad).clone()
            offset += count

    def broadcast_state(self, modules: Sequence[torch.nn.Module]) -> None:
        """Start every rank from rank 0's weights and buffers, as DistributedDataParallel does: a fresh student or
        adapter is random on each rank, and a BatchNorm's statistics may have moved on each rank's first call."""
        if not self.distributed:
            return
        with torch.no_grad():
            for module in modules:
                for tensor in module.state_dict().values():
                    torch.distributed.broadcast(tensor, src=0)

    def agree(self, value: str, what: str, fix: str) -> None:
        """Stop, naming the ranks, when they do not hold the same `value` (a config hash, a model hash)."""
        values = self.gather(value)
        if len(set(values)) > 1:
            differing = [rank for rank, v in enumerate(values) if v != values[0]]
            raise DistributedError(f"ranks disagree on {what}: rank 0 has {values[0][:12]}, rank(s) {differing} another; {fix}")


_WORLD: World | None = None


def world() -> World:
    """This process's world: joins torchrun's process group on first use; one process without torchrun."""
    global _WORLD
    if _WORLD is None:
        _WORLD = _join()
    return _WORLD


def _join() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "gloo"
        try:
            dist.init_process_group(backend=backend)
        except Exception as exc:  # the rendezvous: wrong address, a rank that never came
            raise DistributedError(f"torchrun rendezvous failed ({type(exc).__name__}: {exc}); check --rdzv-endpoint "
                                   "(or MASTER_ADDR/MASTER_PORT) and that every node launched the same --nnodes") from exc
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def leave() -> None:
    """Leave the process group (after the run), so the process exits without torch's warning."""
    global _WORLD
    if _WORLD is not None and _WORLD.distributed:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    _WORLD = None


def model_hash(model: torch.nn.Module) -> str:
    """A hash of the model's architecture and every weight: equal on ranks that did the same work."""
    digest = hashlib.sha256(repr(model).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
