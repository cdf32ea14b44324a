"""The node's network side with a stand-in for the model: C-ECHO, the calling-AE allow-list, C-STORE into
the spool, one series at a time, failures recorded, and a restart that finishes what was left."""

from __future__ import annotations

import json
import subprocess
import threading

import pydicom
import pytest
from _node_fixtures import free_port, require_program, wait_for
from pynetdicom import AE

from cspine.node.config import Destination, NodeConfig
from cspine.node.pipeline import ProcessingError
from cspine.node.send import SendError, send_files
from cspine.node.service import DicomNode
from cspine.node.spool import DONE, FAILED

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"


class Recorder:
    """Stands in for the pipeline: records the series it gets; fails series whose files it is told to."""

    def __init__(self, fail_with: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_with = fail_with
        self.running = threading.Lock()
        self.overlap = False

    def __call__(self, ref, files, complete):
        if not self.running.acquire(blocking=False):
            self.overlap = True
            self.running.acquire()
        try:
            self.calls.append((ref.key, len(files)))
            if self.fail_with is not None and len(files) == self.fail_with:
                raise ProcessingError("pipeline", "fewer than 3 slices")
            return {"status": "complete", "seconds": {}}
        finally:
            self.running.release()


def _associate(port: int, calling: str = "PACS", called: str = "CSPINE", contexts=(VERIFICATION, CT)):
    ae = AE(ae_title=calling)
    for c in contexts:
        ae.add_requested_context(c)
    return ae.associate("127.0.0.1", port, ae_title=called)


def _send(port: int, files, calling: str = "PACS") -> list[int]:
    assoc = _associate(port, calling)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(pydicom.dcmread(f)).Status) for f in files]
    finally:
        assoc.release()


def test_echo_and_the_calling_ae_allow_list(tmp_path):
    cfg = NodeConfig("CSPINE", spool=tmp_path / "spool", port=0, allow_ae=("PACS",))
    with DicomNode(cfg, process=Recorder()) as node:
        assoc = _associate(node.port)
        assert assoc.is_established
        assert int(assoc.send_c_echo().Status) == 0x0000
        assoc.release()
        refused = _associate(node.port, calling="INTRUDER")
        assert refused.is_rejected and not refused.is_established
        wrong_called = _associate(node.port, called="OTHER")  # addressed to another AE title
        assert wrong_called.is_rejected
        echoscu = require_program("echoscu")
        ok = subprocess.run([echoscu, "-aet", "PACS", "-aec", "CSPINE", "127.0.0.1", str(node.port)],
                            capture_output=True, text=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
        bad = subprocess.run([echoscu, "-aet", "INTRUDER", "-aec", "CSPINE", "127.0.0.1", str(node.port)],
                             capture_output=True, text=True, timeout=30)
        assert bad.returncode != 0 and "Rejected" in bad.stderr + bad.stdout


def test_series_are_received_queued_and_processed_one_at_a_time(tmp_path, phantom_study):
    recorder = Recorder(fail_with=2)
    cfg = NodeConfig("CSPINE", spool=tmp_path / "spool", port=0, idle_seconds=0.5)
    with DicomNode(cfg, process=recorder, poll_seconds=0.05) as node:
        assert set(_send(node.port, phantom_study[:6])) == {0x0000}
        # a second series (a 2-image scout) of the same study
        scout = []
        for i, f in enumerate(phantom_study[:2]):
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID, ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.99", f"1.2.3.4.{i}"
            scout.append(tmp_path / f"scout{i}.dcm")
            ds.save_as(scout[-1])
        assert set(_send(node.port, scout)) == {0x0000}
        spool = node.spool
        wait_for(lambda: len(recorder.calls) == 2, 30, "both series to be processed")
        states = wait_for(lambda: sorted(spool.state(r) for r in spool.series()) == [DONE, FAILED], 10,
                          "the markers")
        assert states
    assert sorted(n for _, n in recorder.calls) == [2, 6] and not recorder.overlap
    (failed,) = [r for r in spool.series() if spool.state(r) == FAILED]
    doc = json.loads((failed.path / "failed.json").read_text())
    assert doc["stage"] == "pipeline" and doc["reason"] == "fewer than 3 slices"


def test_a_restart_processes_what_the_stopped_node_left(tmp_path, phantom_study):
    cfg = NodeConfig("CSPINE", spool=tmp_path / "spool", port=0, idle_seconds=60)
    first = Recorder()
    with DicomNode(cfg, process=first) as node:
        _send(node.port, phantom_study[:4])  # idle time not reached when the node stops
    assert first.calls == []
    cfg2 = NodeConfig("CSPINE", spool=tmp_path / "spool", port=0, idle_seconds=0.5)
    second = Recorder()
    with DicomNode(cfg2, process=second, poll_seconds=0.05) as node:
        assert [r.key for r in node.spool.resumed] == [r.key for r in node.spool.series()]
        _send(node.port, phantom_study[4:7])  # the sender resumes after the restart
        wait_for(lambda: second.calls, 30, "the resumed series to be processed")
    assert [n for _, n in second.calls] == [7]


def test_sending_to_an_unreachable_destination_is_a_clear_error(tmp_path, phantom_study):
    dest = Destination("127.0.0.1", free_port(), "PACS")  # nothing listens there
    with pytest.raises(SendError, match=f"destination 127.0.0.1:{dest.port}:PACS could not be reached"):
        send_files(dest, phantom_study[:1], calling_ae="CSPINE", timeout=5)
    # a node that refuses the calling AE title: the association is rejected
    cfg = NodeConfig("PACS", spool=tmp_path / "spool", port=0, allow_ae=("SOMEONE",))
    with DicomNode(cfg, process=Recorder()) as node:
        with pytest.raises(SendError, match="rejected the association"):
            send_files(Destination("127.0.0.1", node.port, "PACS"), phantom_study[:1], calling_ae="CSPINE")
