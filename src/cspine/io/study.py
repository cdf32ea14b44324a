"""A CT study as input: where the studies of a command line are, how one is loaded into the canonical
orientation, whether it can be a cervical spine CT, and what it is called.

Study identity: a DICOM study is named by its StudyInstanceUID tag; when the tag is absent or empty
(anonymised files), by its folder name, which is the UID in the RSNA layout
(``test_images/<UID>/<N>.dcm``). A NIfTI CT is named by the tag-like ``StudyInstanceUID`` of its
metadata if a reader set one, else by its file name without ``.nii``/``.nii.gz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cspine.errors import CspineError
from cspine.io.archives import UNPACK_HINT, is_archive
from cspine.io.orient import to_canonical
from cspine.io.volume import Volume
from cspine.labels import TEST_CSV, TEST_IMAGES

NIFTI_SUFFIXES = (".nii", ".nii.gz")

#: Fewest axial slices a study must have: no cervical spine CT has fewer (10 slices of 5 mm cover
#: 50 mm, less than half of C1..C7); fewer means a scout, a partial series or a wrong folder.
MIN_SLICES = 10


class StudyInputError(CspineError):
    """A study cannot be used as input (not found, empty folder, too few slices, not a CT, unnamed)."""


def is_nifti(path: str | Path) -> bool:
    """Whether ``path`` names a NIfTI file (``.nii`` or ``.nii.gz``, any case)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: str | Path) -> str:
    """The file name of a NIfTI file without ``.nii``/``.nii.gz`` (``case_7.nii.gz`` -> ``case_7``)."""
    name = Path(path).name
    for suffix in sorted(NIFTI_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


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
        StudyInputError: the path does not exist, or a folder holds no files.
        CspineError: nothing readable (:class:`~cspine.errors.DicomError` and its subclasses for DICOM
            problems, :class:`~cspine.errors.NiftiError` for NIfTI ones).
    """
    if isinstance(path, (str, Path)):
        p = Path(path)
        if not p.exists():
            raise StudyInputError("not found; give a DICOM study folder or a .nii/.nii.gz CT", p)
        if is_archive(p):
            raise StudyInputError(f"{UNPACK_HINT} (a DICOM study folder or a .nii/.nii.gz CT)", p)
        if p.is_file() and is_nifti(p):
            from cspine.io.nifti import read_nifti_volume  # lazy: nibabel only when needed

            return to_canonical(read_nifti_volume(p), inplace=True)
        if p.is_dir() and not any(f.is_file() for f in p.rglob("*")):
            raise StudyInputError("the folder is empty (it holds no files); expected the DICOM files of "
                                  "one CT study", p)
    from cspine.io.dicom import read_series

    dicom_options.setdefault("on_gap", "resample")
    dicom_options.setdefault("on_tilt", "resample")
    return to_canonical(read_series(path, workers=workers, **dicom_options), inplace=True)


def check_ct_study(volume: Volume, where: str | Path | None = None) -> None:
    """Refuse a volume that cannot be a cervical spine CT: another modality, or fewer than
    :data:`MIN_SLICES` axial slices.

    Raises:
        StudyInputError: naming ``where`` (the input path) when given.
    """
    modality = str(volume.meta.get("Modality") or "CT").upper()
    if modality != "CT":
        raise StudyInputError(f"the series is {modality}, not CT; cspine's CT pipeline needs an axial CT "
                              "of the cervical spine", where)
    if volume.shape[0] < MIN_SLICES:
        raise StudyInputError(
            f"the study has {volume.shape[0]} axial slices; a cervical spine CT needs at least {MIN_SLICES} "
            "(is this a scout, a partial series or the wrong folder?)", where)


def study_uid(volume: Volume, path: str | Path | None) -> str:
    """The study's name (see the module docstring).

    Raises:
        StudyInputError: an in-memory volume (``path`` is ``None``) without a StudyInstanceUID.
    """
    uid = str(volume.study_uid or "").strip()
    if uid:
        return uid
    if path is None:
        raise StudyInputError("an in-memory volume needs meta['StudyInstanceUID'] to be named")
    path = Path(path)
    return nifti_stem(path) if path.is_file() and is_nifti(path) else path.name


def _is_study_container(folder: Path) -> bool:
    """A folder holding only sub-folders (no files): a folder of study folders."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return bool(entries) and all(p.is_dir() for p in entries)


def expand_inputs(inputs: Sequence[str | Path]) -> tuple[list[Path], Path | None]:
    """Turn command-line inputs into study paths, and find a test.csv.

    * an RSNA root (holding ``test_images/``): each folder of ``test_images/``, and its ``test.csv``;
    * a folder of study folders (e.g. ``train_images/``): each sub-folder;
    * a DICOM study folder or a NIfTI file: itself.

    Returns:
        The study paths (each once, in input order, also when a symlink names one again) and the first
        RSNA root's test.csv (or ``None``).

    Raises:
        StudyInputError: an input that does not exist.
    """
    studies: list[Path] = []
    test_csv: Path | None = None
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise StudyInputError("input not found", path)
        if path.is_dir() and (path / TEST_IMAGES).is_dir():
            studies += sorted(p for p in (path / TEST_IMAGES).iterdir() if p.is_dir())
            if (path / TEST_CSV).is_file() and test_csv is None:
                test_csv = path / TEST_CSV
        elif path.is_dir() and _is_study_container(path):
            studies += sorted(path.iterdir())
        else:
            studies.append(path)
    # each study once, also when named twice (a symlink, a relative and an absolute path): the first name
    unique: dict[Path, Path] = {}
    for study in studies:
        unique.setdefault(study.resolve(), study)
    return list(unique.values()), test_csv
