"""The spool: hashed names, atomic instance writes, idle completion, markers, restart and reopening."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cspine.node.spool import COMPLETE, DONE, FAILED, RECEIVING, Spool

STUDY, SERIES = "1.2.840.113619.2.55.3.1234", "1.2.840.113619.2.55.3.1234.7"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _spool(root: Path, clock: Clock, idle: float = 5.0) -> Spool:
    return Spool(root, idle, clock=clock)


def _all_text(root: Path) -> str:
    return "\n".join(str(p) for p in root.rglob("*"))


def test_instances_are_stored_under_keyed_names_without_uids(tmp_path):
    clock = Clock()
    spool = _spool(tmp_path / "spool", clock)
    stored = spool.store(STUDY, SERIES, f"{SERIES}.1", b"DICM-one", calling_ae="PACS")
    again = spool.store(STUDY, SERIES, f"{SERIES}.2", b"DICM-two")
    assert stored.new_series and not again.new_series and stored.ref == again.ref
    files = spool.instances(stored.ref)
    assert sorted(f.read_bytes() for f in files) == [b"DICM-one", b"DICM-two"]
    # no UID anywhere in the spool's paths, no temporary file left behind
    paths = _all_text(tmp_path / "spool")
    assert "1.2.840" not in paths and ".tmp" not in paths
    received = json.loads((stored.ref.path / "series.json").read_text())
    assert received["calling_ae"] == "PACS" and received["first_received"] == 1000.0
    # the same instance sent twice replaces its copy
    spool.store(STUDY, SERIES, f"{SERIES}.1", b"DICM-one-again")
    assert len(spool.instances(stored.ref)) == 2
    # names are keyed per spool: another spool names the same study differently, the same spool the same
    other = _spool(tmp_path / "other", clock)
    assert other.ref(STUDY, SERIES).study != stored.ref.study
    assert _spool(tmp_path / "spool", clock).ref(STUDY, SERIES) == stored.ref


def test_a_failed_write_leaves_no_partial_instance(tmp_path, monkeypatch):
    spool = _spool(tmp_path / "spool", Clock())
    spool.store(STUDY, SERIES, "1.2.3.1", b"first")

    def broken(self, data):
        Path.write_text(self, "half")  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", broken)
    with pytest.raises(OSError):
        spool.store(STUDY, SERIES, "1.2.3.2", b"second")
    monkeypatch.undo()
    ref = spool.ref(STUDY, SERIES)
    assert [f.read_bytes() for f in spool.instances(ref)] == [b"first"]
    assert [p.name for p in ref.images_dir.iterdir()] == [spool.instances(ref)[0].name]


def test_a_series_completes_after_the_idle_time_and_is_queued_oldest_first(tmp_path):
    clock = Clock()
    spool = _spool(tmp_path / "spool", clock)
    a = spool.store(STUDY, SERIES, "1.1", b"a").ref
    clock.now += 2
    b = spool.store(STUDY, SERIES + ".9", "2.1", b"b").ref
    clock.now += 4.9  # a idle 6.9 s, b idle 4.9 s
    assert spool.due() == [a]
    assert spool.mark_complete(b) is None  # not idle long enough
    doc = spool.mark_complete(a)
    assert doc is not None and doc["instances"] == 1 and doc["first_received"] == 1000.0
    clock.now += 0.2
    assert spool.mark_complete(b) is not None
    assert [ref for ref, _ in spool.queued()] == [a, b]
    assert spool.state(a) == COMPLETE and spool.due() == []


def test_done_and_failed_markers_and_a_restart_that_loses_nothing(tmp_path):
    clock = Clock()
    root = tmp_path / "spool"
    spool = _spool(root, clock)
    done = spool.store(STUDY, "s-done", "1", b"x").ref
    failed = spool.store(STUDY, "s-failed", "2", b"x").ref
    queued = spool.store(STUDY, "s-queued", "3", b"x").ref
    clock.now += 10
    tokens = {ref: spool.mark_complete(ref)["token"] for ref in (done, failed, queued)}
    half = spool.store(STUDY, "s-half", "4", b"x").ref  # still arriving when the node stops
    assert spool.finish(done, tokens[done], {"status": "complete"})
    assert spool.finish(failed, tokens[failed], {"stage": "pipeline", "reason": "too few slices"},
                        failed=True)

    clock.now += 100  # the node was down for a while
    restarted = _spool(root, clock)
    assert {r: restarted.state(r) for r in (done, failed, queued, half)} == {
        done: DONE, failed: FAILED, queued: COMPLETE, half: RECEIVING}
    assert json.loads((failed.path / "failed.json").read_text())["reason"] == "too few slices"
    assert [r for r, _ in restarted.queued()] == [queued]
    # the half-received series is resumed: it waits the idle time again from the restart
    assert restarted.resumed == [half] and restarted.due() == []
    restarted.store(STUDY, "s-half", "5", b"y")  # the sender goes on after the restart
    clock.now += 5
    assert restarted.due() == [half]
    assert restarted.mark_complete(half)["instances"] == 2
    assert restarted.counts() == {RECEIVING: 0, COMPLETE: 2, DONE: 1, FAILED: 1}


def test_an_instance_after_completion_reopens_the_series_and_voids_the_running_outcome(tmp_path):
    clock = Clock()
    spool = _spool(tmp_path / "spool", clock)
    ref = spool.store(STUDY, SERIES, "1", b"x").ref
    clock.now += 6
    token = spool.mark_complete(ref)["token"]
    late = spool.store(STUDY, SERIES, "2", b"y")  # arrives while the worker processes the series
    assert late.reopened and spool.state(ref) == RECEIVING
    assert not spool.finish(ref, token, {"status": "complete"})  # the stale outcome is not recorded
    assert spool.state(ref) == RECEIVING
    clock.now += 6
    second = spool.mark_complete(ref)
    assert second["instances"] == 2 and spool.finish(ref, second["token"], {"status": "complete"})
    assert spool.state(ref) == DONE
    # and a done series reopens too
    assert spool.store(STUDY, SERIES, "3", b"z").reopened and spool.state(ref) == RECEIVING
