"""``cspine demo``: the whole CT system end to end on a small synthetic phantom set, on a CPU.

Steps (each resumable; a rerun into the same folder skips what is done):

1. generate a phantom dataset in the RSNA 2022 layout (``OUT/data``, with ``test_labels.csv``);
2. decode the training studies into the preprocessing cache (``OUT/cache``);
3. train stage 1 on the studies with masks, pseudo-label the others, train stage 2 (``OUT/run``);
4. predict the held-out test studies from their DICOM files (``OUT/predictions``);
5. evaluate against ``test_labels.csv`` (``OUT/evaluation``: metrics.json, plots, report.md).

Every number it prints is measured on synthetic data.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _stage(preset: str, stage: str, *taken: str) -> dict[str, Any]:
    """A named preset's values of one stage (:mod:`cspine.registry.presets`), without the keys
    :class:`DemoConfig` holds in fields of its own."""
    from cspine.registry.presets import get_preset

    return {k: v for k, v in getattr(get_preset(preset), stage).items() if k not in taken}


#: The keys of the stage-1 values that DemoConfig keeps as fields (epochs, stacks per epoch, image size).
_SEG_FIELDS = ("epochs", "slices_per_epoch", "image_size")


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo (defaults: the full demo; :meth:`quick` a seconds-scale smoke run).

    The training values are the named presets ``demo`` and ``demo-quick`` of
    :mod:`cspine.registry.presets` (both over ``fast``; tune them there); the data sizes are here.
    """

    n_train: int = 200
    n_test: int = 60
    size: int = 128
    seed: int = 7
    seg_epochs: int = _stage("demo", "seg")["epochs"]
    seg_slices_per_epoch: int = _stage("demo", "seg")["slices_per_epoch"]
    seg_image_size: int = _stage("demo", "seg")["image_size"]
    seg_overrides: dict[str, Any] = field(default_factory=lambda: _stage("demo", "seg", *_SEG_FIELDS))
    cls_epochs: int = _stage("demo", "cls")["epochs"]
    cls_overrides: dict[str, Any] = field(default_factory=lambda: _stage("demo", "cls", "epochs"))

    @classmethod
    def quick(cls) -> DemoConfig:
        """Tiny everything: exercises each step in well under a minute (numbers meaningless)."""
        seg, cls_ = _stage("demo-quick", "seg"), _stage("demo-quick", "cls")
        return cls(n_train=6, n_test=3, size=64, seg_epochs=seg["epochs"],
                   seg_slices_per_epoch=seg["slices_per_epoch"], seg_image_size=seg["image_size"],
                   seg_overrides=_stage("demo-quick", "seg", *_SEG_FIELDS), cls_epochs=cls_["epochs"],
                   cls_overrides=_stage("demo-quick", "cls", "epochs"))


@dataclass
class DemoResult:
    """What the demo produced: folders, metrics and seconds per step."""

    out: Path
    metrics: dict[str, Any]
    seconds: dict[str, float]
    report: Path
    predictions_csv: Path

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def run_demo(out: str | Path, *, config: DemoConfig | None = None, quick: bool = False,
             workers: int | None = None, progress: bool = True) -> DemoResult:
    """Run the demo into ``out`` and return its metrics.

    Args:
        out: working folder (created); reruns reuse finished steps.
        config: sizes (default :class:`DemoConfig`); ``quick=True`` uses :meth:`DemoConfig.quick`.
        quick: a smoke-test sized run.
        workers: processes for phantom generation and decoding (default: the cores available).
        progress: show progress bars.
    """
    from cspine.ct import CtModel, predict_many
    from cspine.ct.evaluate import evaluate
    from cspine.ct.train_run import train_run
    from cspine.labels import TEST_LABELS_CSV
    from cspine.preprocess.cache import prepare_cache
    from cspine.runtime import cpu_threads
    from cspine.synth.ct import generate_ct_dataset

    cfg = config or (DemoConfig.quick() if quick else DemoConfig())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, cpu_threads())
    data, cache, run = out / "data", out / "cache", out / "run"
    pred_dir, eval_dir = out / "predictions", out / "evaluation"
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    generate_ct_dataset(data, cfg.n_train, n_test=cfg.n_test, seed=cfg.seed, size=cfg.size, workers=workers,
                        progress=progress)
    seconds["generate phantoms"] = time.perf_counter() - t

    t = time.perf_counter()
    summary = prepare_cache(data, cache, workers=workers, split="train", progress=progress)
    if summary.failed:
        log.warning("cache: %d studies failed: %s", len(summary.failed), summary.failed)
    seconds["decode + cache"] = time.perf_counter() - t

    t = time.perf_counter()
    if not (run / "seg" / "config.json").exists():
        seg = dict(cfg.seg_overrides, slices_per_epoch=cfg.seg_slices_per_epoch)
        train_run(data, run, stage="seg", preset="fast", device="cpu", cache=cache, epochs=cfg.seg_epochs,
                  image_size=cfg.seg_image_size, seg_overrides=seg, progress=progress)
    else:  # resumed demo: make sure every study has its pseudo mask
        from cspine.ct.seg.pseudo import pseudo_label_cache

        pseudo_label_cache(cache, run / "seg", device="cpu")
    seconds["train stage 1 + pseudo-labels"] = time.perf_counter() - t

    t = time.perf_counter()
    if not (run / "cls" / "config.json").exists():
        train_run(data, run, stage="cls", preset="fast", device="cpu", cache=cache, epochs=cfg.cls_epochs,
                  cls_overrides=dict(cfg.cls_overrides, seed=cfg.seed), progress=progress)
    seconds["train stage 2 + calibration"] = time.perf_counter() - t

    t = time.perf_counter()
    model = CtModel.load(run, device="cpu")
    pred = predict_many([data], model, pred_dir, progress=progress)
    if pred.failed:
        log.warning("predict: %d studies failed: %s", len(pred.failed), pred.failed)
    seconds["predict test studies"] = time.perf_counter() - t

    t = time.perf_counter()
    assert pred.predictions_csv is not None
    metrics = evaluate(pred.predictions_csv, data / TEST_LABELS_CSV, eval_dir, data_root=data)
    seconds["evaluate"] = time.perf_counter() - t
    result = DemoResult(out=out, metrics=metrics, seconds=seconds, report=eval_dir / "report.md",
                        predictions_csv=pred.predictions_csv)
    from cspine.fileio import write_json

    write_json(out / "demo.json", {"config": dataclasses.asdict(cfg), "seconds": seconds,
                                   "total_seconds": result.total_seconds,
                                   "patient_auc": metrics.get("patient_auc"),
                                   "note": "synthetic data (cspine phantom)"})
    return result


def results_table(result: DemoResult) -> Any:
    """A rich table of the demo's headline numbers (labelled synthetic)."""
    from rich.table import Table

    m = result.metrics

    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    table = Table(title="cspine demo - held-out synthetic CT studies")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for stage, text in model_weights(result.out / "run").items():
        table.add_row(f"weights: {stage}", text)
    dice = _stage1_dice(result.out / "run")
    if dice:
        table.add_row("stage-1 Dice per level (validation studies)",
                      " ".join(f"{k} {v:.2f}" for k, v in dice.items()))
    ci = m.get("patient_auc_ci95") or [None, None]
    table.add_row("studies evaluated", fmt(m.get("n_studies")))
    table.add_row("patient AUC (95% CI)", f"{fmt(m.get('patient_auc'))} ({fmt(ci[0])}-{fmt(ci[1])})")
    table.add_row("mean vertebra AUC", fmt(m.get("vertebra_auc_mean")))
    table.add_row("pooled vertebra AUC / level prior alone",
                  f"{fmt(m.get('vertebra_auc_pooled'))} / {fmt(m.get('vertebra_auc_pooled_level_prior'))}")
    for key in ("sensitivity", "specificity", "f1"):
        table.add_row(f"patient {key} at 0.5", fmt((m.get(key) or {}).get("at_0.5")))
    table.add_row("RSNA weighted log loss", fmt(m.get("rsna_weighted_log_loss")))
    table.add_row("prevalence baseline loss", fmt(m.get("prevalence_baseline_log_loss")))
    table.add_row("attention alignment", fmt(m.get("attention_alignment")))
    for step, sec in result.seconds.items():
        table.add_row(f"time: {step}", f"{sec:.0f} s")
    table.add_row("time: total", f"{result.total_seconds:.0f} s")
    return table


def model_weights(run: Path) -> dict[str, str]:
    """``{stage: "backbone, initial weights"}`` of a trained RUN folder (what the demo's table prints)."""
    from cspine.fileio import read_json

    out = {}
    for stage, name in (("seg", "stage 1"), ("cls", "stage 2")):
        path = Path(run) / stage / "config.json"
        if path.is_file():
            cfg = read_json(path).get("config", {})
            weights = cfg.get("pretrained", "none")
            weights = {"none": "random init", "imagenet": "ImageNet"}.get(weights, weights)
            frozen = f", first {cfg['frozen_stages']} stages frozen" if cfg.get("frozen_stages") else ""
            out[name] = f"{cfg.get('backbone')} ({weights}{frozen})"
    return out


def _stage1_dice(run: Path) -> dict[str, float]:
    from cspine.fileio import read_json

    path = Path(run) / "seg" / "metrics.json"
    if not path.is_file():
        return {}
    dice = read_json(path).get("dice") or {}
    return {k: float(v) for k, v in dice.items() if v is not None}
