"""Fracture boxes with a non-positive size, a negative corner, beyond the image or on a missing slice are
reported with their CSV data row; bad-size boxes are left out of training, and no user file changes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from _rsna_fixture import FixtureInfo, train_table, write_rsna_layout
from cspine.cli.main import app
from cspine.io.rsna import RsnaDataset
from cspine.labels import BOXES_CSV, STUDY_UID

SHAPE = (6, 12, 10)  # slices, rows, columns of each fixture study

#: (x, y, width, height, slice_number, the problem reported or None)
BOXES = [
    (1.5, 2.0, 4.0, 3.0, 2, None),  # data row 1: fine
    (1.0, 1.0, -4.0, 3.0, 2, "width -4 is not positive; box left out"),
    (1.0, 1.0, 4.0, 0.0, 3, "height 0 is not positive; box left out"),
    (-3.0, 1.0, 4.0, 3.0, 3, "corner x -3, y 1 lies outside the image (negative); box left out"),
    (8.0, 1.0, 5.0, 3.0, 4, "x 8..13 reaches beyond the image's 10 columns"),
    (1.0, 10.0, 2.0, 4.0, 4, "y 10..14 reaches beyond the image's 12 rows"),
    (1.0, 1.0, 2.0, 2.0, 99, "slice_number 99 is not an InstanceNumber of the study's series"),
    (2.0, 2.0, 2.0, 2.0, 5, None),
]


@pytest.fixture
def rsna(tmp_path: Path) -> FixtureInfo:
    table = train_table(1).assign(patient_overall=1, C2=1)
    info = write_rsna_layout(tmp_path / "root", n_test=0, shape=SHAPE, n_masks=0, table=table)
    uid = info.train_uids[0]
    rows = [{STUDY_UID: uid, "x": x, "y": y, "width": w, "height": h, "slice_number": n}
            for x, y, w, h, n, _ in BOXES]
    pd.DataFrame(rows).to_csv(info.root / BOXES_CSV, index=False)
    return info


def test_dataset_leaves_out_bad_size_boxes_naming_their_rows(rsna: FixtureInfo) -> None:
    ds = RsnaDataset(rsna.root)
    assert len(ds.box_problems) == 3
    for row, (*_, problem) in enumerate(BOXES, start=1):
        if problem and "left out" in problem:
            assert any(f"{BOXES_CSV}: data row {row} " in p and problem in p for p in ds.box_problems), row
    kept = ds.boxes_of(rsna.train_uids[0])
    assert [r[0] for r in kept] == [1, 5, 6, 7, 8]  # CSV data rows of the boxes training sees
    assert len(ds.boxes) == 5


def test_cli_prepare_reports_every_bad_box_with_its_row(rsna: FixtureInfo, tmp_path: Path, snapshot) -> None:
    snap = snapshot(rsna.root)
    args = ["ct", "prepare", "--data", str(rsna.root), "--cache", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output  # boxes are reported, the studies are cached
    out = " ".join(result.output.split())
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    for row, (*_, problem) in enumerate(BOXES, start=1):
        if problem is None:
            assert f"data row {row} " not in out
            continue
        assert f"{BOXES_CSV}: data row {row} " in out and problem in out, (row, out)
        assert sum(f"data row {row} " in p and problem in p for p in summary["box_problems"]) == 1
    assert len(summary["box_problems"]) == 6
    snap.assert_unchanged(allow_new=False)
