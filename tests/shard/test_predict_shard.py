"""``cspine ct predict`` in parts over one folder, and ``--merge`` into one predictions/submission."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from _shard_helpers import dead_pid, write_claim

import cspine.ct.inference as inference
from _rsna_fixture import write_rsna_layout
from _tiny_ct_run import make_run
from cspine.ct.inference import predict_many
from cspine.ct.merge import merge_parts
from cspine.ct.model import CtModel
from cspine.labels import STUDY_UID, TEST_CSV
from cspine.shard import Shard, ShardError, claim_key

N_TEST = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("shard")
    make_run(base / "run")
    info = write_rsna_layout(base / "rsna", n_train=1, n_test=N_TEST, shape=(12, 48, 48), n_masks=0)
    test = pd.read_csv(info.root / TEST_CSV, dtype=str)
    order = [info.test_uids[i] for i in (3, 0, 4, 2, 1)]  # test.csv not in UID order
    test = pd.concat([test[test[STUDY_UID] == u] for u in order], ignore_index=True)
    test.to_csv(info.root / TEST_CSV, index=False)
    return info, CtModel.load(base / "run", device="cpu"), test


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counter:
    calls: Counter = Counter()
    lock = threading.Lock()
    real = inference.predict

    def counting(path, *args, **kwargs):
        with lock:
            calls[Path(path).name] += 1
        return real(path, *args, **kwargs)

    monkeypatch.setattr(inference, "predict", counting)
    return calls


def _workers(info, model, out: Path, shards: list[Shard]) -> list:
    results: list = [None] * len(shards)

    def work(i: int) -> None:
        results[i] = predict_many([info.root], model, out, progress=False, shard=shards[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_workers_predict_each_study_once_and_merge_in_test_csv_order(setup, counted, tmp_path) -> None:
    info, model, test = setup
    a, b = _workers(info, model, tmp_path, [Shard(0, 1), Shard(0, 1)])  # same part: claims decide
    assert counted == Counter({uid: 1 for uid in info.test_uids})
    assert sorted(a.predicted + b.predicted) == sorted(info.test_uids)
    assert not (tmp_path / "predictions.csv").exists()  # parts leave the CSVs to the merge
    merged = merge_parts([info.root], model, tmp_path)
    assert sorted(merged.resumed) == sorted(info.test_uids) and merged.n_studies == N_TEST
    sub = pd.read_csv(tmp_path / "submission.csv", dtype={"row_id": str})
    assert sub["row_id"].tolist() == test["row_id"].tolist()
    pred = pd.read_csv(tmp_path / "predictions.csv", dtype={STUDY_UID: str})
    assert pred[STUDY_UID].tolist() == sorted(info.test_uids)
    for uid in info.test_uids:
        doc = json.loads((tmp_path / f"{uid}.json").read_text())
        row = sub.set_index("row_id").loc[f"{uid}_C3", "fractured"]
        assert row == pytest.approx(doc["probabilities"]["C3"], abs=1e-6)
    manifest = json.loads((tmp_path / ".cspine-outputs.json").read_text())["files"]
    assert {f"{u}.json" for u in info.test_uids} <= set(manifest)  # no worker dropped another's entry
    assert counted == Counter({uid: 1 for uid in info.test_uids})  # the merge predicted nothing


def test_merge_refuses_while_a_part_is_missing_then_parts_resume(setup, counted, tmp_path) -> None:
    info, model, _ = setup
    first = predict_many([info.root], model, tmp_path, progress=False, shard=Shard(0, 2))
    assert sorted(first.predicted) == sorted(info.test_uids)[0::2]
    with pytest.raises(ShardError, match=r"2 of 5 inputs have no result.*part 1 of --parts 2"):
        merge_parts([info.root], model, tmp_path, parts=2)
    assert not (tmp_path / "submission.csv").exists()
    predict_many([info.root], model, tmp_path, progress=False, shard=Shard(1, 2))
    again = predict_many([info.root], model, tmp_path, progress=False, shard=Shard(0, 2))
    assert again.predicted == [] and len(again.resumed) == 3
    assert merge_parts([info.root], model, tmp_path, parts=2).n_studies == N_TEST
    assert counted == Counter({uid: 1 for uid in info.test_uids})


def test_a_dead_workers_study_is_redone_and_a_live_ones_left_alone(setup, counted, tmp_path) -> None:
    info, model, _ = setup
    dead_uid, live_uid = sorted(info.test_uids)[:2]
    folder = info.root / "test_images"
    write_claim(tmp_path, claim_key(dead_uid, str((folder / dead_uid).resolve())), pid=dead_pid())
    write_claim(tmp_path, claim_key(live_uid, str((folder / live_uid).resolve())), pid=1)
    summary = predict_many([info.root], model, tmp_path, progress=False, shard=Shard(0, 1))
    assert dead_uid in summary.predicted and live_uid not in summary.predicted
    assert summary.busy == [str(folder / live_uid)]
    with pytest.raises(ShardError, match=r"1 of 5 inputs .* claimed by PID 1"):
        merge_parts([info.root], model, tmp_path)


def test_failures_of_every_part_reach_the_merged_failures_json(setup, tmp_path) -> None:
    info, model, test = setup
    broken = tmp_path / "in" / "broken_study"
    broken.mkdir(parents=True)
    (broken / "1.dcm").write_bytes(b"not a dicom file")
    inputs = [info.root, broken]
    for k in range(2):
        predict_many(inputs, model, tmp_path / "out", progress=False, shard=Shard(k, 2))
    merged = merge_parts(inputs, model, tmp_path / "out", test_csv=info.root / TEST_CSV)
    assert [p for p, _ in merged.failed] == [str(broken)]
    failures = json.loads((tmp_path / "out" / "failures.json").read_text())
    assert failures[0]["input"] == str(broken)
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={STUDY_UID: str})
    assert pred.set_index(STUDY_UID).loc["broken_study", "status"] == "failed"
