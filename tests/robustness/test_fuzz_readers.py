"""Fuzzing the DICOM and NIfTI entry points with truncated, bit-flipped and tag-stripped copies of real files.

Every case either reads or fails with a :class:`~cspine.errors.CspineError` whose message names the file or
its folder -- never another exception. Cases are drawn from a fixed seed (each case has its own generator,
so a failure names a case that reruns alone). Files are kept small so a few hundred cases run in seconds:
the real series' slices are cropped to 64 x 64 and re-encoded (JPEG 2000 lossless, with their real Siemens
headers); the codec files of ../shared/data/ct-codecs are fuzzed as they are.
"""

from __future__ import annotations

import gzip
import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from cspine.errors import CspineError
from cspine.io.dicom import read_series, read_slice_hu
from cspine.io.nifti import load_mask_on_grid, read_label_file, read_nifti_volume
from cspine.io.study import load_study
from cspine.io.volume import volume_from_arrays

SEED = 20240515
CROP = 64


def _mutate(data: bytes, rng: np.random.Generator, header_bytes: int) -> tuple[bytes, str]:
    """A truncation or a few byte flips, biased towards the header where parsers branch most."""
    n = len(data)
    if rng.random() < 0.4:
        cut = int(rng.integers(0, min(n, header_bytes))) if rng.random() < 0.5 else int(rng.integers(0, n))
        return data[:cut], f"truncated at {cut}"
    buf = bytearray(data)
    k = int(rng.integers(1, 9))
    top = min(n, header_bytes) if rng.random() < 0.6 else n
    where = rng.integers(0, top, size=k)
    for i in where:
        buf[int(i)] ^= int(rng.integers(1, 256))
    return bytes(buf), f"flipped bytes at {sorted(int(i) for i in where)}"


def _delete_tag(path: Path, rng: np.random.Generator) -> str:
    """Delete one element (top level, file meta, or inside a functional-group item) and rewrite the file."""
    ds = pydicom.dcmread(path, force=True)
    places = [ds]
    if getattr(ds, "file_meta", None) is not None and len(ds.file_meta) and rng.random() < 0.15:
        places = [ds.file_meta]
    for seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        if seq in ds and rng.random() < 0.5:
            item = ds[seq].value[int(rng.integers(0, len(ds[seq].value)))]
            places = [e.value[0] for e in item if e.VR == "SQ" and len(e.value)] or places
    place = places[int(rng.integers(0, len(places)))]
    tags = [e.tag for e in place]
    tag = tags[int(rng.integers(0, len(tags)))]
    del place[tag]
    try:
        ds.save_as(path, enforce_file_format=False)
    except Exception:  # noqa: BLE001 - the writer needs what was deleted: truncate instead
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
        return f"deleted {tag} (unwritable: truncated instead)"
    return f"deleted {tag}"


def _check(call: Callable[[], object], names: tuple[str, ...], case: str, failures: list[str]) -> str:
    try:
        call()
    except CspineError as exc:
        if not any(name in str(exc) for name in names):
            failures.append(f"{case}: message does not name {names[0]}: {exc}")
        return "error"
    except Exception:  # noqa: BLE001 - the bug this test exists to find
        failures.append(f"{case}: unhandled {traceback.format_exc(limit=-3)}")
        return "bug"
    return "read"


# --- sources ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_series(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three consecutive real slices, cropped to 64 x 64 and re-encoded JPEG 2000 lossless (real headers)."""
    from pydicom.uid import JPEG2000Lossless

    out = tmp_path_factory.mktemp("small_series")
    paths = []
    files = sorted((shared_data / "real-ct-series" / "dicom").iterdir())[:3]
    for i, src in enumerate(files):
        ds = pydicom.dcmread(src)
        arr = ds.pixel_array[200:200 + CROP, 220:220 + CROP].copy()
        ds.Rows, ds.Columns = CROP, CROP
        ds.compress(JPEG2000Lossless, arr)
        paths.append(out / f"{i}.dcm")
        ds.save_as(paths[-1])
    return paths


@pytest.fixture(scope="module")
def small_enhanced(small_series: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small series as one Legacy Converted Enhanced CT file (per-frame functional groups)."""
    highdicom = pytest.importorskip("highdicom")
    from pydicom.uid import generate_uid

    dss = []
    study, series = generate_uid(), generate_uid()
    for p in small_series:
        ds = pydicom.dcmread(p)
        ds.decompress()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber = study, series, 1
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        dss.append(ds)
    enhanced = highdicom.legacy.LegacyConvertedEnhancedCTImage(dss, generate_uid(), 2, generate_uid(), 1)
    path = tmp_path_factory.mktemp("small_enhanced") / "enhanced.dcm"
    enhanced.save_as(path)
    return path


def _codec_files(shared_data: Path) -> list[Path]:
    return sorted(p for p in (shared_data / "ct-codecs").iterdir() if p.is_file())


# --- the fuzz cases -----------------------------------------------------------------------------------


def _series_case(i: int, sources: list[Path], folder: Path) -> tuple[Path, str]:
    rng = np.random.default_rng([SEED, i])
    folder.mkdir(parents=True)
    for p in sources:
        shutil.copy(p, folder / p.name)
    victims = rng.choice(len(sources), size=min(len(sources), 1 + int(rng.random() < 0.3)), replace=False)
    what = []
    for v in victims:
        target = folder / sources[int(v)].name
        if rng.random() < 0.3:
            what.append(f"{target.name}: {_delete_tag(target, rng)}")
        else:
            data, how = _mutate(target.read_bytes(), rng, 4096)
            target.write_bytes(data)
            what.append(f"{target.name}: {how}")
    return folder, "; ".join(what)


@pytest.mark.parametrize("kind", ["classic", "enhanced"])
def test_fuzz_dicom_series_folders(kind: str, small_series: list[Path], request, tmp_path: Path) -> None:
    sources = small_series if kind == "classic" else [request.getfixturevalue("small_enhanced")]
    n_cases = 120 if kind == "classic" else 60
    failures: list[str] = []
    outcomes = {"read": 0, "error": 0, "bug": 0}
    for i in range(n_cases):
        folder, how = _series_case(i, sources, tmp_path / f"case{i}")
        case = f"{kind} case {i} ({how})"
        backend = ("auto", "pydicom", "gdcm")[i % 3]
        if i % 2:
            outcome = _check(lambda f=folder, b=backend: load_study(f, workers=1, backend=b),
                             (str(folder),), case, failures)
        else:
            outcome = _check(lambda f=folder, b=backend: read_series(f, workers=1, backend=b,
                                                                     on_gap="resample", on_tilt="resample"),
                             (str(folder),), case, failures)
        outcomes[outcome] += 1
    assert not failures, f"{len(failures)} of {n_cases} cases failed:\n" + "\n".join(failures[:10])
    assert outcomes["error"] > n_cases // 4 and outcomes["read"] > 0, outcomes  # the mutations bite


def test_fuzz_dicom_codec_slices(shared_data: Path, tmp_path: Path) -> None:
    """Every transfer syntax of ct-codecs, mutated, through the one-slice reader."""
    files = _codec_files(shared_data)
    failures: list[str] = []
    n_cases = 4 * len(files)
    for i in range(n_cases):
        rng = np.random.default_rng([SEED, 1, i])
        src = files[i % len(files)]
        target = tmp_path / f"{i}_{src.name}"
        shutil.copy(src, target)
        if rng.random() < 0.25:
            how = _delete_tag(target, rng)
        else:
            data, how = _mutate(target.read_bytes(), rng, 2048)
            target.write_bytes(data)
        case = f"codec case {i} {src.name} ({how})"
        _check(lambda t=target: read_slice_hu(t), (target.name,), case, failures)
        target.unlink()
    assert not failures, f"{len(failures)} of {n_cases} cases failed:\n" + "\n".join(failures[:10])


NIFTI_SOURCES = ["vertebra-masks/abdomen_vertebrae.nii.gz",
                 "vertebra-masks/verse004_vertebrae_oblique.nii.gz"]


@pytest.mark.parametrize("compressed", [False, True], ids=["nii", "nii.gz"])
def test_fuzz_nifti_readers(compressed: bool, shared_data: Path, tmp_path: Path) -> None:
    """Masks and images: header flips (the 348-byte header decides everything), truncations, gzip damage."""
    sources = []
    for name in NIFTI_SOURCES:
        raw = gzip.decompress((shared_data / name).read_bytes())
        sources.append(gzip.compress(raw, mtime=0) if compressed else raw)
    grid = volume_from_arrays(np.zeros((8, 9, 10), np.int16), spacing=(3.0, 3.0, 3.0))
    failures: list[str] = []
    n_cases = 60
    for i in range(n_cases):
        rng = np.random.default_rng([SEED, 2, int(compressed), i])
        data, how = _mutate(sources[i % len(sources)], rng, 352 if not compressed else 64)
        path = tmp_path / f"m{i}.nii{'.gz' if compressed else ''}"
        path.write_bytes(data)
        case = f"nifti case {i} {NIFTI_SOURCES[i % 2]} ({how})"
        _check(lambda p=path: read_label_file(p), (path.name,), case, failures)
        _check(lambda p=path: load_mask_on_grid(p, grid), (path.name,), case, failures)
        _check(lambda p=path: read_nifti_volume(p), (path.name,), case, failures)
        _check(lambda p=path: load_study(p), (path.name,), case, failures)
        path.unlink()
    assert not failures, f"{len(failures)} of {n_cases} cases failed:\n" + "\n".join(failures[:10])


def test_fuzz_cases_are_reproducible(small_series: list[Path], tmp_path: Path) -> None:
    a, how_a = _series_case(7, small_series, tmp_path / "a")
    b, how_b = _series_case(7, small_series, tmp_path / "b")
    assert how_a == how_b
    assert [p.read_bytes() for p in sorted(a.iterdir())] == [p.read_bytes() for p in sorted(b.iterdir())]
