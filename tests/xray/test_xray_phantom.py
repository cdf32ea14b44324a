"""The phantom radiographs through the training data path, and from-scratch trainability.

* What the network receives for each image is the rendering of the class its label index names
  (no label / class-order / normalisation mix-up between ``generate_xray_dataset``,
  ``load_dataset`` and ``ImageSet``).
* A randomly initialised GoogLeNet memorises a tiny phantom set in a few dozen full-batch SGD
  steps (a broken label path, head or init would leave the loss near ln 3).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cspine.labels import XRAY_CLASSES
from cspine.models.radiograph import XrayConfig, build_xray_model
from cspine.synth.xray import _render_exposure, generate_xray_dataset
from cspine.xray.data import load_dataset
from cspine.xray.torchdata import ImageSet
from cspine.xray.transforms import preprocess

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 64
MEAN, STD = XrayConfig(arch="googlenet").mean, XrayConfig(arch="googlenet").std


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_xray_dataset(tmp_path_factory.mktemp("xr") / "data", 9, seed=3, progress=False)


def _seed_and_exposure(path: Path, patient_id: str) -> tuple[int, int]:
    index = re.search(r"_(\d+)\.png$", path.name)
    assert index is not None and patient_id.startswith("P")
    return int(patient_id[1:]), int(index.group(1))


def test_network_input_is_the_labelled_class_rendering(phantom_set: Path) -> None:
    data = load_dataset(phantom_set)
    assert data.class_names == XRAY_CLASSES
    assert len({it.label for it in data.items}) >= 2  # the check below sees more than one class
    ds = ImageSet([it.path for it in data.items], [it.label for it in data.items], SIZE, mean=MEAN, std=STD)
    checked_other = False
    for i, it in enumerate(data.items):
        x, y = ds[i]
        assert x.shape == (3, SIZE, SIZE) and y == it.label
        seed, exposure = _seed_and_exposure(it.path, it.patient_id or "")
        name = data.class_names[y]
        assert it.path.parent.name == name
        # the same patient and exposure rendered as the class the label index names = the input
        own = preprocess(_render_exposure(seed, name, exposure) / 255.0, SIZE, MEAN, STD)
        torch.testing.assert_close(x, own, atol=2e-2, rtol=0)  # float16 cache of the resized image
        if not checked_other and name != "normal":
            # ... and not as a normal spine: the class's sign is in what the network sees
            other = preprocess(_render_exposure(seed, "normal", exposure) / 255.0, SIZE, MEAN, STD)
            assert float((x - other).abs().max()) > 0.5
            checked_other = True
    assert checked_other


def test_random_init_googlenet_memorises_a_tiny_phantom_set(phantom_set: Path) -> None:
    torch.manual_seed(0)
    data = load_dataset(phantom_set)
    ds = ImageSet([it.path for it in data.items], [it.label for it in data.items], SIZE, mean=MEAN, std=STD)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor([it.label for it in data.items])
    model = build_xray_model(XrayConfig(arch="googlenet", image_size=SIZE, hidden=64, dropout=0.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    model.train()
    losses = []
    for _ in range(30):  # full batch, batch-norm statistics of the batch
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert losses[0] > 0.9  # it starts from chance, so the fit below is learnt
    assert min(losses[-5:]) < 0.2, losses  # memorised (measured: ~0.01 after 27 steps)
