"""Assignment of studies to parts, and claims: exclusive, retaken from dead workers only."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from _shard_helpers import dead_pid, write_claim

from cspine.shard import Claims, Shard, ShardError, claim_key, resolve_shard


def test_parts_are_disjoint_cover_everything_and_ignore_input_order() -> None:
    uids = [f"1.2.{i}" for i in (5, 3, 9, 1, 7, 2, 8)]
    parts = [Shard(k, 3).select(uids) for k in range(3)]
    assert sorted(sum(parts, [])) == sorted(uids)
    assert Shard(0, 3).select(uids) == sorted(uids)[0::3]
    assert Shard(1, 3).select(list(reversed(uids))) == parts[1]


def test_resolve_shard_options_env_and_errors() -> None:
    assert resolve_shard(None, None, env={}) is None
    assert resolve_shard(2, 4, env={"RANK": "0", "WORLD_SIZE": "8"}) == Shard(2, 4)  # options win
    assert resolve_shard(None, None, env={"RANK": "3", "WORLD_SIZE": "4"}) == Shard(3, 4)
    assert resolve_shard(1, 4).label == "part-1-of-4"
    with pytest.raises(ShardError, match="go together"):
        resolve_shard(1, None, env={})
    with pytest.raises(ShardError, match=r"0\.\.3"):
        resolve_shard(4, 4, env={})
    with pytest.raises(ShardError, match="not integers"):
        resolve_shard(None, None, env={"RANK": "x", "WORLD_SIZE": "2"})


def test_claim_keys_are_file_names_and_tell_same_named_inputs_apart() -> None:
    assert claim_key("1.2.826.0.1") == "1.2.826.0.1"
    assert "/" not in claim_key("a/b c")
    assert claim_key("study", "/data/a/study") != claim_key("study", "/data/b/study")


def test_a_claim_is_exclusive_until_released(tmp_path: Path) -> None:
    claims = Claims(tmp_path)
    first = claims.acquire("s1")
    assert first is not None
    assert claims.acquire("s1") is None  # held by a live worker (this process)
    info = claims.holder("s1")
    assert info is not None and info.pid == os.getpid() and info.token == first.token
    first.release()
    assert claims.holder("s1") is None
    again = claims.acquire("s1")
    assert again is not None
    again.release()


def test_many_threads_racing_for_one_claim_get_it_once(tmp_path: Path) -> None:
    claims = Claims(tmp_path)
    won: list[object] = []
    start = threading.Barrier(8)

    def race() -> None:
        start.wait()
        claim = claims.acquire("s1")
        if claim is not None:
            won.append(claim)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1


def test_a_dead_workers_claim_is_retaken(tmp_path: Path) -> None:
    write_claim(tmp_path, "s1", pid=dead_pid())
    claims = Claims(tmp_path)
    claim = claims.acquire("s1")
    assert claim is not None and claims.holder("s1").pid == os.getpid()  # type: ignore[union-attr]
    claim.release()


def test_another_hosts_claim_is_retaken_only_when_its_heartbeat_stopped(tmp_path: Path) -> None:
    claims = Claims(tmp_path, stale_after_s=60)
    write_claim(tmp_path, "fresh", pid=1, host="node-b", age_s=5)
    write_claim(tmp_path, "stale", pid=1, host="node-b", age_s=120)
    assert claims.acquire("fresh") is None
    claim = claims.acquire("stale")
    assert claim is not None
    claim.release()


def test_the_heartbeat_keeps_a_long_claim_fresh(tmp_path: Path) -> None:
    claims = Claims(tmp_path, heartbeat_s=0.05)
    claim = claims.acquire("s1")
    assert claim is not None
    old = claim.path.stat().st_mtime - 100
    os.utime(claim.path, (old, old))
    threading.Event().wait(0.3)
    assert claims.holder("s1").age_s < 50  # type: ignore[union-attr]
    claim.release()
