"""Device choice, mixed precision and seeding, shared by every training and inference loop."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from cspine.errors import DeviceError


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The torch device for a ``--device`` value.

    Args:
        device: ``None``/``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:N"``, or a :class:`torch.device`.

    Raises:
        DeviceError: an unknown device name, or a CUDA device this machine does not have.
    """
    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if dev.index is None and torch.cuda.is_available() and _launched_ranks() > 1:
            # Under torchrun each rank of a machine takes its own GPU: cuda:LOCAL_RANK.
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device} was asked for, but this machine has no CUDA GPU that torch "
                              "can use; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                              f"numbered from 0")
    return dev


def _launched_ranks() -> int:
    """WORLD_SIZE of a torchrun-style launch that set LOCAL_RANK (1 otherwise)."""
    if "LOCAL_RANK" not in os.environ:
        return 1
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPUs that support it (fp16 otherwise); a no-op on the CPU."""
    if not enabled or device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def cpu_threads() -> int:
    """Cores this process may use (respects affinity masks and containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)
