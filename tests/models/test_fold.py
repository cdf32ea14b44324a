"""BatchNorm folding: same outputs, fewer layers, the original untouched, unsafe graphs left alone."""

from __future__ import annotations

import torch
from torch import nn

from cspine.models.fold import fold_batchnorm
from cspine.models.unet2p5d import SegConfig, build_seg_model


def _randomise_bn(net: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


def _n_bn(net: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_folding_keeps_the_segmentation_output_and_removes_the_batchnorms() -> None:
    torch.manual_seed(0)
    net = build_seg_model(SegConfig(backbone="efficientnet-b0", image_size=64)).eval()
    _randomise_bn(net)
    x = torch.rand(2, 3, 64, 64)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    folded = fold_batchnorm(net, x[:1])
    assert _n_bn(folded) < _n_bn(net) // 4
    with torch.inference_mode():
        assert torch.allclose(folded(x), net(x), atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the original untouched


class _Reused(nn.Module):
    """A conv output read by a BatchNorm and by a skip connection: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_conv_output_used_twice_is_not_folded() -> None:
    net = _Reused().eval()
    _randomise_bn(net)
    x = torch.rand(1, 3, 16, 16)
    folded = fold_batchnorm(net, x)
    assert folded is net
    with torch.inference_mode():
        assert torch.allclose(folded(x), _Reused.forward(net, x))
