"""``cspine ct prepare`` in parts: workers sharing one cache prepare every study exactly once."""

from __future__ import annotations

import functools
import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _shard_helpers import dead_pid, write_claim

from _rsna_fixture import write_rsna_layout
from cspine.preprocess.cache import DONE_FILE, StudyCache, prepare_cache
from cspine.shard import Shard


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory):
    return write_rsna_layout(tmp_path_factory.mktemp("rsna") / "root", n_train=6, n_test=0, n_masks=1)


def _counting_loader(calls: Counter, lock: threading.Lock, folder: Path):
    from cspine.io.study import load_study

    with lock:
        calls[folder.name] += 1
    time.sleep(0.05)  # long enough for the workers' studies to overlap
    return load_study(folder)


def _run_workers(rsna, cache: Path, shards: list[Shard]) -> tuple[Counter, list]:
    calls: Counter = Counter()
    loader = functools.partial(_counting_loader, calls, threading.Lock())
    summaries: list = [None] * len(shards)

    def work(i: int) -> None:
        summaries[i] = prepare_cache(rsna.root, cache, progress=False, loader=loader, shard=shards[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return calls, summaries


def test_two_workers_on_the_same_part_prepare_each_study_once(rsna, tmp_path: Path) -> None:
    calls, (a, b) = _run_workers(rsna, tmp_path / "c", [Shard(0, 1), Shard(0, 1)])
    assert calls == Counter({uid: 1 for uid in rsna.train_uids})
    assert sorted(a.done + b.done) == sorted(rsna.train_uids)
    assert not set(a.done) & set(b.done) and not a.failed and not b.failed
    assert StudyCache(tmp_path / "c").uids() == sorted(rsna.train_uids)
    written = json.loads((tmp_path / "c" / "summary.part-0-of-1.json").read_text())
    assert written["total"] == len(rsna.train_uids)
    assert not list((tmp_path / "c" / ".claims").glob("*.claim"))  # every claim released


def test_parts_split_the_sorted_studies_and_a_plain_run_finds_them_all(rsna, tmp_path: Path) -> None:
    calls, (a, b) = _run_workers(rsna, tmp_path / "c", [Shard(0, 2), Shard(1, 2)])
    ordered = sorted(rsna.train_uids)
    assert sorted(a.done) == ordered[0::2] and sorted(b.done) == ordered[1::2]
    assert calls == Counter({uid: 1 for uid in rsna.train_uids})
    whole = prepare_cache(rsna.root, tmp_path / "c", progress=False)
    assert whole.done == [] and sorted(whole.skipped) == ordered and whole.masks == 0
    assert set(whole.mask_reports) == set(rsna.mask_uids)  # read back from the parts' studies


def test_a_killed_workers_half_written_study_is_redone(rsna, tmp_path: Path) -> None:
    cache = tmp_path / "c"
    prepare_cache(rsna.root, cache, progress=False)
    victim, busy = sorted(rsna.train_uids)[:2]
    (cache / victim / DONE_FILE).unlink()
    np.save(cache / victim / "volume.npy", np.zeros((1, 1, 1), np.int16))  # half-written
    write_claim(cache, victim, pid=dead_pid())
    (cache / busy / DONE_FILE).unlink()
    live = write_claim(cache, busy, pid=1)  # PID 1 is alive: a live worker is on it
    summary = prepare_cache(rsna.root, cache, progress=False, shard=Shard(0, 1))
    assert summary.done == [victim] and summary.busy == [busy]
    np.testing.assert_array_equal(StudyCache(cache).load(victim).hu, rsna.hu[victim])
    assert live.exists()  # a live worker's claim is left alone
