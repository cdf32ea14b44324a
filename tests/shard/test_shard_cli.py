"""The CLI: ``--part/--parts`` (or torchrun's RANK/WORLD_SIZE) on prepare and predict, then ``--merge``."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from _rsna_fixture import write_rsna_layout
from _tiny_ct_run import make_run
from cspine.cli.main import app
from cspine.labels import TEST_CSV
from cspine.shard import ShardError


def test_cli_parts_then_merge(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = write_rsna_layout(tmp_path / "rsna", n_train=3, n_test=3, shape=(12, 48, 48), n_masks=0)
    make_run(tmp_path / "run")
    runner = CliRunner()
    for rank in ("0", "1"):  # as torchrun would start them
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "2")
        res = runner.invoke(app, ["ct", "prepare", "--data", str(info.root), "--cache", str(tmp_path / "c")])
        assert res.exit_code == 0, res.output
        assert f"part-{rank}-of-2" in res.output
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert sorted(p.parent.name for p in (tmp_path / "c").glob("*/done.json")) == sorted(info.train_uids)
    base = ["ct", "predict", str(info.root), "--model", str(tmp_path / "run"), "--out", str(tmp_path / "o"),
            "--device", "cpu"]
    res = runner.invoke(app, [*base, "--part", "0", "--parts", "2"])
    assert res.exit_code == 0, res.output
    assert "part-0-of-2 finished" in res.output and "--merge" in res.output
    res = runner.invoke(app, [*base, "--merge", "--parts", "2"])
    # a CspineError: `cspine` prints it as one line (main() catches it; the test app lets it through)
    assert isinstance(res.exception, ShardError) and "part 1 of --parts 2" in str(res.exception)
    res = runner.invoke(app, [*base, "--part", "1", "--parts", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, [*base, "--merge"])
    assert res.exit_code == 0, res.output
    sub = pd.read_csv(tmp_path / "o" / "submission.csv")
    assert sub["row_id"].tolist() == pd.read_csv(info.root / TEST_CSV)["row_id"].tolist()
    res = runner.invoke(app, [*base, "--part", "2", "--parts", "2"])
    assert isinstance(res.exception, ShardError) and "0..1" in str(res.exception)
