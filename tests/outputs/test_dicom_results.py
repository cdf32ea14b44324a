"""DICOM SEG + TID 1500 SR, read back: segment pixels against the label map on the source grid, SR
values against the probabilities, codes, references, anonymised sources, and dcmtk's dsrdump."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest

from cspine.ct.cls.operating_points import resolve_operating_point
from cspine.errors import DicomError
from cspine.io.study import load_study
from cspine.io.volume import volume_from_arrays
from cspine.labels import LABEL_OF, PATIENT_OVERALL, STUDY_UID, VERTEBRAE
from cspine.outputs.dicom_results import (
    model_name_version,
    write_dicom_results,
    write_dicom_results_for_volume,
)
from cspine.outputs.source_grid import to_source_grid
from cspine.outputs.source_series import read_source_series, source_files_of

CODES = {"C1": "14806007", "C2": "39976000", "C3": "113205007", "C4": "5329002", "C5": "36978003",
         "C6": "36054005", "C7": "87391001"}


@dataclass
class FakeResult:
    study_uid: str
    probs: dict[str, float]
    patient_overall: float
    versions: dict = field(default_factory=dict)


def _result(uid: str) -> FakeResult:
    probs = {"C1": 0.05, "C2": 0.8123456, "C3": 0.31, "C4": 0.2999, "C5": 0.5, "C6": 0.07, "C7": 0.66}
    return FakeResult(uid, probs, 0.9012345)


def _sr_groups(sr_path) -> dict[str, dict]:
    """Per measurement group (by tracking identifier): probability, fracture evaluation, segment number."""
    ds = pydicom.dcmread(sr_path)
    groups = {}
    imaging = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "126010")
    for group in imaging.ContentSequence:
        out: dict = {}
        for item in group.ContentSequence:
            name = item.ConceptNameCodeSequence[0]
            if name.CodeMeaning == "Tracking Identifier":
                out["id"] = item.TextValue
            elif item.ValueType == "NUM" and name.CodeValue == "122157":
                mv = item.MeasuredValueSequence[0]
                out["probability"] = float(mv.NumericValue)
                out["unit"] = mv.MeasurementUnitsCodeSequence[0].CodeValue
            elif item.ValueType == "CODE" and name.CodeValue == "125605004":
                out["fracture"] = item.ConceptCodeSequence[0].CodeValue
            elif item.ValueType == "IMAGE" and name.CodeMeaning == "Referenced Segment":
                ref = item.ReferencedSOPSequence[0]
                out["segment"] = int(ref.ReferencedSegmentNumber)
                out["seg_uid"] = ref.ReferencedSOPInstanceUID
        groups[out["id"]] = out
    return groups


def _write_predictions_csv(tmp_path, result) -> pd.DataFrame:
    row = {STUDY_UID: result.study_uid, **result.probs, PATIENT_OVERALL: result.patient_overall}
    pd.DataFrame([row]).to_csv(tmp_path / "predictions.csv", index=False, float_format="%.6f")
    return pd.read_csv(tmp_path / "predictions.csv", dtype={STUDY_UID: str}).set_index(STUDY_UID)


def test_phantom_seg_and_sr_read_back(phantom_study, tmp_path):
    volume = load_study(phantom_study.folder, workers=1)
    result = _result("1.2.3.phantom")
    op = resolve_operating_point("0.5", None)
    out = write_dicom_results_for_volume(volume, phantom_study.labels, result, op, tmp_path / "dicom",
                                         "cspine test-model", "0.0+seg1.cls2")
    source = read_source_series(source_files_of(volume))
    on_source = to_source_grid(phantom_study.labels, volume, source.datasets)
    assert out.segments == {v: i + 1 for i, v in enumerate(VERTEBRAE)}  # thoracic labels 8, 9 left out

    seg = hd.seg.segread(out.seg_path)
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == source.datasets[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.datasets[0].SeriesInstanceUID
    uids = [str(d.SOPInstanceUID) for d in source.datasets]
    for name, number in out.segments.items():
        desc = seg.get_segment_description(number)
        assert desc.segmented_property_type.value == CODES[name]
        assert desc.segmented_property_type.scheme_designator == "SCT"
        assert desc.segmented_property_category.value == "91723000"
        assert desc.algorithm_type.value == "AUTOMATIC"
        algo = desc.algorithm_identification[0]
        assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("cspine test-model", "0.0+seg1.cls2")
        pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[number],
                                                   ignore_spatial_locations=True)[..., 0]
        np.testing.assert_array_equal(pixels.astype(bool), on_source == LABEL_OF[name], err_msg=name)
        # ... and that is the truth on the stored grid, frame by frame
        k = int(np.flatnonzero((on_source == LABEL_OF[name]).any(axis=(1, 2)))[0])
        truth = phantom_study.expected_frame(k) == LABEL_OF[name]
        np.testing.assert_array_equal(pixels[k].astype(bool), truth)

    groups = _sr_groups(out.sr_path)
    csv = _write_predictions_csv(tmp_path, result)
    for name, number in out.segments.items():
        g = groups[f"{name} vertebra"]
        assert g["probability"] == pytest.approx(result.probs[name], abs=1e-9)
        assert g["probability"] == pytest.approx(csv.loc[result.study_uid, name], abs=1e-6)
        assert g["unit"] == "{probability}"
        assert g["segment"] == number and g["seg_uid"] == seg.SOPInstanceUID
        assert g["fracture"] == ("52101004" if result.probs[name] >= 0.5 else "272519000"), name
    patient = csv.loc[result.study_uid, PATIENT_OVERALL]
    assert groups["patient"]["probability"] == pytest.approx(patient, abs=1e-6)
    assert groups["patient"]["fracture"] == "52101004"
    sr = pydicom.dcmread(out.sr_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert sr.StudyInstanceUID == seg.StudyInstanceUID
    texts = {e.value for e in sr.iterall() if e.keyword == "TextValue"}
    assert "operating point 0.5 (fixed): vertebra >= 0.5, patient >= 0.5" in texts


def test_operating_point_decides_present_absent(phantom_study, tmp_path):
    from cspine.ct.cls.operating_points import OperatingPoints

    volume = load_study(phantom_study.folder, workers=1)
    stored = OperatingPoints(patient={"sens90": 0.95}, vertebra={"sens90": 0.3}, targets=(0.9,))
    op = resolve_operating_point("sens90", stored)
    out = write_dicom_results_for_volume(volume, phantom_study.labels, _result("1.2.3.op"), op, tmp_path,
                                         "m", "1")
    groups = _sr_groups(out.sr_path)
    present = {v for v in VERTEBRAE if groups[f"{v} vertebra"]["fracture"] == "52101004"}
    assert present == {"C2", "C3", "C5", "C7"}  # >= 0.3; C4 at 0.2999 is not
    assert groups["patient"]["fracture"] == "272519000"  # 0.90 < 0.95


def test_anonymised_real_series(shared_data, tmp_path):
    from cspine.io.nifti import load_mask_on_grid

    root = shared_data / "real-ct-series"
    files = sorted((root / "dicom").iterdir())
    before = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    volume = load_study(root / "dicom", workers=1)
    mask = load_mask_on_grid(root / "seg_on_dicom.nii.gz", volume)
    labels = np.zeros_like(mask)
    labels[mask == 32], labels[mask == 33] = LABEL_OF["C7"], LABEL_OF["C6"]  # stand-ins for T12, T11
    paths = source_files_of(volume)
    source = read_source_series(paths)
    on_source = to_source_grid(labels, volume, source.datasets)
    result = _result("dicom")
    op = resolve_operating_point("0.6", None)
    out = write_dicom_results(paths, on_source, result, op, tmp_path / "a", "m", "1")
    again = write_dicom_results(paths, on_source, result, op, tmp_path / "b", "m", "1")

    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files} == before  # untouched
    assert set(out.filled) == {"SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                               "PatientID", "SeriesNumber"}
    assert out.to_dict()["source_fields_filled"]["StudyInstanceUID"] == "derived from the FrameOfReferenceUID"
    # deterministic: the same input gives the same UIDs
    assert (out.study_instance_uid, out.sr_sop_instance_uid, out.seg_sop_instance_uid) == (
        again.study_instance_uid, again.sr_sop_instance_uid, again.seg_sop_instance_uid)
    assert out.study_instance_uid.startswith("2.25.")
    seg = hd.seg.segread(out.seg_path)
    assert seg.StudyInstanceUID == out.study_instance_uid
    meta_uids = [str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)
                 for p in paths]
    refs = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    referenced = [i.ReferencedSOPInstanceUID for i in refs]
    assert set(referenced) <= set(meta_uids)
    assert out.segments == {"C6": 1, "C7": 2}
    for name, number in out.segments.items():
        pixels = seg.get_pixels_by_source_instance(meta_uids, segment_numbers=[number],
                                                   ignore_spatial_locations=True)[..., 0]
        np.testing.assert_array_equal(pixels.astype(bool), on_source == LABEL_OF[name])
    groups = _sr_groups(out.sr_path)
    assert groups["C7 vertebra"]["probability"] == pytest.approx(0.66)
    assert groups["C7 vertebra"]["fracture"] == "52101004"
    assert groups["C6 vertebra"]["fracture"] == "272519000"
    _check_dsrdump(out.sr_path)


def _check_dsrdump(path) -> None:
    exe = shutil.which("dsrdump")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("dsrdump (dcmtk) is not installed; CI must install it: "
                        "apt-get install -y --no-install-recommends dcmtk")
        pytest.skip("dsrdump (dcmtk) is not installed; apt-get install -y --no-install-recommends dcmtk")
    # strict parsing (no error-tolerance options); +Pt names the templates dcmtk recognises
    run = subprocess.run([exe, "+Pt", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith(("E:", "W:", "F:"))], run.stderr
    assert "Comprehensive 3D SR" in run.stdout and '"Fracture of bone")=(' in run.stdout
    assert "# TID 1500 (DCMR)" in run.stdout and "# TID 1411 (DCMR)" in run.stdout
    assert '"Probability")="0.66" ({probability},UCUM,"probability")' in run.stdout


def test_dsrdump_parses_the_phantom_sr(phantom_study, tmp_path):
    volume = load_study(phantom_study.folder, workers=1)
    out = write_dicom_results_for_volume(volume, phantom_study.labels, _result("1.2.3.dsr"),
                                         resolve_operating_point("0.5", None), tmp_path, "m", "1")
    _check_dsrdump(out.sr_path)


def test_no_vertebra_found_writes_the_sr_only(phantom_study, tmp_path):
    volume = load_study(phantom_study.folder, workers=1)
    empty = np.zeros(volume.shape, np.uint8)
    op = resolve_operating_point("0.5", None)
    out = write_dicom_results_for_volume(volume, empty, _result("1.2.3.none"), op, tmp_path, "m", "1")
    assert out.seg_path is None and out.segments == {} and out.sr_path.is_file()
    assert set(_sr_groups(out.sr_path)) == {"patient"}


def test_volume_without_dicom_sources_is_a_clear_error():
    with pytest.raises(DicomError, match="read from DICOM files"):
        source_files_of(volume_from_arrays(np.zeros((3, 4, 4), np.int16)))


def test_model_name_version():
    versions = {"packages": {"cspine": "0.4.0"}, "model": {"run_dir": "/x/runs/demo",
                                                           "seg": {"weights_sha256_16": "1a2b3c4d5e6f7a8b"},
                                                           "cls": {"weights_sha256_16": "9c8d7e6f5a4b3c2d"}}}
    assert model_name_version(versions) == ("cspine demo", "0.4.0+seg1a2b3c4d.cls9c8d7e6f")
