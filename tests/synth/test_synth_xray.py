"""Lateral radiographs rendered from phantoms, and the radiograph dataset layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cspine.labels import XRAY_CLASSES
from cspine.synth.xray import generate_xray_dataset, render_radiograph


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


def test_dataset_layout(tmp_path: Path) -> None:
    root = generate_xray_dataset(tmp_path / "x", 5, seed=1, progress=False)
    table = pd.read_csv(root / "labels.csv")
    assert list(table.columns) == ["path", "label", "patient_id"] and len(table) == 5
    for row in table.itertuples():
        assert row.path.split("/")[0] == row.label and row.label in XRAY_CLASSES
        assert Image.open(root / row.path).mode == "L"
