"""Inference speed-up: fold eval-mode BatchNorm layers into the convolutions that feed them.

(And move symmetric explicit zero-padding into the convolutions, see ``_absorb_symmetric_padding``.)

In eval mode ``bn(conv(x))`` is one affine map per channel after the convolution, so it equals a
convolution with rescaled weights and a shifted bias. EfficientNet runs ~50 BatchNorms per slice; on a
CPU they cost ~15% of stage 1's network time (bench/seg.py). Only for inference: the folded model
cannot be trained, and its weights are never saved.

Which BatchNorm follows which convolution is found by running the model once and recording the order
of calls: a BatchNorm whose input is exactly the output tensor of the convolution called just before
it is folded. A tensor reused elsewhere (e.g. a conv output also added to a skip connection) would make
folding wrong, so the result is compared with the original on the same input and the original is kept
when they differ.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * scale
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(conv.weight.detach() * scale.reshape(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)


def _identity_bn(bn: nn.BatchNorm2d) -> None:
    # Keep the module (timm's BatchNormAct2d also applies its activation), make the affine part a no-op.
    bn.running_mean.zero_()  # type: ignore[union-attr]
    bn.running_var.fill_(1.0 - bn.eps)  # type: ignore[union-attr]
    if bn.affine:
        bn.weight.data.fill_(1.0)
        bn.bias.data.zero_()


def _drop_plain_batchnorms(net: nn.Module, folded_ids: set[int]) -> None:
    """Replace folded plain BatchNorm2d modules by Identity (subclasses, e.g. BN + activation, stay)."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in folded_ids and type(child) is nn.BatchNorm2d:
                setattr(parent, name, nn.Identity())


def _absorb_symmetric_padding(net: nn.Module) -> None:
    """Move a symmetric explicit zero-pad (TF-"same" EfficientNets pad before every conv) into the conv.

    The conv then pads inside its own kernel call instead of copying the whole activation first.
    """
    for module in net.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(module, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d) and module.padding == (0, 0):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = nn.Identity()


def fold_batchnorm(net: nn.Module, example: torch.Tensor, *, atol: float = 1e-3) -> nn.Module:
    """A copy of ``net`` (in eval mode) with every BatchNorm2d that directly follows a Conv2d folded into it.

    Args:
        net: a model; it is not modified.
        example: an input batch used to find the conv -> BN pairs and to check the folded copy.
        atol: largest absolute difference of the outputs accepted (relative to their scale).

    Returns:
        The folded copy, or ``net`` itself (eval mode) when nothing could be folded or the check failed.
    """
    net = net.eval()
    folded = copy.deepcopy(net)
    calls: list[tuple[nn.Module, int, int]] = []  # (module, id(input), id(output)) in call order

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(output, torch.Tensor):
            calls.append((module, id(args[0]), id(output)))

    handles = [m.register_forward_hook(hook) for m in folded.modules()
               if isinstance(m, nn.Conv2d | nn.BatchNorm2d)]
    with torch.inference_mode():
        reference = net(example)
        kept = folded(example)  # the hook's ids are only valid while these outputs are alive
        pairs = [(prev[0], cur[0]) for prev, cur in zip(calls, calls[1:], strict=False)
                 if isinstance(prev[0], nn.Conv2d) and isinstance(cur[0], nn.BatchNorm2d)
                 and cur[1] == prev[2] and cur[0].track_running_stats]
    for h in handles:
        h.remove()
    del kept
    seen: set[int] = set()
    for conv, bn in pairs:
        if id(conv) in seen or id(bn) in seen or conv.groups < 1:
            continue  # a module called twice: folding once would be wrong for the other call
        seen.update((id(conv), id(bn)))
        _fold_pair(conv, bn)  # type: ignore[arg-type]
        _identity_bn(bn)  # type: ignore[arg-type]
    _drop_plain_batchnorms(folded, seen)
    _absorb_symmetric_padding(folded)
    if not seen:
        return net
    with torch.inference_mode():
        out = folded(example)
    scale = float(reference.abs().max()) or 1.0
    err = float((out - reference).abs().max()) / scale
    if err > atol:
        log.debug("BatchNorm folding changed the output by %.2g (relative): kept the original", err)
        return net
    return folded
