"""Named radiograph training presets: ``paper`` (the radiograph paper's recipe) and ``cpu``.

* ``paper``: SGD with momentum 0.9, lr 0.001, mini-batches of 10, 30 epochs, the rate halved every
  4 epochs (the factor is cspine's, see :mod:`cspine.xray.train`), a 70/15/15 split, every layer
  fine-tuned, at the architecture's own input size. The architecture is ``--arch`` (the paper's
  AlexNet / GoogLeNet, or Lite0); its ImageNet weights are asked for (``imagenet``): Lite0's come
  from the offline weights registry, AlexNet's and GoogLeNet's from torchvision's local cache on a
  machine that has them (nothing is downloaded; without them, pass ``--pretrained none|PATH``).
* ``cpu``: ImageNet EfficientNet-Lite0 (registry weights) at 224 px with its stem and first six
  stages frozen, so that their output is computed once per image and each epoch trains only the
  last stage, ``conv_head`` and the paper's head (about 10 s per epoch for 840 images on one core,
  against minutes for the whole network); SGD momentum 0.9 at lr 0.01 (the paper's 0.001 barely
  moves in the epochs a CPU affords: 0.51 validation accuracy after 12 epochs, synthetic), halved
  every 4 epochs, 12 epochs. Measured on phantom radiographs in docs/BENCHMARKS.md (synthetic).

Any option given explicitly on the command line overrides the preset.
"""

from __future__ import annotations

from typing import Any

from cspine.errors import CspineError

PRESETS: tuple[str, ...] = ("paper", "cpu")


def preset_configs(preset: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(XrayConfig fields, XrayTrainConfig fields)`` of a preset.

    Raises:
        CspineError: an unknown preset name.
    """
    if preset == "paper":
        return ({"pretrained": "imagenet", "finetune": "all", "frozen_stages": 0, "image_size": None},
                {"epochs": 30, "batch_size": 10, "lr": 1e-3, "momentum": 0.9, "lr_step": 4, "lr_gamma": 0.5,
                 "fractions": (0.7, 0.15, 0.15)})
    if preset == "cpu":
        return ({"arch": "efficientnet_lite0", "pretrained": "imagenet", "finetune": "all",
                 "frozen_stages": 6, "image_size": 224},
                {"epochs": 12, "batch_size": 10, "lr": 1e-2, "momentum": 0.9, "lr_step": 4, "lr_gamma": 0.5,
                 "fractions": (0.7, 0.15, 0.15)})
    raise CspineError(f"unknown radiograph preset {preset!r}; choose one of {', '.join(PRESETS)}")
