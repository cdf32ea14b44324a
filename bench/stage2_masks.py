"""Benchmark: stage 2 alone, trained on phantoms with their true masks, scored on held-out phantoms with
true masks and (``--seg RUN``) with a stage-1 model's masks: does the classifier or the localisation
limit the two-stage system? All numbers *synthetic*.

Studies are rendered in memory (``make_phantom``, no DICOM round trip); fracture boxes come from the
phantom's own per-slice boxes, as ``train_bounding_boxes.csv`` would give them. The stage-2 model and
training settings are the CPU demo's (:class:`cspine.ct.demo.DemoConfig`, read at run time).

With ``--seg`` it also mixes the two: crops placed by the true mask with stage 1's mask as the
mask channel, and the reverse, which tells the crop's geometry from the mask channel's content.
``--mask-blur 0`` trains with the sharp mask channel (the leak the default blur removes: a true mask
traces the fracture).

The last row is the reference a classifier must beat: no image at all, each vertebra scored by its
level's prevalence in the training phantoms (fractures cluster at C2 and C7, so the pooled vertebra
AUC of that prior is well above 0.5; its per-level AUCs are 0.5 by construction).

Usage::

    .venv/bin/python bench/stage2_masks.py --train 200 --test 60 --epochs 8 [--seg RUN] [--mask-blur 0]
        [--no-append]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, publish  # noqa: E402

TEST_SEED0 = 100_000


def phantom_study(seed: int, size: int):  # noqa: ANN201
    """A ClsStudy from a phantom: true masks, labels, box slices and in-plane boxes (canonical)."""
    from cspine.ct.cls.dataset import ClsStudy
    from cspine.ct.seg.postprocess import Segmentation
    from cspine.synth.phantom import make_phantom

    p = make_phantom(seed, size=size)
    regions: dict[int, tuple[tuple[int, int, int, int], ...]] = {}
    for k, x, y, w, h in p.boxes:
        regions[int(k)] = ((int(np.floor(y)), int(np.ceil(y + h)), int(np.floor(x)), int(np.ceil(x + w))),)
    return ClsStudy(str(seed), p.volume(), Segmentation.from_labels(p.labels), dict(p.fractured),
                    frozenset(regions), regions)


#: How the test crops are made: their geometry (z-range, box) and their mask channel, each from the true
#: mask or from stage 1.
MODES = {"true masks": ("true", "true"), "stage-1 masks": ("stage1", "stage1"),
         "true geometry, stage-1 mask channel": ("true", "stage1"),
         "stage-1 geometry, true mask channel": ("stage1", "true")}


def score(studies: list, model, stage1: list | None = None,  # noqa: ANN001
          mode: str = "true masks") -> dict[str, float]:
    """AUCs of ``model`` on ``studies``; ``stage1``: each study's stage-1 segmentation (made once)."""
    from cspine.ct.cls.predict import classify
    from cspine.ct.seg.postprocess import Segmentation
    from cspine.labels import VERTEBRAE

    geometry, channel = MODES[mode]
    p, y, pv, yv = [], [], [], []
    for i, s in enumerate(studies):
        found = stage1[i] if stage1 is not None else s.seg
        seg = Segmentation((found if channel == "stage1" else s.seg).labels,
                           (found if geometry == "stage1" else s.seg).vertebrae)
        r = classify(s.volume, seg, model)
        p.append(r.patient)
        y.append(max(s.labels.values()))
        pv += [r.probs[v] for v in VERTEBRAE]
        yv += [s.labels[v] for v in VERTEBRAE]
    return aucs(y, p, yv, pv)


def aucs(y: list, p: list, yv: list, pv: list) -> dict[str, float]:
    """Patient AUC, pooled vertebra AUC and the mean of the per-level AUCs (levels in C1..C7 order, 7 per
    study; a level with one class in the labels is left out). The pooled AUC rewards knowing which
    levels break most often; the per-level mean does not."""
    from sklearn.metrics import roc_auc_score

    yv_m, pv_m = np.asarray(yv).reshape(-1, 7), np.asarray(pv, np.float64).reshape(-1, 7)
    per = [roc_auc_score(yv_m[:, j], pv_m[:, j]) for j in range(7) if len(set(yv_m[:, j])) == 2]
    return {"patient_auc": float(roc_auc_score(y, p)), "vertebra_auc": float(roc_auc_score(yv, pv)),
            "vertebra_auc_per_level": float(np.mean(per))}


def level_prior(train: list, test: list) -> dict[str, float]:  # noqa: ANN001
    """The AUCs of scoring each vertebra by its level's training prevalence (no image at all) and each
    patient by the noisy-OR of those over the levels its true mask shows."""
    from cspine.labels import VERTEBRAE

    prior = {v: float(np.mean([s.labels[v] for s in train])) for v in VERTEBRAE}
    y, p, yv, pv = [], [], [], []
    for s in test:
        present = [v for v in VERTEBRAE if s.seg.vertebrae.get(v) is not None and s.seg.vertebrae[v].present]
        y.append(max(s.labels.values()))
        p.append(1.0 - float(np.prod([1.0 - prior[v] for v in present])))
        yv += [s.labels[v] for v in VERTEBRAE]
        pv += [prior[v] for v in VERTEBRAE]
    return aucs(y, p, yv, pv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=60)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seg", type=Path, default=None,
                    help="a RUN (or RUN/seg) whose stage 1 makes test masks")
    ap.add_argument("--mask-blur", type=float, default=None,
                    help="the mask channel's blur (default: the model default; 0 = the sharp mask)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()

    import torch

    from cspine.ct.cls.predict import ClsModel
    from cspine.ct.cls.train import ClsTrainConfig, train_classifier
    from cspine.ct.demo import DemoConfig
    from cspine.ct.presets import cls_train_config
    from cspine.ct.seg.predict import SegModel, segment
    from cspine.runtime import cpu_threads

    torch.set_num_threads(args.threads or cpu_threads())
    demo = DemoConfig()
    over = dict(demo.cls_overrides, seed=demo.seed)
    if args.mask_blur is not None:
        over["mask_blur"] = args.mask_blur
    cfg: ClsTrainConfig = cls_train_config("fast", epochs=args.epochs, **over)
    train = [phantom_study(s, args.size) for s in tqdm(range(args.train), desc="training phantoms")]
    test = [phantom_study(TEST_SEED0 + s, args.size) for s in tqdm(range(args.test), desc="test phantoms")]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_classifier(None, Path(tmp), cfg, studies=train, progress=True)
        train_s = time.perf_counter() - t0
        model = ClsModel.load(tmp)
        rows = [["true masks", *(f"{v:.3f}" for v in score(test, model).values())]]
        if args.seg is not None:
            seg_model = SegModel.load(args.seg)
            stage1 = [segment(s.volume, seg_model) for s in tqdm(test, desc="stage 1 on test phantoms")]
            for mode in list(MODES)[1:]:
                rows.append([f"{mode} ({args.seg})",
                             *(f"{v:.3f}" for v in score(test, model, stage1, mode).values())])
    rows.append(["level prior alone (no image: each level's training prevalence)",
                 *(f"{v:.3f}" for v in level_prior(train, test).values())])
    table = markdown_table(["test masks", "patient AUC (synthetic)", "vertebra AUC pooled (synthetic)",
                            "vertebra AUC, mean per level (synthetic)"], rows)
    blur = f" --mask-blur {args.mask_blur:g}" if args.mask_blur is not None else ""
    notes = (f"`bench/stage2_masks.py --train {args.train} --test {args.test} --size {args.size} "
             f"--epochs {args.epochs}{blur}`: stage 2 (mask channel blur {cfg.model.mask_blur:g}, "
             f"{cfg.crop_variants} jittered crop(s) per training vertebra) in the CPU demo's configuration "
             f"trained on {args.train} "
             f"phantoms with true masks ({train_s:.0f} s, {torch.get_num_threads()} threads), scored on "
             f"{args.test} other "
             "phantoms read without DICOM. *Synthetic*.")
    publish("CT stage 2 alone: true against stage-1 masks (synthetic)", table, notes, not args.no_append)


if __name__ == "__main__":
    main()
