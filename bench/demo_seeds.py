"""Benchmark: how much the demo's held-out numbers move with stage 2's seed alone.

Takes a finished ``cspine demo`` folder and, for each seed, retrains stage 2 in the demo's
configuration (:class:`cspine.ct.demo.DemoConfig`) on the same phantoms, cache and stage-1 model,
predicts the same held-out studies and evaluates them. Each seed gets its own folder
``WORKDIR/seeds/<seed>/`` (stage 1 copied in; a rerun reuses what is finished). All numbers *synthetic*.

Usage::

    .venv/bin/python bench/demo_seeds.py --workdir /tmp/demo --seeds 7 8 [--threads 2] [--no-append]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, publish  # noqa: E402


def run_seed(work: Path, seed: int) -> dict:
    """Stage 2 with ``seed`` on ``work``'s data, cache and stage 1; the evaluation's metrics."""
    from cspine.ct import CtModel, predict_many
    from cspine.ct.demo import DemoConfig
    from cspine.ct.evaluate import evaluate
    from cspine.ct.train_run import train_run
    from cspine.labels import TEST_LABELS_CSV

    cfg, data, out = DemoConfig(), work / "data", work / "seeds" / str(seed)
    if not (out / "run" / "seg").is_dir():
        shutil.copytree(work / "run" / "seg", out / "run" / "seg")
    if not (out / "run" / "cls" / "config.json").is_file():
        train_run(data, out / "run", stage="cls", preset="fast", device="cpu", cache=work / "cache",
                  epochs=cfg.cls_epochs, cls_overrides=dict(cfg.cls_overrides, seed=seed), progress=False)
    pred = predict_many([data], CtModel.load(out / "run", device="cpu"), out / "predictions", progress=False)
    assert pred.predictions_csv is not None
    return evaluate(pred.predictions_csv, data / TEST_LABELS_CSV, out / "evaluation", data_root=data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="a finished `cspine demo --out` folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 8])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()

    import torch

    from cspine.runtime import cpu_threads

    torch.set_num_threads(args.threads or cpu_threads())
    rows = []
    for seed in args.seeds:
        m = run_seed(args.workdir, seed)
        align = m.get("attention_alignment")
        rows.append([str(seed), f"{m['patient_auc']:.3f}", f"{m['vertebra_auc_mean']:.3f}",
                     f"{m['vertebra_auc_pooled']:.3f}", f"{m['vertebra_auc_pooled_level_prior']:.3f}",
                     "n/a" if align is None else f"{align:.3f}", f"{m['rsna_weighted_log_loss']:.4f}"])
    table = markdown_table(["stage-2 seed", "patient AUC", "mean vertebra AUC", "pooled vertebra AUC",
                            "level prior alone", "attention alignment", "RSNA loss"], rows)
    seeds = " ".join(map(str, args.seeds))
    notes = (f"`bench/demo_seeds.py --workdir {args.workdir} --seeds {seeds}`: stage 2 retrained per seed on "
             "the demo's phantoms, cache and stage 1, the same held-out studies. *Synthetic*.")
    publish("CT demo: stage-2 seed spread (synthetic)", table, notes, not args.no_append)


if __name__ == "__main__":
    main()
