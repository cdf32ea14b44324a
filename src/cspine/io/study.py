"""Loading a CT study from any supported source into the canonical orientation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cspine.errors import CspineError
from cspine.io.orient import to_canonical
from cspine.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def load_study(path: str | Path | Sequence[str | Path], *, workers: int | None = None,
               **dicom_options: Any) -> Volume:
    """Load a CT study as a canonical :class:`Volume` (axis 0 superior -> inferior, axis 1 anterior ->
    posterior, axis 2 right -> left).

    Args:
        path: a DICOM study folder (searched recursively), a list of DICOM files, or a NIfTI CT
            (``.nii`` / ``.nii.gz``).
        workers: decoding processes for DICOM (default: the cores available).
        **dicom_options: passed to :func:`cspine.io.dicom.read_series` (``backend``, ``on_gap``,
            ``on_tilt``, ``modality``). Unlike ``read_series``, which refuses them by default, the
            pipeline's loader repairs a missing slice and gantry tilt by resampling onto a uniform,
            orthogonal grid (``on_gap="resample"``, ``on_tilt="resample"``) and records a warning in
            ``volume.meta["warnings"]``: real studies have both, and one of them must not cost a
            patient's result. Pass ``on_gap="error"`` / ``on_tilt="error"`` to refuse them instead.

    Raises:
        CspineError: the path does not exist, a folder is empty or holds nothing readable
            (:class:`~cspine.errors.DicomError` and its subclasses for DICOM problems).
    """
    if isinstance(path, (str, Path)):
        p = Path(path)
        if not p.exists():
            raise CspineError("no such file or folder; give a DICOM study folder or a .nii/.nii.gz CT", p)
        if p.is_file() and is_nifti(p):
            from cspine.io.nifti import read_nifti_volume  # lazy: nibabel only when needed

            return to_canonical(read_nifti_volume(p), inplace=True)
        if p.is_dir() and not any(p.iterdir()):
            raise CspineError("the folder is empty; expected the DICOM files of one study", p)
    from cspine.io.dicom import read_series

    dicom_options.setdefault("on_gap", "resample")
    dicom_options.setdefault("on_tilt", "resample")
    return to_canonical(read_series(path, workers=workers, **dicom_options), inplace=True)
