"""What patient AUC a given per-vertebra AUC buys: a simulation, no network.

Each patient has seven vertebra scores drawn from a unit normal; a fractured patient (48%, the RSNA
rate) has 1 to 3 fractured levels (1 + Bernoulli(0.35) + Bernoulli(0.15): ~1.5 on average, the phantom's
and RSNA's rate) whose scores are shifted by d' = sqrt(2) * Phi^-1(AUC), so that one fractured vertebra
outranks one intact vertebra with probability AUC. The patient score is the max or the noisy-OR of the
seven (sigmoid(score - 3) as probabilities). Equal variances and no level effects: a simple model to
read the demo's patient AUC against its vertebra AUC, not a prediction for real data.

Usage: ``python bench/patient_auc_model.py [--patients 20000] [--no-append]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, publish  # noqa: E402

LEVELS = 7
PREVALENCE = 0.48
P_SECOND, P_THIRD = 0.35, 0.15


def patient_aucs(vertebra_auc: float, n: int, rng: np.random.Generator) -> tuple[float, float]:
    """(max, noisy-OR) patient AUC of simulated patients whose vertebra scores have ``vertebra_auc``."""
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    y = rng.random(n) < PREVALENCE
    k = np.where(y, 1 + (rng.random(n) < P_SECOND) + (rng.random(n) < P_THIRD), 0)
    scores = rng.normal(size=(n, LEVELS))
    scores += np.sqrt(2.0) * norm.ppf(vertebra_auc) * (np.arange(LEVELS)[None, :] < k[:, None])
    probs = 1.0 / (1.0 + np.exp(-(scores - 3.0)))
    return (float(roc_auc_score(y, scores.max(1))), float(roc_auc_score(y, 1.0 - np.prod(1.0 - probs, 1))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=20000)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for a in (0.65, 0.70, 0.76, 0.80, 0.85, 0.90, 0.93, 0.95, 0.97):
        mx, nor = patient_aucs(a, args.patients, rng)
        rows.append([f"{a:.2f}", f"{mx:.3f}", f"{nor:.3f}"])
    table = markdown_table(["vertebra AUC", "patient AUC, max", "patient AUC, noisy-OR"], rows)
    notes = (f"`bench/patient_auc_model.py --patients {args.patients}`: simulated scores, no network and no "
             "image (see the script's docstring for the model). A patient AUC of 0.85 needs a vertebra AUC "
             "of about 0.92 under this model.")
    publish("Patient AUC from vertebra AUC: a simulation", table, notes, not args.no_append)


if __name__ == "__main__":
    main()
