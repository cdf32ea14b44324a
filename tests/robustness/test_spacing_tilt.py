"""Uneven slice spacing keeps every acquired slice; gantry-tilt correction crops nothing; the CLI says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _robust_dicom import stored_pixel_world, write_series
from typer.testing import CliRunner

from _rsna_fixture import write_rsna_layout
from cspine.cli.main import app
from cspine.errors import SeriesGeometryError
from cspine.io.dicom import read_series
from cspine.io.study import load_study

#: A 5 mm series with a 1 mm run of 15 slices in it (z in mm), as a scanner writes for a region of interest.
UNEVEN_Z = [*range(0, 51, 5), *range(51, 66), *range(70, 101, 5)]


def _uneven_series(folder: Path) -> list[Path]:
    """Each slice holds HU = 10 x z, so an output slice tells which position it came from."""
    hu = np.stack([np.full((6, 5), 10 * z, np.int16) for z in UNEVEN_Z])
    return write_series(folder, hu, [(0.0, 0.0, float(z)) for z in UNEVEN_Z])


def test_uneven_spacing_resampled_to_the_finest_step_keeps_every_acquired_slice(tmp_path: Path) -> None:
    _uneven_series(tmp_path / "s")
    vol = load_study(tmp_path / "s", workers=1)  # the pipeline's loader resamples
    assert vol.spacing[0] == pytest.approx(1.0)  # the median step (5 mm) would keep 3 of the 15 1 mm slices
    assert vol.shape[0] == 101
    for z in UNEVEN_Z:  # each acquired slice lands, unblended, on the output slice at its position
        k = int(round(vol.world_to_index([0.0, 0.0, float(z)])[0]))
        assert np.all(vol.hu[k] == 10 * z), z
        assert vol.slices[k].path is not None and vol.slices[k].path.endswith(f"/{UNEVEN_Z.index(z) + 1}.dcm")
    k = int(round(vol.world_to_index([0.0, 0.0, 2.0])[0]))  # between two 5 mm slices: interpolated
    assert np.all(vol.hu[k] == 20) and vol.slices[k].path is None
    (warning,) = [w for w in vol.meta["warnings"] if "resampled" in w]
    assert "non-uniform slice spacing: steps from 1.000 to 5.000 mm" in warning
    assert f"resampled the {len(UNEVEN_Z)} acquired slices onto 101 slices every 1.000 mm, the finest step" \
        in warning


def test_uneven_spacing_refused_by_default_names_the_finest_step(tmp_path: Path) -> None:
    _uneven_series(tmp_path / "s")
    with pytest.raises(SeriesGeometryError, match=r"non-uniform slice spacing.*uniform 1\.000 mm grid"):
        read_series(tmp_path / "s", workers=1)


def test_a_lone_near_duplicate_position_does_not_set_the_step(tmp_path: Path) -> None:
    z = [0, 5, 10, 10.2, 15, 20]  # one stray slice 0.2 mm from its neighbour
    hu = np.stack([np.full((4, 4), 10 * k, np.int16) for k in range(len(z))])
    write_series(tmp_path / "s", hu, [(0.0, 0.0, float(v)) for v in z])
    vol = load_study(tmp_path / "s", workers=1)
    assert vol.spacing[0] == pytest.approx(5.0) and vol.shape[0] == 5


def _tilted_series(folder: Path, n: int = 8, rows: int = 20, cols: int = 12) -> list[Path]:
    """Slices 2 mm apart whose origins move 1 mm (2 rows of 0.5 mm) along y per slice: a sheared stack.
    The last (most sheared) slice has a bright marker in its first and its last row."""
    hu = np.full((n, rows, cols), 40, np.int16)
    hu[-1, 0, 5] = hu[-1, rows - 1, 6] = 2000
    hu[0, 0, 3] = hu[0, rows - 1, 4] = 1500  # and the least sheared one too
    return write_series(folder, hu, [(0.0, 1.0 * k, 2.0 * k) for k in range(n)])


def test_tilt_correction_enlarges_the_grid_and_keeps_every_acquired_row(tmp_path: Path) -> None:
    paths = _tilted_series(tmp_path / "s")
    vol = read_series(tmp_path / "s", workers=1, on_tilt="resample")
    assert vol.meta["gantry_tilt_degrees"] == pytest.approx(26.57, abs=0.01)  # atan(1 mm / 2 mm)
    assert vol.shape == (8, 20 + 14, 12)  # 7 steps x 2 rows of shear added, no column
    assert vol.meta["tilt_padding_pixels"] == [[0, 14], [0, 0]]
    a = vol.affine[:3, :3]
    np.testing.assert_allclose(a.T @ a, np.diag(np.diag(a.T @ a)), atol=1e-9)
    for path, k, markers in ((paths[-1], 7, ((0, 5, 2000), (19, 6, 2000))),
                             (paths[0], 0, ((0, 3, 1500), (19, 4, 1500)))):
        for row, col, value in markers:
            index = vol.world_to_index(stored_pixel_world(path, row, col))
            assert np.all(index >= -1e-6) and np.all(index <= np.array(vol.shape) - 1 + 1e-6), index
            z, y, x = np.rint(index).astype(int)
            assert z == k and vol.hu[z, y, x] == value
    assert int((vol.hu == 2000).sum()) == 2 and int((vol.hu == 1500).sum()) == 2
    assert any("enlarged from 20x12 to 34x12 pixels" in w for w in vol.meta["warnings"])


def test_tilted_shared_series_still_reads_through_the_pipeline_loader(shared_data: Path) -> None:
    folder = shared_data / "dicom-edge-cases" / "gantrytilting" / "001"
    vol = load_study(folder, workers=1)
    assert vol.shape == (4, 521, 512)  # 512 rows + 9 rows of shear: nothing cropped
    assert vol.meta["gantry_tilt_degrees"] == pytest.approx(14.0, abs=0.1)
    assert any("gantry tilt" in w and "enlarged" in w for w in vol.meta["warnings"])
    raw = read_series(folder, workers=1, on_tilt="resample")
    # every stored row of every slice still has its tissue: no slice lost its edge rows
    for k in range(raw.shape[0]):
        off = int(np.ceil(raw.slices[k].pixel_offset[0]))
        assert (raw.hu[k, off + 5] > -1000).any() and (raw.hu[k, off + 505] > -1000).any()


# --- through the CLI ----------------------------------------------------------------------------------


def _rsna_root(tmp_path: Path) -> tuple[Path, str]:
    info = write_rsna_layout(tmp_path / "root", n_train=1, n_test=0, n_masks=0)
    return info.root, info.train_uids[0]


def test_cli_prepare_caches_an_uneven_study_and_records_what_it_did(tmp_path: Path, snapshot) -> None:
    root, uid = _rsna_root(tmp_path)
    study = root / "train_images" / uid
    for f in study.iterdir():
        f.unlink()
    _uneven_series(study)
    snap = snapshot(root)
    result = CliRunner().invoke(app, ["ct", "prepare", "--data", str(root), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    geo = json.loads((tmp_path / "c" / uid / "geometry.json").read_text())
    assert geo["shape"][0] == 101 and geo["spacing"][0] == pytest.approx(1.0)
    assert any("the finest step the series acquired" in w for w in geo["meta"]["warnings"])
    snap.assert_unchanged(allow_new=False)


def test_cli_prepare_names_the_files_of_a_stack_that_is_not_one(tmp_path: Path, snapshot) -> None:
    root, uid = _rsna_root(tmp_path)
    study = root / "train_images" / uid
    for f in study.iterdir():
        f.unlink()
    hu = np.zeros((4, 6, 5), np.int16)
    write_series(study, hu, [(0.0, 0.0, 0.0), (0.0, 0.0, 2.0), (30.0, 0.0, 4.0), (0.0, 0.0, 6.0)])
    snap = snapshot(root)
    result = CliRunner().invoke(app, ["ct", "prepare", "--data", str(root), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert uid in out and "do not lie on a line" in out and str(study) in out
    snap.assert_unchanged(allow_new=False)
    assert not (tmp_path / "c" / uid / "done.json").exists()
