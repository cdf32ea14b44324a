"""torch.distributed for the trainers: one process per GPU (or CPU worker) under ``torchrun``.

``torchrun --nproc_per_node N -m cspine xray train ...`` starts N copies with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address in their environment. :func:`init_from_env` joins them into a
process group (NCCL on GPUs, Gloo on CPUs); without those variables everything here is a no-op, so a
trainer runs unchanged in one process.

The trainers use it the same way: the model is wrapped in DistributedDataParallel (:func:`wrap_ddp`:
gradients averaged across ranks), each rank draws its share of every global batch (:func:`sampler`, or
:func:`rank_slice` of an index list), training metrics are summed across ranks (:func:`all_reduce_sums`),
validation runs once on rank 0 and its result is broadcast (:func:`broadcast_object`), and only rank 0
writes logs, checkpoints and the model folder (:func:`is_main`). Every rank reads the same resume state,
so ``--resume`` after a crash of any rank continues from the last epoch rank 0 saved.

Example:
    >>> info = init_from_env()          # doctest: +SKIP
    >>> net = wrap_ddp(net, device)     # doctest: +SKIP
    >>> if is_main(): save(...)         # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "all_reduce_sums", "barrier", "broadcast_object", "env_info", "init_from_env",
           "is_distributed", "is_main", "local_device", "rank", "rank_slice", "sampler", "unwrap",
           "world_size", "wrap_ddp"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def launched(self) -> bool:
        """Started by torchrun (or another launcher that sets ``WORLD_SIZE``)."""
        return "WORLD_SIZE" in os.environ


def env_info() -> DistInfo:
    """``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from the environment (0/1/0 without a launcher)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def is_distributed() -> bool:
    """A process group is up (then the helpers below communicate)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0, the only one that writes files."""
    return rank() == 0


def local_device(device: str | None = None) -> str:
    """The device for this rank: ``cuda:LOCAL_RANK`` under a launcher on a GPU machine (unless ``device``
    names one), else ``device`` (``"auto"`` when not given)."""
    if device not in (None, "auto", "cuda"):
        return str(device)
    if "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return "auto" if device is None else device


def init_from_env(device: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes (no-op without ``WORLD_SIZE``, or if already joined).

    Args:
        device: the trainer's ``--device``; ``cpu`` forces Gloo, otherwise NCCL when CUDA is present.
        timeout_s: how long a collective waits for a missing rank before failing.

    Returns:
        This process's :class:`DistInfo`.
    """
    info = env_info()
    if not info.launched or is_distributed():
        return info
    cuda = torch.cuda.is_available() and (device is None or not str(device).startswith("cpu"))
    if cuda:
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return info


def shutdown() -> None:
    """Leave the process group (at the end of a training run)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sums(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Each value summed over all ranks (float64; unchanged in one process)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (any picklable object, e.g. validation metrics)."""
    if not is_distributed():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def rank_slice(items: Sequence[T], per_rank_batch: int) -> Sequence[T]:
    """This rank's share of ``items`` read as consecutive global batches of ``per_rank_batch x world``:
    rank r takes the r-th ``per_rank_batch`` of each, so the ranks' k-th batches together are exactly the
    one-process run's k-th global batch. ``items`` itself in one process; an array stays an array."""
    w, r = world_size(), rank()
    if w == 1:
        return items
    glob = per_rank_batch * w
    pos: list[int] = []
    for start in range(0, len(items), glob):
        n = min(glob, len(items) - start)
        share = -(-n // w)  # the last, short batch is split as evenly as it goes
        pos.extend(range(start + r * share, start + min(n, (r + 1) * share)))
    if hasattr(items, "shape"):  # a numpy array or tensor
        return items[pos]  # type: ignore[call-overload,no-any-return]
    return [items[i] for i in pos]


def sampler(dataset: Any, *, shuffle: bool, seed: int) -> torch.utils.data.DistributedSampler | None:
    """A DistributedSampler over ``dataset`` for this rank (``None`` when not distributed): the same
    permutation on every rank (from ``seed``), rank r taking every ``world``-th element from r."""
    if not is_distributed():
        return None
    return torch.utils.data.DistributedSampler(dataset, num_replicas=world_size(), rank=rank(),
                                               shuffle=shuffle, seed=seed, drop_last=False)


def wrap_ddp(model: nn.Module, device: torch.device, find_unused: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel when distributed (gradients averaged across ranks);
    ``find_unused``: some trainable parameters may get no gradient in a step."""
    if not is_distributed() or not any(p.requires_grad for p in model.parameters()):
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (what is saved and validated)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
