"""End to end on loopback with dcmtk peers: ``storescu`` pushes a phantom study into the node, the node runs
the (tiny) model and sends the SEG and SR to a ``storescp``; they are read back and checked against the
source series and the result document. The node's log names no study, series or patient."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from _node_fixtures import (
    COMPREHENSIVE_3D_SR,
    PATIENT_ID,
    PATIENT_NAME,
    SEG_STORAGE,
    STUDY_UID,
    free_port,
    require_program,
    wait_for,
)

from cspine.ct.cls.operating_points import resolve_requested_point
from cspine.node.config import Destination, NodeConfig
from cspine.node.service import DicomNode


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


@contextlib.contextmanager
def storescp(out_dir: Path, ae_title: str = "RESULTS") -> Iterator[int]:
    """A dcmtk Storage SCP writing what it receives into ``out_dir``; yields its port."""
    program = require_program("storescp")
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen([program, "-aet", ae_title, "-od", str(out_dir), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _listening(port) or proc.poll() is not None, 15, "storescp to listen")
        if proc.poll() is not None:
            pytest.fail(f"storescp exited: {proc.stderr.read() if proc.stderr else ''}")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_storescu_to_node_to_storescp(tmp_path, node_model, phantom_study, caplog):
    caplog.set_level(logging.INFO, logger="cspine")
    storescu = require_program("storescu")
    source = pydicom.dcmread(phantom_study[0], stop_before_pixels=True)
    op = resolve_requested_point(None, node_model.operating_points())
    received = tmp_path / "received"
    with storescp(received) as results_port:
        cfg = NodeConfig("CSPINE", spool=tmp_path / "spool", port=0, idle_seconds=1.0,
                         send_to=Destination("127.0.0.1", results_port, "RESULTS"))
        with DicomNode(cfg, node_model, op, poll_seconds=0.1) as node:
            t0 = time.monotonic()
            push = subprocess.run([storescu, "-aet", "PACS", "-aec", "CSPINE", "+sd",
                                   "127.0.0.1", str(node.port), str(phantom_study[0].parent)],
                                  capture_output=True, text=True, timeout=120)
            assert push.returncode == 0, push.stderr
            done = wait_for(lambda: list((tmp_path / "spool").glob("*/*/done.json"))
                            or list((tmp_path / "spool").glob("*/*/failed.json")), 120, "the node's result")
            wait_for(lambda: len(list(received.iterdir())) >= 2, 30, "storescp to receive SEG and SR")
            print(f"storescu -> node -> storescp: {time.monotonic() - t0:.1f} s")
    (marker,) = done
    outcome = json.loads(marker.read_text())
    assert marker.name == "done.json", outcome
    assert outcome["instances"] == len(phantom_study) and outcome["sent_to"].endswith(":RESULTS")
    assert set(outcome["seconds"]) >= {"receive", "pipeline", "dicom", "send"}

    by_class = {str(ds.SOPClassUID): ds for ds in (pydicom.dcmread(f) for f in received.iterdir())}
    assert set(by_class) == {SEG_STORAGE, COMPREHENSIVE_3D_SR}
    seg_ds, sr = by_class[SEG_STORAGE], by_class[COMPREHENSIVE_3D_SR]
    for ds in (seg_ds, sr):  # results belong to the source study, with its patient module
        assert ds.StudyInstanceUID == STUDY_UID and ds.PatientID == PATIENT_ID
    (ref_series,) = seg_ds.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == source.SeriesInstanceUID
    assert len(ref_series.ReferencedInstanceSequence) == len(phantom_study)
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert seg.number_of_segments == 1
    assert seg.get_segment_description(1).segmented_property_type.value == "113205007"  # C3
    # the SR cites the SEG and the source series as evidence, and holds the result's probability
    evidence = {(s.SeriesInstanceUID, i.ReferencedSOPClassUID)
                for st in sr.CurrentRequestedProcedureEvidenceSequence
                for s in st.ReferencedSeriesSequence for i in s.ReferencedSOPSequence}
    assert (seg_ds.SeriesInstanceUID, SEG_STORAGE) in evidence
    assert (source.SeriesInstanceUID, source.SOPClassUID) in evidence
    result = json.loads((marker.parent / "results" / "result.json").read_text())
    p_c3 = result["probabilities"]["C3"]
    numbers = [float(item.MeasuredValueSequence[0].NumericValue)
               for group in sr.ContentSequence if "ContentSequence" in group
               for tid in group.ContentSequence if "ContentSequence" in tid
               for item in tid.ContentSequence if item.ValueType == "NUM"]
    assert any(abs(n - p_c3) < 1e-6 for n in numbers)

    # logs and the spool's paths name the study by its hash only
    text = caplog.text + "\n".join(str(p) for p in (tmp_path / "spool").rglob("*") if p.is_dir())
    for secret in (STUDY_UID, str(source.SeriesInstanceUID), PATIENT_ID, PATIENT_NAME, "Doe"):
        assert secret not in text, secret
    assert f"series {outcome['study']}/{outcome['series']}: done" in caplog.text
