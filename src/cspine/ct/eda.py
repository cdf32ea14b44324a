"""Exploratory data analysis of an RSNA 2022 root: the CT paper's four figures and their numbers.

1. ``prevalence.png``: fracture prevalence per level (C1..C7) and per patient, beside the real
   RSNA 2022 training-set prevalence for reference;
2. ``fractures_per_patient.png``: how many vertebrae are fractured per patient;
3. ``correlation.png``: level-by-level (Pearson) correlation of the fracture labels;
4. ``slices_per_study.png``: number of slices per study (files counted, nothing decoded).

``eda.json`` holds every number drawn.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cspine.fileio import atomic_path, write_json
from cspine.labels import (
    PATIENT_OVERALL,
    RSNA_FRACTURE_COUNTS,
    RSNA_N_FRACTURED_PATIENTS,
    RSNA_N_STUDIES,
    TRAIN_IMAGES,
    VERTEBRAE,
)

log = logging.getLogger(__name__)

FIGURES: tuple[str, ...] = ("prevalence.png", "fractures_per_patient.png", "correlation.png",
                            "slices_per_study.png")
EDA_JSON = "eda.json"
#: Every file ``run_eda`` writes into its output folder.
OUTPUT_NAMES: tuple[str, ...] = (*FIGURES, EDA_JSON)


def count_slices(study_dir: Path) -> int:
    """Number of DICOM files in a study folder (``*.dcm``, else every non-hidden file)."""
    with os.scandir(study_dir) as it:
        names = [e.name for e in it if e.is_file() and not e.name.startswith(".")]
    dcm = [n for n in names if n.lower().endswith(".dcm")]
    return len(dcm) if dcm else len(names)


def eda_numbers(table: pd.DataFrame, slice_counts: dict[str, int] | None = None) -> dict[str, Any]:
    """The numbers behind the four figures, from a train.csv-like table and per-study slice counts.

    Args:
        table: rows with StudyInstanceUID, patient_overall, C1..C7 (0/1).
        slice_counts: StudyInstanceUID -> number of slices (optional).

    Returns:
        A JSON-ready dict (NaN correlations, e.g. for a level never fractured, become None).
    """
    n = len(table)
    cols = [*VERTEBRAE, PATIENT_OVERALL]
    counts = {c: int(table[c].sum()) for c in cols}
    per_patient = table[list(VERTEBRAE)].sum(axis=1).astype(int)
    hist = {str(k): int((per_patient == k).sum()) for k in range(len(VERTEBRAE) + 1)}
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = table[list(VERTEBRAE)].astype(float).corr().to_numpy()
    out: dict[str, Any] = {
        "n_studies": n,
        "fracture_counts": counts,
        "prevalence": {c: (counts[c] / n if n else None) for c in cols},
        "reference_rsna_prevalence": {
            **{c: RSNA_FRACTURE_COUNTS[c] / RSNA_N_STUDIES for c in VERTEBRAE},
            PATIENT_OVERALL: RSNA_N_FRACTURED_PATIENTS / RSNA_N_STUDIES,
        },
        "fractures_per_patient": hist,
        "fractured_patients_mean_levels": (float(per_patient[per_patient > 0].mean())
                                           if (per_patient > 0).any() else None),
        "correlation": {
            "levels": list(VERTEBRAE),
            "matrix": [[None if not np.isfinite(v) else round(float(v), 6) for v in row] for row in corr],
        },
    }
    if slice_counts is not None:
        values = np.array(list(slice_counts.values()), dtype=np.int64)
        out["slices_per_study"] = {
            "counts": dict(slice_counts),
            "n_studies": int(values.size),
            "min": int(values.min()) if values.size else None,
            "median": float(np.median(values)) if values.size else None,
            "mean": float(values.mean()) if values.size else None,
            "max": int(values.max()) if values.size else None,
            "total": int(values.sum()),
        }
    return out


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_figures(numbers: dict[str, Any], out: Path) -> list[Path]:
    """Draw the four figures from :func:`eda_numbers` output into ``out`` (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f for f in FIGURES]
    cols = [*VERTEBRAE, PATIENT_OVERALL]
    names = [*VERTEBRAE, "patient"]

    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = np.arange(len(cols))
    here = [100 * (numbers["prevalence"][c] or 0.0) for c in cols]
    ref = [100 * numbers["reference_rsna_prevalence"][c] for c in cols]
    ax.bar(x - 0.2, here, 0.4, label=f"this dataset (n={numbers['n_studies']})", color="#c0392b")
    ax.bar(x + 0.2, ref, 0.4, label=f"RSNA 2022 train (n={RSNA_N_STUDIES})", color="#95a5a6")
    ax.set_xticks(x, names)
    ax.set_ylabel("fractured (%)")
    ax.set_title("Fracture prevalence per vertebra and per patient")
    ax.legend(frameon=False)
    _save(fig, paths[0])

    fig, ax = plt.subplots(figsize=(6, 3.6))
    hist = numbers["fractures_per_patient"]
    ax.bar([int(k) for k in hist], list(hist.values()), color="#2980b9")
    for k, v in hist.items():
        if v:
            ax.text(int(k), v, str(v), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("fractured vertebrae per patient")
    ax.set_ylabel("patients")
    ax.set_title("Fractures per patient")
    _save(fig, paths[1])

    fig, ax = plt.subplots(figsize=(5, 4.3))
    mat = np.array([[np.nan if v is None else v for v in row] for row in numbers["correlation"]["matrix"]])
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(VERTEBRAE)), VERTEBRAE)
    ax.set_yticks(range(len(VERTEBRAE)), VERTEBRAE)
    for i in range(len(VERTEBRAE)):
        for j in range(len(VERTEBRAE)):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(mat[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Pearson r")
    ax.set_title("Level-by-level fracture correlation")
    _save(fig, paths[2])

    fig, ax = plt.subplots(figsize=(6, 3.6))
    sps = numbers.get("slices_per_study")
    if sps and sps["n_studies"]:
        values = list(sps["counts"].values())
        ax.hist(values, bins=min(40, max(5, len(set(values)))), color="#27ae60")
        ax.axvline(sps["median"], color="k", linestyle="--", label=f"median {sps['median']:g}")
        ax.legend(frameon=False)
    else:
        ax.text(0.5, 0.5, "no study folders found", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("slices per study")
    ax.set_ylabel("studies")
    ax.set_title("Slices per study")
    _save(fig, paths[3])
    return paths


def run_eda(root: str | Path, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Write the four EDA figures and ``eda.json`` for an RSNA 2022 root.

    Args:
        root: RSNA 2022 layout root (train.csv and train_images/).
        out: output folder (created).
        overwrite: replace files under the EDA's output names that cspine did not write
            (:mod:`cspine.output_folder`).

    Returns:
        The numbers written to ``eda.json`` (plus ``figures``: the PNG paths).

    Raises:
        DatasetError: the root's layout or CSVs are invalid.
        OutputFolderError: ``out`` is a file, not writable, or holds one of the output names that cspine
            did not write (before any study folder is read).
    """
    from cspine.io.rsna import RsnaDataset
    from cspine.output_folder import open_output_folder

    dataset = RsnaDataset(root)
    outputs = open_output_folder(out, overwrite=overwrite, names=OUTPUT_NAMES, command="cspine ct eda")
    out = outputs.path
    counts: dict[str, int] = {}
    missing: list[str] = []
    for uid in dataset.train_uids():
        folder = dataset.root / TRAIN_IMAGES / uid
        if folder.is_dir():
            counts[uid] = count_slices(folder)
        else:
            missing.append(uid)
    if missing:
        log.warning("%d studies of train.csv have no image folder (first %s)", len(missing), missing[0])
    numbers = eda_numbers(dataset.train, counts)
    numbers["studies_without_images"] = missing
    figures = plot_figures(numbers, out)
    numbers["figures"] = [p.name for p in figures]
    write_json(out / EDA_JSON, numbers)
    outputs.record(*OUTPUT_NAMES)
    log.info("EDA of %d studies written to %s", len(dataset.train), out)
    return numbers


__all__ = ["EDA_JSON", "FIGURES", "OUTPUT_NAMES", "count_slices", "eda_numbers", "plot_figures", "run_eda"]
