"""Fracture boxes on a gantry-tilted series land where their pixels went: tilt correction shifts each slice
by its own offset onto an enlarged grid, and a box given in stored pixels must follow that shift (read
directly and from the prepared cache)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from _robust_dicom import write_series

from cspine.ct.training_studies import box_regions_of
from cspine.io.study import load_study
from cspine.preprocess.cache import StudyCache, prepare_study

UID = "1.2.3.99"
N, ROWS, COLS = 8, 20, 12
MARK = 2000


def _tilted(folder: Path) -> None:
    """Slices 2 mm apart, each origin 1 mm (2 rows) further along the row direction: a sheared stack.
    Stored rows 3..6, columns 2..5 of every slice hold a bright block (the 'fracture')."""
    hu = np.full((N, ROWS, COLS), 40, np.int16)
    hu[:, 3:7, 2:6] = MARK
    write_series(folder, hu, [(0.0, 1.0 * k, 2.0 * k) for k in range(N)])


def _check(vol) -> None:
    boxes = pd.DataFrame([{"StudyInstanceUID": UID, "x": 2.0, "y": 3.0, "width": 4.0, "height": 4.0,
                           "slice_number": n} for n in range(1, N + 1)])
    regions = box_regions_of(vol, boxes, UID)
    assert regions is not None and len(regions) == N
    shifts = set()
    for z, ((y0, y1, x0, x1),) in regions.items():
        marked = np.argwhere(vol.hu[z] == MARK)
        assert (y0, y1, x0, x1) == (marked[:, 0].min(), marked[:, 0].max() + 1, marked[:, 1].min(),
                                    marked[:, 1].max() + 1), z
        shifts.add(y0)
    assert len(shifts) == N  # every slice has its own offset: one shared mapping would miss most


def test_boxes_follow_each_slices_tilt_offset(tmp_path: Path) -> None:
    _tilted(tmp_path / "s")
    vol = load_study(tmp_path / "s", workers=1)
    assert vol.meta["gantry_tilt_degrees"] > 20 and vol.shape[1] > ROWS  # tilted, grid enlarged
    _check(vol)


def test_boxes_follow_the_tilt_offset_through_the_cache(tmp_path: Path) -> None:
    _tilted(tmp_path / "s")
    result = prepare_study(UID, tmp_path / "s", None, tmp_path / "cache" / UID)
    assert result.status == "done", result.reason
    _check(StudyCache(tmp_path / "cache").load(UID))
