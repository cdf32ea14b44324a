"""EDA numbers against hand counts on a small table, and the figures on disk."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _rsna_fixture import write_rsna_layout
from cspine.ct.eda import FIGURES, eda_numbers, run_eda
from cspine.labels import STUDY_UID, TRAIN_COLUMNS
from cspine.output_folder import MANIFEST

# Five patients: C1..C7 then patient_overall derived.
ROWS = [
    [0, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1, 1],
    [0, 0, 0, 0, 0, 0, 0],
]


def _table() -> pd.DataFrame:
    rows = [[f"1.2.3.{i}", int(any(r)), *r] for i, r in enumerate(ROWS)]
    return pd.DataFrame(rows, columns=list(TRAIN_COLUMNS))


def test_numbers_equal_hand_counts() -> None:
    numbers = eda_numbers(_table(), {"1.2.3.0": 10, "1.2.3.1": 20, "1.2.3.2": 30})
    assert numbers["n_studies"] == 5
    assert numbers["fracture_counts"] == {"C1": 1, "C2": 2, "C3": 0, "C4": 0, "C5": 0, "C6": 1, "C7": 1,
                                          "patient_overall": 3}
    assert numbers["prevalence"]["C2"] == pytest.approx(0.4)
    assert numbers["prevalence"]["patient_overall"] == pytest.approx(0.6)
    assert numbers["fractures_per_patient"] == {"0": 2, "1": 1, "2": 2, **{str(k): 0 for k in range(3, 8)}}
    assert numbers["fractured_patients_mean_levels"] == pytest.approx(5 / 3)
    corr = np.array(numbers["correlation"]["matrix"], dtype=float)
    # C6 and C7 always fractured together: r = 1. C1 with C2: by hand, x=(0,1,0,0,0), y=(0,1,1,0,0).
    assert corr[5, 6] == pytest.approx(1.0)
    x, y = np.array([0, 1, 0, 0, 0.0]), np.array([0, 1, 1, 0, 0.0])
    dx, dy = x - x.mean(), y - y.mean()
    r = (dx * dy).sum() / np.sqrt((dx**2).sum() * (dy**2).sum())
    assert corr[0, 1] == pytest.approx(r) == pytest.approx(0.6123724)
    assert numbers["correlation"]["matrix"][2][2] is None  # C3 never fractured: undefined, not 0
    sps = numbers["slices_per_study"]
    assert (sps["min"], sps["median"], sps["max"], sps["total"]) == (10, 20.0, 30, 60)


def test_run_eda_writes_four_figures_and_json(tmp_path: Path) -> None:
    info = write_rsna_layout(tmp_path / "root", n_train=4, n_test=0, n_masks=0, images=False)
    table = pd.read_csv(info.root / "train.csv", dtype={STUDY_UID: str})
    for i, uid in enumerate(table[STUDY_UID]):
        folder = info.root / "train_images" / uid
        folder.mkdir()
        for k in range(3 + i):
            (folder / f"{k + 1}.dcm").write_bytes(b"")
    result = run_eda(info.root, tmp_path / "eda")
    for name in FIGURES:
        data = (tmp_path / "eda" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    written = json.loads((tmp_path / "eda" / "eda.json").read_text())
    assert written["slices_per_study"]["counts"] == {u: 3 + i for i, u in enumerate(table[STUDY_UID])}
    assert written["fracture_counts"]["patient_overall"] == int(table["patient_overall"].sum())
    assert result["n_studies"] == 4


def test_cli_eda(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cspine.cli.main import app

    info = write_rsna_layout(tmp_path / "root", n_train=3, n_test=0, n_masks=0, images=False)
    result = CliRunner().invoke(app, ["ct", "eda", "--data", str(info.root), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "patient_overall" in result.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted([*FIGURES, "eda.json", MANIFEST])
