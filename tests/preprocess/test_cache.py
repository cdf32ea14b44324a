"""Preprocessing cache: exact HU and masks, resumability, bad studies, process pool."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _rsna_fixture import write_rsna_layout
from cspine.preprocess.cache import DONE_FILE, PSEUDO_MASK_FILE, StudyCache, prepare_cache


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory):
    return write_rsna_layout(tmp_path_factory.mktemp("rsna") / "root", n_train=3, n_test=1, n_masks=1)


def test_cache_holds_exact_hu_geometry_slice_map_and_mask(rsna, tmp_path: Path) -> None:
    summary = prepare_cache(rsna.root, tmp_path / "c", progress=False)
    assert summary.ok and sorted(summary.done) == sorted(rsna.train_uids) and summary.masks == 1
    cache = StudyCache(tmp_path / "c")
    assert cache.uids() == sorted(rsna.train_uids)
    for uid in rsna.train_uids:
        vol = cache.load(uid)
        assert isinstance(vol.hu, np.memmap) and vol.hu.dtype == np.int16
        np.testing.assert_array_equal(vol.hu, rsna.hu[uid])
        np.testing.assert_allclose(vol.affine, rsna.affine[uid], atol=1e-4)
        # RSNA slice_number (InstanceNumber) -> array index; odd studies are numbered caudal-first.
        n = vol.shape[0]
        reverse = rsna.train_uids.index(uid) % 2 == 1
        assert [s.instance_number for s in vol.slices] == (list(range(n, 0, -1)) if reverse else
                                                           list(range(1, n + 1)))
        assert vol.index_of_instance(1) == (n - 1 if reverse else 0)
        assert Path(vol.slices[0].path).parent == rsna.root / "train_images" / uid
        mask = cache.load_mask(uid)
        if uid in rsna.mask_uids:
            np.testing.assert_array_equal(mask, rsna.labels[uid])
        else:
            assert mask is None
    geo = json.loads((tmp_path / "c" / rsna.train_uids[0] / "geometry.json").read_text())
    assert geo["shape"] == list(rsna.hu[rsna.train_uids[0]].shape)
    assert not any("patient" in k.lower() for k in geo["meta"])


def test_resume_skips_finished_and_redoes_unmarked(rsna, tmp_path: Path) -> None:
    prepare_cache(rsna.root, tmp_path / "c", progress=False)
    again = prepare_cache(rsna.root, tmp_path / "c", progress=False)
    assert again.done == [] and sorted(again.skipped) == sorted(rsna.train_uids)
    victim = rsna.train_uids[1]
    (tmp_path / "c" / victim / DONE_FILE).unlink()
    np.save(tmp_path / "c" / victim / "volume.npy", np.zeros((1, 1, 1), np.int16))  # half-written
    stale = tmp_path / "c" / victim / PSEUDO_MASK_FILE  # stage-1 labels of the old volume
    np.save(stale, np.zeros((1, 1, 1), np.uint8))
    third = prepare_cache(rsna.root, tmp_path / "c", progress=False)
    assert third.done == [victim] and len(third.skipped) == 2
    assert not stale.exists()
    np.testing.assert_array_equal(StudyCache(tmp_path / "c").load(victim).hu, rsna.hu[victim])


def test_bad_study_is_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    info = write_rsna_layout(tmp_path / "root", n_train=3, n_test=0, n_masks=0)
    bad = info.train_uids[1]
    for f in (info.root / "train_images" / bad).glob("*.dcm"):
        f.write_bytes(f.read_bytes()[:300])  # truncated files
    missing = info.train_uids[2]
    for f in (info.root / "train_images" / missing).glob("*.dcm"):
        f.unlink()
    (info.root / "train_images" / missing).rmdir()
    summary = prepare_cache(info.root, tmp_path / "c", progress=False)
    assert summary.done == [info.train_uids[0]]
    assert set(summary.failed) == {bad, missing}
    assert "no image folder" in summary.failed[missing]
    assert summary.failed[bad]
    written = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert set(written["failed"]) == {bad, missing}
    assert StudyCache(tmp_path / "c").uids() == [info.train_uids[0]]


def test_process_pool_and_test_split(rsna, tmp_path: Path) -> None:
    summary = prepare_cache(rsna.root, tmp_path / "c", workers=2, split="test", progress=False)
    assert summary.ok and summary.done == rsna.test_uids
    train = prepare_cache(rsna.root, tmp_path / "c", workers=2, progress=False,
                          uids=rsna.train_uids[:2])
    assert train.ok and sorted(train.done) == sorted(rsna.train_uids[:2])
    cache = StudyCache(tmp_path / "c")
    for uid in [*rsna.test_uids, *rsna.train_uids[:2]]:
        np.testing.assert_array_equal(cache.load(uid, mmap=False).hu, rsna.hu[uid])
    assert cache.load_mask(rsna.test_uids[0]) is None
    with pytest.raises(Exception, match="not in the cache"):
        cache.load(rsna.train_uids[2])


def test_cli_prepare_prints_summary_and_fails_on_bad_study(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cspine.cli.main import app

    info = write_rsna_layout(tmp_path / "root", n_train=2, n_test=0, n_masks=1)
    bad = info.train_uids[1]
    for f in (info.root / "train_images" / bad).glob("*.dcm"):
        f.write_bytes(b"not dicom")
    args = ["ct", "prepare", "--data", str(info.root), "--cache", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert bad in result.output and "failed" in result.output
    assert StudyCache(tmp_path / "c").uids() == [info.train_uids[0]]
    result = CliRunner().invoke(app, [*args, "--split", "nope"])
    assert result.exit_code != 0


def test_phantom_study_cached_with_its_mask_on_the_bone(tmp_path: Path) -> None:
    """End to end on the project's phantom: DICOM (any numbering/encoding) + sagittal NIfTI -> cache."""
    from cspine.synth.ct import generate_ct_dataset, study_plan

    seed = next(s for s in range(50) if study_plan(1, 0, s)[0]["segmentation"])
    root = generate_ct_dataset(tmp_path / "ph", 1, n_test=0, seed=seed, size=64, progress=False)
    summary = prepare_cache(root, tmp_path / "c", progress=False)
    assert summary.ok and summary.masks == 1
    cache = StudyCache(tmp_path / "c")
    (uid,) = cache.uids()
    vol, mask = cache.load(uid), cache.load_mask(uid)
    assert mask.shape == vol.shape and set(np.unique(mask)) >= {0, 1, 2, 7}
    bone = float(vol.hu[(mask >= 1) & (mask <= 7)].mean())
    assert bone > 300
    mirrored = mask[::-1, :, ::-1]  # what a reader ignoring the NIfTI header would get
    assert float(vol.hu[(mirrored >= 1) & (mirrored <= 7)].mean()) < bone - 150
    # Canonical orientation: the cervical labels run cranial (C1, low z index) to caudal.
    z_of = {lab: np.nonzero(mask == lab)[0].mean() for lab in (1, 4, 7)}
    assert z_of[1] < z_of[4] < z_of[7]
