"""Lateral radiographs rendered from phantoms: each class shows its radiographic sign; the dataset layout."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cspine.labels import LABEL_OF, XRAY_CLASSES
from cspine.synth.anatomy import LEVELS
from cspine.synth.xray import _patient as _render_patient
from cspine.synth.xray import generate_xray_dataset, render_radiograph

# Phantoms are shared between the tests below (read only): each takes ~0.5 s to render.
_patient = cache(_render_patient)


@pytest.mark.parametrize("label", XRAY_CLASSES)
def test_render_each_class(label: str) -> None:
    img = render_radiograph(4, label)
    assert img.dtype == np.uint8 and img.ndim == 2 and 300 <= img.shape[0] <= 600
    assert img.std() > 20  # a picture, not a flat field
    assert np.array_equal(img, render_radiograph(4, label))


def test_classes_differ_in_the_spine() -> None:
    # Same patient (seed): a fracture changes a vertebra locally, a dislocation moves the upper spine.
    normal = render_radiograph(9, "normal", size=320).astype(float)
    fracture = render_radiograph(9, "fracture", size=320).astype(float)
    dislocation = render_radiograph(9, "dislocation", size=320).astype(float)
    assert fracture.shape == normal.shape == dislocation.shape
    local = np.abs(fracture - normal) > 12
    assert 0.001 < local.mean() < 0.05
    rows, cols = np.nonzero(local)
    assert np.ptp(rows) < 0.3 * normal.shape[0]  # one level, not the whole spine
    assert np.abs(dislocation - normal).mean() > 3.0
    with pytest.raises(ValueError, match="label"):
        render_radiograph(0, "sprain")


def _centre_y_mm(p, level: str) -> float:  # noqa: ANN001 - a Phantom
    _, y, _ = np.nonzero(p.labels == LABEL_OF[level])
    return float(y.mean() * p.spacing[1])


@pytest.mark.parametrize("seed", [0])
def test_dislocation_translates_the_level_over_the_one_below(seed: int) -> None:
    normal, disl = _patient(seed, "normal"), _patient(seed, "dislocation")
    level, shift, _ = disl.meta["dislocation"]
    below = LEVELS[LEVELS.index(level) + 1]
    step = (_centre_y_mm(disl, level) - _centre_y_mm(disl, below)) - (
        _centre_y_mm(normal, level) - _centre_y_mm(normal, below)
    )
    assert 3.0 <= abs(shift) <= 9.0
    assert abs(step) >= 3.0 and np.sign(step) == np.sign(shift)  # listhesis in the drawn direction
    # no fracture, and the lower spine stays where it was
    assert not disl.fractures and not any(disl.fractured.values()) and not disl.fracture_mask.any()
    assert abs(_centre_y_mm(disl, "C7") - _centre_y_mm(normal, "C7")) < 0.5 or level == "C6"


def _dens_tip_y_mm(p) -> float:  # noqa: ANN001 - a Phantom
    z, y, _ = np.nonzero(p.labels == LABEL_OF["C2"])
    top = z * p.spacing[0] < z.min() * p.spacing[0] + 8.0
    return float(y[top].mean() * p.spacing[1])


@pytest.mark.parametrize("seed", [1, 6, 17])  # two wedges; a teardrop; a dens fracture
def test_fracture_shows_height_loss_or_a_displaced_fragment(seed: int) -> None:
    normal, frac = _patient(seed, "normal"), _patient(seed, "fracture")
    assert frac.fractures and frac.meta["dislocation"] is None
    main = frac.fractures[0]
    if main.kind == "wedge":  # focal kyphosis: the level above tips forwards (y runs anterior -> posterior)
        above = LEVELS[LEVELS.index(main.level) - 1]
        step = (_centre_y_mm(frac, above) - _centre_y_mm(frac, main.level)) - (
            _centre_y_mm(normal, above) - _centre_y_mm(normal, main.level)
        )
        assert frac.meta["kyphosis_deg"] > 3.0 and step < -1.0
    for f in frac.fractures:
        if f.kind == "wedge":  # loss of anterior body height: the vertebra loses bone
            assert 0.2 <= f.wedge <= 0.6
            lost = 1 - (frac.labels == LABEL_OF[f.level]).sum() / (normal.labels == LABEL_OF[f.level]).sum()
            assert lost > 0.03
        else:  # teardrop / dens: a fragment moved >= 2 mm in the sagittal plane (what a lateral view shows)
            assert abs(f.shift[1]) >= 2.0 and abs(f.shift[2]) == 0.0
        if f.site == "dens":  # the dens (not the body below it) slid forwards or backwards
            moved = _dens_tip_y_mm(frac) - _dens_tip_y_mm(normal)
            assert abs(moved) > 1.5 and np.sign(moved) == np.sign(f.shift[1])
    assert frac.fracture_mask.any()


def test_swelling_narrows_the_airway_of_an_injured_patient() -> None:
    swollen, dry = _patient(0, "dislocation"), _patient(0, "dislocation", swelling=False)
    assert swollen.meta["swelling"] and not dry.meta["swelling"]  # seed 0 draws a haematoma
    assert np.array_equal(swollen.labels, dry.labels)  # the same bones: no fracture comes with it
    displaced_air = int((dry.hu < -500).sum()) - int((swollen.hu < -500).sum())
    assert displaced_air > 50  # soft tissue where the airway was


def test_dataset_layout(tmp_path: Path) -> None:
    root = generate_xray_dataset(tmp_path / "x", 5, seed=1, progress=False)
    table = pd.read_csv(root / "labels.csv")
    assert list(table.columns) == ["path", "label", "patient_id"] and len(table) == 5
    for row in table.itertuples():
        assert row.path.split("/")[0] == row.label and row.label in XRAY_CLASSES
        assert Image.open(root / row.path).mode == "L"
