"""One rank of the CT DDP smoke test: stage 1 and stage 2 training on tiny data under torchrun (gloo)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ct"))
from test_cls_train import MODEL, toy_study  # noqa: E402
from test_seg_train import TINY, _pairs  # noqa: E402

from cspine.ct.cls.train import ClsTrainConfig, train_classifier  # noqa: E402
from cspine.ct.seg.train import SegTrainConfig, train_segmentation  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    seg = SegTrainConfig(model=TINY, epochs=1, batch_size=8, slices_per_epoch=16, val_fraction=0.34)
    train_segmentation(None, out / "s", seg, volumes=_pairs(range(3)), device="cpu")
    cls = ClsTrainConfig(model=MODEL, epochs=2, batch_size=4, lr=3e-3, max_steps_per_epoch=3,
                         val_fraction=0.3, crop_variants=1)
    train_classifier(None, out / "c", cls, studies=[toy_study(seed) for seed in range(8)], progress=False,
                     device="cpu")
