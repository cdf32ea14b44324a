"""What one stage-2 training step costs on this CPU, by backbone, crop size and frozen prefix.

Times a full optimisation step (8 crops x 12 slices, forward + backward + AdamW) for the per-slice CNNs
of the CPU presets, and, for a frozen prefix (``ClsConfig.frozen_stages``), both the one-off cost of
computing the cached prefix features of one crop and the per-step cost on cached features. Random
inputs: this measures compute, not quality.

    python bench/stage2_step.py [--threads 2] [--repeats 5] [--no-append]
"""

from __future__ import annotations

import argparse

import torch
from _common import markdown_table, median_time, publish

from cspine.ct.cls.train import param_groups, weighted_bce_loss
from cspine.models.vertebra_classifier import ClsConfig, build_classifier

BATCH, SLICES = 8, 12
CASES = (  # (backbone, pretrained, frozen stages, crop px)
    ("test_resnet", "none", 0, 48),
    ("tf_efficientnet_lite0", "imagenet", 0, 48),
    ("tf_efficientnet_lite0", "imagenet", 0, 64),
    ("tf_efficientnet_lite0", "imagenet", 0, 96),
    ("tf_efficientnet_lite0", "imagenet", 2, 64),
    ("tf_efficientnet_lite0", "imagenet", 3, 64),
    ("tf_efficientnet_lite0", "imagenet", 3, 96),
)


def _case(backbone: str, pretrained: str, frozen: int, size: int, repeats: int) -> list[object]:
    cfg = ClsConfig(backbone=backbone, pretrained=pretrained, frozen_stages=frozen, n_slices=SLICES, k=3,
                    image_size=size, gru_hidden=64, attn_dim=32, pixel_head=False)
    model = build_classifier(cfg).train()
    opt = torch.optim.AdamW(param_groups(model, 1e-3, 0.3), lr=1e-3)
    x = torch.rand(BATCH, SLICES, cfg.in_chans, size, size)
    y = torch.randint(0, 2, (BATCH,)).float()
    sy = torch.zeros(BATCH, SLICES)

    def step(out_fn):  # type: ignore[no-untyped-def]
        def run() -> None:
            loss = weighted_bce_loss(out_fn(), y, sy, 1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return run

    full, _ = median_time(step(lambda: model(x)), repeats=repeats)
    prefix_per_crop = cached = float("nan")
    if frozen:
        with torch.no_grad():
            xn = model.normalise(x)
            ct = xn[:, :, :3].flatten(0, 1)
            prefix_s, _ = median_time(lambda: model.backbone.prefix(ct), repeats=repeats)
            feats = model.backbone.prefix(ct)
        feats = feats.reshape(BATCH, SLICES, *feats.shape[1:])
        mask = x[:, :, 3:]
        cached, _ = median_time(step(lambda: model.forward_cached(feats, mask)), repeats=repeats)
        prefix_per_crop = prefix_s / BATCH
    return [backbone, pretrained, frozen, size, f"{full:.3f}",
            "-" if frozen == 0 else f"{cached:.3f}", "-" if frozen == 0 else f"{prefix_per_crop * 1e3:.1f}",
            "-" if frozen == 0 else f"{full / cached:.1f}x"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [_case(*case, repeats=args.repeats) for case in CASES]
    table = markdown_table(["CNN", "weights", "frozen stages", "crop px", "full step s (median)",
                            "cached step s", "prefix ms / crop (once)", "speed-up"], rows)
    publish("Stage-2 training step by backbone, crop size and frozen prefix",
            table, f"{BATCH} crops x {SLICES} slices per step, {args.threads} torch threads, random inputs "
            f"(compute only), median of {args.repeats}.", append=not args.no_append)


if __name__ == "__main__":
    main()
