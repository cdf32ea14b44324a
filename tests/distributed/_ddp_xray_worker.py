"""One rank of the DDP test: ``python -m torch.distributed.run --standalone --nproc_per_node N
_ddp_xray_worker.py DATA OUT`` trains a tiny no-dropout AlexNet on the gloo backend."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

import cspine.xray.train as xray_train
from cspine.models.radiograph import XrayConfig, build_xray_model
from cspine.xray.train import XrayTrainConfig, train_xray

#: AlexNet without batch norm or dropout (its own fc6/fc7 dropouts are switched off below): one process
#: and N processes then compute the same function, and only the summation order differs.
MODEL = XrayConfig(arch="alexnet", image_size=63, dropout=0.0, hidden=32)
RECIPE = XrayTrainConfig(epochs=2, batch_size=8, lr=0.03, seed=0, clip_grad_norm=5.0)



def _without_dropout(cfg: XrayConfig) -> nn.Module:
    net = build_xray_model(cfg)
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    return net


if __name__ == "__main__":
    xray_train.build_xray_model = _without_dropout
    torch.set_num_threads(1)
    resume = len(sys.argv) > 3 and sys.argv[3] == "--resume"
    epochs = int(sys.argv[4]) if resume else RECIPE.epochs
    recipe = XrayTrainConfig(**{**RECIPE.__dict__, "epochs": epochs})
    train_xray(Path(sys.argv[1]), Path(sys.argv[2]), MODEL, recipe, device="cpu", progress=False,
               resume=resume)
