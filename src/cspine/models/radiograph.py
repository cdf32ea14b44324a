"""AlexNet and GoogLeNet (torchvision) with the radiograph paper's transfer-learning head.

The ImageNet classifier's last layer is replaced by the paper's head: dropout, a fully connected
layer (ReLU), a second fully connected layer to the classes; softmax is applied at inference
(``predict_proba``), training uses the logits with cross-entropy.

* AlexNet keeps its convolutional features and its (pretrained) fc6/fc7 layers, so the head sits on
  the 4096-d fc7 output, as in the classic AlexNet transfer recipe that replaces fc8.
* GoogLeNet keeps everything up to its global average pool (1024-d); its two auxiliary classifiers
  (``aux_logits``) are dropped: the paper fine-tunes the main branch only, and without them the
  model returns one tensor in training and inference alike.

Random init (``pretrained="none"``): every convolution gets He (Kaiming) normal weights (fan-out,
ReLU gain) and zero bias, batch norms weight 1 and bias 0, fully connected layers N(0, 0.01) and
zero bias (torchvision's VGG/ResNet from-scratch scheme); the new head keeps PyTorch's default
init (a N(0, 0.01) last layer was tried: its tiny gradients stalled the first epochs, loss 1.10 ->
1.10 in 15 steps where the default went to 0.73). Why not torchvision's own
inits: GoogLeNet's (truncated normal, std 0.01, written for the ported ImageNet weights) leaves the
weights so small that, behind batch norms, SGD's steps are huge relative to them (relative gradient
~60 in conv1 at the first step); in mini-batch runs on 60 phantom radiographs it fitted them more
slowly and less stably than He init (train loss 0.89 vs 0.63 after 120 steps at lr 0.01, one seed;
full-batch on 9 images both fit). AlexNet's PyTorch default (uniform, gain sqrt(1/3)) shrinks the
signal ~6x in variance per layer (logits std ~0.02 at start). AlexNet without batch norm did not
learn the phantom from scratch with either init (see ``XrayConfig.batch_norm``).

``pretrained``: ``"none"`` (random init), ``"imagenet"`` (torchvision's weights, read only from
the local torch hub cache: nothing is downloaded), or a path to a local ``.safetensors`` file (or a
torchvision ``.pth`` state dict, loaded with ``torch.load(weights_only=True)``, i.e. tensors only,
no pickled code) holding backbone weights under torchvision's key names.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cspine.errors import CheckpointError
from cspine.labels import XRAY_CLASSES

log = logging.getLogger(__name__)

ARCHS: tuple[str, ...] = ("alexnet", "googlenet")
#: Input sizes of the paper (MATLAB's AlexNet takes 227 px, GoogLeNet 224 px).
DEFAULT_IMAGE_SIZE: dict[str, int] = {"alexnet": 227, "googlenet": 224}
#: torchvision's ImageNet weight files as they are named in the torch hub cache.
IMAGENET_FILES: dict[str, str] = {"alexnet": "alexnet-owt-7be5be79.pth",
                                  "googlenet": "googlenet-1378be20.pth"}
CHECKPOINT_KIND = "xray"


@dataclass(frozen=True)
class XrayConfig:
    """Everything needed to rebuild a radiograph classifier.

    Attributes:
        arch: ``"alexnet"`` or ``"googlenet"``.
        classes: class names, in output order.
        image_size: square input size in pixels; ``None`` = the paper's (227 AlexNet, 224 GoogLeNet).
            Smaller sizes work (AlexNet >= 63, GoogLeNet >= 32 px) and are used by fast tests.
        dropout: dropout probability before the first head layer.
        hidden: width of the first fully connected head layer.
        pretrained: ``"none"``, ``"imagenet"`` or a path to local weights.
        finetune: ``"all"`` trains every layer, ``"head"`` only the new head (the backbone is
            frozen and kept in eval mode, so batch-norm statistics stay ImageNet's).
        batch_norm: AlexNet only: a BatchNorm after each convolution. Not the paper's AlexNet (it
            has none, and ImageNet weights do not fit it): a from-scratch variant, because the plain
            AlexNet did not learn the phantom from random init with SGD (on 60 images, batch 10,
            lr 0.01, He init, warm-up and gradient clipping, its train loss stayed at the class
            prior's ~1.04 for 240 steps), while with batch norms it fell (to ~0.8 in 160 steps;
            0.95 accuracy on those 60 images after 240 steps in a He-initialised-head variant).
    """

    arch: str = "googlenet"
    classes: tuple[str, ...] = XRAY_CLASSES
    image_size: int | None = None
    dropout: float = 0.5
    hidden: int = 512
    pretrained: str = "none"
    finetune: str = "all"
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.image_size is None:
            object.__setattr__(self, "image_size", DEFAULT_IMAGE_SIZE[self.arch])
        object.__setattr__(self, "classes", tuple(self.classes))
        if len(self.classes) < 2:
            raise ValueError(f"a classifier needs at least two classes, got {self.classes}")
        if self.finetune not in ("all", "head"):
            raise ValueError(f"finetune must be 'all' or 'head', got {self.finetune!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.batch_norm and self.arch != "alexnet":
            raise ValueError("batch_norm is an AlexNet option (GoogLeNet has batch norms already)")
        if self.batch_norm and self.pretrained != "none":
            raise ValueError("batch_norm AlexNet is for random init: pretrained weights have no batch norms")
        min_size = 63 if self.arch == "alexnet" else 32
        if int(self.image_size) < min_size:  # type: ignore[arg-type]
            raise ValueError(f"{self.arch} needs image_size >= {min_size}, got {self.image_size}")

    def replace(self, **changes: object) -> XrayConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


class XrayNet(nn.Module):
    """Backbone (torchvision) + the paper's head. ``forward`` returns logits ``(B, n_classes)``."""

    def __init__(self, cfg: XrayConfig, backbone: nn.Module, features: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Dropout(cfg.dropout),
            nn.Linear(features, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.hidden, len(cfg.classes)),
        )

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional block, whose activations Grad-CAM weighs."""
        if self.cfg.arch == "alexnet":
            return self.backbone.features  # type: ignore[return-value]
        return self.backbone.inception5b  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if isinstance(feats, tuple):  # GoogLeNetOutputs, should aux heads ever be enabled
            feats = feats[0]
        return self.head(feats)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (the paper's output layer)."""
        return torch.softmax(self.forward(x), dim=1)

    def train(self, mode: bool = True) -> XrayNet:
        super().train(mode)
        if self.cfg.finetune == "head":
            self.backbone.eval()  # frozen backbone: no dropout, no batch-norm statistic updates
        return self


def _backbone(cfg: XrayConfig) -> tuple[nn.Module, int]:
    from torchvision import models

    if cfg.arch == "alexnet":
        net = models.alexnet(weights=None)
        net.classifier = net.classifier[:-1]  # keep dropout-fc6-relu-dropout-fc7-relu, drop fc8
        if cfg.batch_norm:
            layers: list[nn.Module] = []
            for m in net.features:
                layers.append(m)
                if isinstance(m, nn.Conv2d):
                    layers.append(nn.BatchNorm2d(m.out_channels))
            net.features = nn.Sequential(*layers)
        return net, 4096
    # transform_input re-normalises ImageNet-normalised input the way torchvision's ported
    # GoogLeNet ImageNet weights expect; for random init or other weights it stays off.
    net = models.googlenet(weights=None, aux_logits=False, init_weights=True,
                           transform_input=cfg.pretrained == "imagenet")
    net.fc = nn.Identity()
    return net, 1024


def init_from_scratch(module: nn.Module) -> None:
    """He-normal convolutions, unit batch norms, N(0, 0.01) linear layers (see the module doc)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision's ImageNet weights of ``arch`` lie in the local torch hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[arch]


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError("pretrained weights file not found", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        # tensors only: weights_only refuses pickled code objects
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot be read as a weights file ({exc})", path) from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError("is not a state dict of tensors", path)
    return state


def _load_backbone_weights(net: nn.Module, cfg: XrayConfig) -> None:
    if cfg.pretrained == "imagenet":
        path = imagenet_weights_path(cfg.arch)
        if not path.is_file():
            raise CheckpointError(
                f"ImageNet weights for {cfg.arch} are not in torchvision's cache (no download is made); "
                f"put {IMAGENET_FILES[cfg.arch]} there, or pass --pretrained PATH / none", path)
    else:
        path = Path(cfg.pretrained)
    state = _read_state(path)
    # Accept a whole cspine XrayNet file too (keys "backbone.*").
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if not usable or len(missing) > 0.1 * len(own):
        raise CheckpointError(
            f"does not hold {cfg.arch} backbone weights ({len(usable)} of {len(own)} tensors match; "
            f"missing e.g. {missing[:3]})", path)
    net.load_state_dict(usable, strict=False)
    log.info("loaded %d backbone tensors from %s (%d left at init)", len(usable), path, len(missing))


def build_xray_model(cfg: XrayConfig, load_pretrained: bool = True) -> XrayNet:
    """Build the classifier of ``cfg``.

    Args:
        cfg: the model configuration.
        load_pretrained: read ``cfg.pretrained`` weights into the backbone; ``False`` when the whole
            model's weights come next from a checkpoint (inference).

    Raises:
        CheckpointError: the pretrained weights are absent or do not fit the architecture.
    """
    net, features = _backbone(cfg)
    if cfg.pretrained == "none":
        init_from_scratch(net)
    elif load_pretrained:
        _load_backbone_weights(net, cfg)
    model = XrayNet(cfg, net, features)
    if cfg.finetune == "head":
        for p in model.backbone.parameters():
            p.requires_grad_(False)
    return model
