"""End to end with a real PACS: an Orthanc server (Debian's ``orthanc``, started here as a plain process with
a temporary configuration, free ports and its own storage) holds a phantom study, sends it to the node
(REST ``/modalities/<name>/store``), and then holds the SEG and SR the node sent back (checked through its
REST API)."""

from __future__ import annotations

import json

from _node_fixtures import COMPREHENSIVE_3D_SR, SEG_STORAGE, STUDY_UID, free_port, require_program, wait_for
from _orthanc import ORTHANC, orthanc_server

from cspine.ct.cls.operating_points import resolve_requested_point
from cspine.node.config import Destination, NodeConfig
from cspine.node.service import DicomNode


def test_orthanc_sends_a_study_to_the_node_and_gets_seg_and_sr_back(tmp_path, node_model, phantom_study):
    program = require_program("Orthanc", ORTHANC)
    op = resolve_requested_point(None, node_model.operating_points())
    orthanc_port = free_port()
    cfg = NodeConfig("CSPINE", spool=tmp_path / "spool", port=0, idle_seconds=1.0, allow_ae=("ORTHANC",),
                     send_to=Destination("127.0.0.1", orthanc_port, "ORTHANC"))
    with DicomNode(cfg, node_model, op, poll_seconds=0.1) as node, \
            orthanc_server(tmp_path / "orthanc", orthanc_port, {"cspine": ["CSPINE", "127.0.0.1", node.port]},
                           program=program) as rest:
        for f in phantom_study:
            assert rest.post("/instances", content=f.read_bytes()).status_code == 200
        (study_id,) = rest.get("/studies").json()
        sent = rest.post("/modalities/cspine/store", json={"Resources": [study_id], "Synchronous": True})
        assert sent.status_code == 200, sent.text
        (marker,) = wait_for(lambda: list((tmp_path / "spool").glob("*/*/done.json"))
                             or list((tmp_path / "spool").glob("*/*/failed.json")), 120, "the node's result")

        def three_series() -> list | None:
            found = rest.get(f"/studies/{study_id}/series?expand").json()
            return found if len(found) == 3 else None

        series = wait_for(three_series, 30, "Orthanc to hold the SEG and SR")
        by_modality = {s["MainDicomTags"]["Modality"]: s for s in series}
        tags = {m: rest.get(f"/instances/{s['Instances'][0]}/tags?simplify").json()
                for m, s in by_modality.items()}
    outcome = json.loads(marker.read_text())
    assert marker.name == "done.json" and outcome["sent_to"] == f"127.0.0.1:{orthanc_port}:ORTHANC", outcome
    assert sorted(by_modality) == ["CT", "SEG", "SR"]  # in the source study, beside the CT
    assert tags["SEG"]["SOPClassUID"] == SEG_STORAGE and tags["SR"]["SOPClassUID"] == COMPREHENSIVE_3D_SR
    assert tags["SEG"]["StudyInstanceUID"] == tags["SR"]["StudyInstanceUID"] == STUDY_UID
    ct_series_uid = tags["CT"]["SeriesInstanceUID"]
    assert tags["SEG"]["ReferencedSeriesSequence"][0]["SeriesInstanceUID"] == ct_series_uid
    assert len(by_modality["CT"]["Instances"]) == len(phantom_study)
