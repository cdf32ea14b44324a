"""Every command that writes fixed names into a user's folder overwrites only what cspine wrote there, and
refuses an output path that is a file before any work starts: ``ct eda``, ``ct prepare``, ``ct evaluate``,
``synth ct`` / ``synth xray``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from _rsna_fixture import write_rsna_layout
from cspine.cli.main import app
from cspine.labels import PATIENT_OVERALL, STUDY_UID, VERTEBRAE
from cspine.output_folder import MANIFEST, OutputFolderError


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_rsna_layout(tmp_path_factory.mktemp("rsna") / "root", n_train=3, n_test=0, n_masks=0).root


def _refused(res, path: Path, problem: str) -> None:
    assert isinstance(res.exception, OutputFolderError), res.output
    message = str(res.exception)
    assert str(path) in message and problem in message and "\n" not in message


def test_eda_refuses_a_foreign_eda_json_and_replaces_it_only_when_told(rsna: Path, tmp_path: Path,
                                                                        snapshot) -> None:
    out = tmp_path / "eda"
    out.mkdir()
    (out / "eda.json").write_text('{"my": "notes"}\n')
    snap = snapshot(tmp_path, rsna)
    res = CliRunner().invoke(app, ["ct", "eda", "--data", str(rsna), "--out", str(out)])
    _refused(res, out / "eda.json", "not written by cspine ct eda")
    snap.assert_unchanged(allow_new=False)  # no figure drawn before the refusal
    res = CliRunner().invoke(app, ["ct", "eda", "--data", str(rsna), "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "eda.json").read_text())["n_studies"] == 3
    res = CliRunner().invoke(app, ["ct", "eda", "--data", str(rsna), "--out", str(out)])  # its own: rerun
    assert res.exit_code == 0, res.output


def test_eda_output_path_that_is_a_file(rsna: Path, tmp_path: Path, snapshot) -> None:
    target = tmp_path / "eda.txt"
    target.write_text("x")
    snap = snapshot(tmp_path)
    res = CliRunner().invoke(app, ["ct", "eda", "--data", str(rsna), "--out", str(target)])
    _refused(res, target, "is a file")
    snap.assert_unchanged(allow_new=False)


def test_prepare_refuses_a_folder_that_is_not_a_cache_and_a_foreign_summary(rsna: Path, tmp_path: Path,
                                                                             snapshot) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.docx").write_text("years of work")
    snap = snapshot(tmp_path, rsna)
    res = CliRunner().invoke(app, ["ct", "prepare", "--data", str(rsna), "--cache", str(home)])
    _refused(res, home, "not a cspine cache")
    snap.assert_unchanged(allow_new=False)

    cache = tmp_path / "cache"
    res = CliRunner().invoke(app, ["ct", "prepare", "--data", str(rsna), "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert "summary.json" in json.loads((cache / MANIFEST).read_text())["files"]
    (cache / "summary.json").write_text('{"edited": true}\n')
    snap = snapshot(cache)
    res = CliRunner().invoke(app, ["ct", "prepare", "--data", str(rsna), "--cache", str(cache)])
    _refused(res, cache / "summary.json", "not written by cspine ct prepare")
    snap.assert_unchanged(allow_new=False)


def test_prepare_adopts_a_cache_of_an_earlier_version(rsna: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    res = CliRunner().invoke(app, ["ct", "prepare", "--data", str(rsna), "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    (cache / MANIFEST).unlink()  # as written before manifests existed
    res = CliRunner().invoke(app, ["ct", "prepare", "--data", str(rsna), "--cache", str(cache)])
    assert res.exit_code == 0, res.output
    assert (cache / MANIFEST).is_file()


def _eval_inputs(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    uids = [f"1.2.{i}" for i in range(8)]
    labels = pd.DataFrame({STUDY_UID: uids, **{v: rng.integers(0, 2, 8) for v in VERTEBRAE}})
    labels[PATIENT_OVERALL] = labels[list(VERTEBRAE)].max(axis=1)
    labels.loc[0, PATIENT_OVERALL], labels.loc[1, PATIENT_OVERALL] = 0, 1
    labels.loc[0, list(VERTEBRAE)], labels.loc[1, "C2"] = 0, 1
    pred = labels.copy()
    pred[[*VERTEBRAE, PATIENT_OVERALL]] = rng.uniform(0.05, 0.95, (8, 8))
    folder.mkdir(parents=True)
    labels.to_csv(folder / "labels.csv", index=False)
    pred.to_csv(folder / "predictions.csv", index=False)
    return folder / "predictions.csv", folder / "labels.csv"


def test_ct_evaluate_refuses_a_foreign_report_and_a_file_as_output(tmp_path: Path, snapshot) -> None:
    pred, labels = _eval_inputs(tmp_path / "in")
    out = tmp_path / "eval"
    out.mkdir()
    (out / "report.md").write_text("# my review\n")
    snap = snapshot(tmp_path)
    base = ["ct", "evaluate", "--pred", str(pred), "--labels", str(labels)]
    res = CliRunner().invoke(app, [*base, "--out", str(out)])
    _refused(res, out / "report.md", "not written by cspine ct evaluate")
    res = CliRunner().invoke(app, [*base, "--out", str(labels)])
    _refused(res, labels, "is a file")
    snap.assert_unchanged(allow_new=False)
    res = CliRunner().invoke(app, [*base, "--out", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert "my review" not in (out / "report.md").read_text()
    assert {"metrics.json", "report.md", "roc.png"} <= set(json.loads((out / MANIFEST).read_text())["files"])


def test_synth_never_replaces_a_real_train_csv(tmp_path: Path, snapshot) -> None:
    root = tmp_path / "rsna"
    root.mkdir()
    (root / "train.csv").write_text("StudyInstanceUID,patient_overall\nreal,1\n")
    snap = snapshot(root)
    res = CliRunner().invoke(app, ["synth", "ct", "--out", str(root), "--studies", "1", "--size", "128"])
    _refused(res, root / "train.csv", "not written by cspine synth ct")
    snap.assert_unchanged(allow_new=False)  # no study written either

    xr = tmp_path / "xr"
    xr.mkdir()
    (xr / "labels.csv").write_text("path,label\nmine.png,normal\n")
    snap = snapshot(xr)
    res = CliRunner().invoke(app, ["synth", "xray", "--out", str(xr), "--images", "1"])
    _refused(res, xr / "labels.csv", "not written by cspine synth xray")
    snap.assert_unchanged(allow_new=False)


@pytest.mark.parametrize("args", [
    ["ct", "train", "--data", "{rsna}", "--out", "{target}", "--preset", "fast", "--epochs", "1"],
    ["demo", "--quick", "--out", "{target}"],
    ["serve", "--results", "{rsna}", "--work", "{target}/sub"],
])
def test_commands_that_make_their_folder_later_refuse_a_file_at_once(rsna: Path, tmp_path: Path, snapshot,
                                                                     args: list[str]) -> None:
    target = tmp_path / "not_a_folder"
    target.write_text("x")
    snap = snapshot(tmp_path)
    res = CliRunner().invoke(app, [a.format(rsna=rsna, target=target) for a in args])
    assert isinstance(res.exception, OutputFolderError), res.output
    assert str(target) in str(res.exception) and "is a file" in str(res.exception)
    snap.assert_unchanged(allow_new=False)
