"""A tiny phantom study written as DICOM, with its true label map, for the DICOM output tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest


@dataclass
class PhantomStudy:
    folder: Path
    labels: np.ndarray  # canonical (Z, Y, X), 1..7 = C1..C7, 8.. thoracic
    paths: tuple[Path, ...]  # file of canonical slice k
    flip_x: bool  # stored columns mirrored (feet first)

    def expected_frame(self, k: int) -> np.ndarray:
        """The label map on the stored pixel grid of canonical slice ``k``'s file."""
        return self.labels[k][:, ::-1] if self.flip_x else self.labels[k]


@pytest.fixture(scope="module", params=[False, True], ids=["head-first", "feet-first"])
def phantom_study(request, tmp_path_factory) -> PhantomStudy:
    from cspine.synth.ct_writer import SeriesOptions, write_ct_series
    from cspine.synth.phantom import make_phantom

    feet_first = request.param
    p = make_phantom(3, size=48, n_slices=32, noise=False)
    folder = tmp_path_factory.mktemp("phantom") / "study"
    opts = SeriesOptions(encoding="explicit", reverse_numbering=feet_first, feet_first=feet_first)
    written = write_ct_series(p, folder, opts, uid_seed="outputs-test")
    return PhantomStudy(folder, np.asarray(p.labels), written.paths, written.flip_x)
