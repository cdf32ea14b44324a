"""compare-readers on a hand-made example: Table 2 counts, agreement, kappa, McNemar by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from typer.testing import CliRunner

from cspine.cli.main import app
from cspine.errors import DatasetError
from cspine.xray.readers import compare_readers, mcnemar

N, F, D = "normal", "fracture", "dislocation"
TRUTH = [N, N, N, F, F, F, D, D, D, N]
MODEL = [N, N, N, F, F, F, D, D, N, F]  # 8 correct (wrong: img8, img9)
R1 = [N, F, N, F, N, F, D, N, N, N]     # 6 correct (wrong: img1, img4, img7, img8)
R2 = [N, N, N, F, F, F, D, D, D, F]     # 9 correct (wrong: img9)


def _write(tmp: Path) -> tuple[Path, Path, Path]:
    names = [f"img{i}.png" for i in range(10)]
    truth = tmp / "truth.csv"
    truth.write_text("path,label\n" + "".join(f"{n},{t}\n" for n, t in zip(names, TRUTH, strict=True)))
    pred = tmp / "predictions.csv"
    # predictions carry folder paths, as cspine xray predict writes them: matched by file name
    pred.write_text("path,prediction,normal,fracture,dislocation\n" + "".join(
        f"/data/x/{n},{m},0.3,0.3,0.4\n" for n, m in zip(names, MODEL, strict=True)))
    reads = tmp / "reads.csv"
    rows = [f"{n},{r},{lab}\n" for r, labs in (("R1", R1), ("R2", R2))
            for n, lab in zip(names, labs, strict=True)]
    reads.write_text("path,reader,label\n" + "".join(rows))
    return pred, reads, truth


def test_table2_kappa_and_mcnemar(tmp_path: Path) -> None:
    res = compare_readers(*_write(tmp_path))
    assert res["n"] == 10
    assert res["table"]["model"] == {"correct": 8, "wrong": 2, "accuracy": 0.8}
    assert res["table"]["R1"]["correct"] == 6 and res["table"]["R2"]["correct"] == 9
    assert res["kappa_vs_model"]["R1"] == pytest.approx(cohen_kappa_score(R1, MODEL))
    assert res["kappa_vs_truth"]["model"] == pytest.approx(cohen_kappa_score(MODEL, TRUTH))
    # model vs R1: model right & R1 wrong = img1, img4, img7 (b=3); model wrong & R1 right = img9 (c=1)
    # exact two-sided binomial: 2 * P(X <= 1 | n=4, p=1/2) = 2 * 5/16
    m1 = res["mcnemar"]["R1"]
    assert (m1["b"], m1["c"], m1["test"]) == (3, 1, "exact binomial")
    assert m1["p_value"] == pytest.approx(0.625)
    # model vs R2: b=0, c=1 (img8) -> p = 2 * 1/2 = 1.0
    assert res["mcnemar"]["R2"]["p_value"] == pytest.approx(1.0)
    # per-class accuracy and agreement with the model
    assert res["per_class"]["R1"][N] == pytest.approx(3 / 4)  # img0, img2, img9 of 4 normals
    assert res["per_class"]["model"][D] == pytest.approx(2 / 3)
    agree = res["agreement_with_model"]["R2"]
    assert agree["overall"] == pytest.approx(0.9) and agree["per_class"][D] == pytest.approx(2 / 3)


def test_mcnemar_chi_square_for_many_discordant_pairs() -> None:
    model = np.array([True] * 20 + [False] * 10 + [True] * 5)
    reader = np.array([False] * 20 + [True] * 10 + [True] * 5)
    r = mcnemar(model, reader)
    assert (r["b"], r["c"]) == (20, 10) and r["test"].startswith("chi-square")
    assert r["statistic"] == pytest.approx((10 - 1) ** 2 / 30)
    assert r["p_value"] == pytest.approx(0.10035, abs=1e-4)  # chi2.sf(2.7, 1)


def test_wide_reads_and_cli(tmp_path: Path) -> None:
    pred, _, truth = _write(tmp_path)
    wide = tmp_path / "wide.csv"
    wide.write_text("path,R1,R2\n" + "".join(f"img{i}.png,{a},{b}\n" for i, (a, b) in enumerate(zip(R1, R2,
                                                                                                   strict=True))))
    out = tmp_path / "cmp.json"
    r = CliRunner().invoke(app, ["xray", "compare-readers", "--pred", str(pred), "--reads", str(wide),
                                 "--truth", str(truth), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "| model | 8 | 2 | 0.800 |" in r.output and "| R1 | 6 | 4 |" in r.output
    assert out.is_file()


def test_bad_reads_file(tmp_path: Path) -> None:
    pred, _, truth = _write(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("image,who\nx,y\n")
    with pytest.raises(DatasetError, match="bad.csv"):
        compare_readers(pred, bad, truth)
