"""One loader of training studies for every CT trainer: masks checked as `cspine ct prepare` checks them,
the cache's true and pseudo masks, and the same studies for stage 1, stage 2 and the baseline."""

from __future__ import annotations

import numpy as np
import pytest

from _rsna_fixture import write_rsna_layout
from cspine.ct.baseline.data import iter_baseline_studies
from cspine.ct.cls.dataset import iter_rsna_studies
from cspine.ct.seg.train import SegTrainConfig, load_training_studies
from cspine.ct.training_studies import iter_training_studies
from cspine.errors import NiftiError
from cspine.io.nifti import save_mask_nifti
from cspine.io.volume import Volume
from cspine.labels import SEGMENTATIONS
from cspine.preprocess.cache import PSEUDO_MASK_FILE, prepare_cache


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """Three studies: the first with a good mask, the second with labels outside 0..19, the third none."""
    root = tmp_path_factory.mktemp("rsna") / "data"
    info = write_rsna_layout(root, n_train=3, n_test=0, shape=(6, 12, 10), n_masks=2, seed=1)
    bad_uid = info.train_uids[1]
    bad = info.labels[bad_uid].copy()
    bad[0, 0, 0] = 40
    grid = Volume(info.hu[bad_uid], info.affine[bad_uid])
    save_mask_nifti(root / SEGMENTATIONS / f"{bad_uid}.nii", bad, grid)
    return root, info


def test_a_bad_mask_stops_training_by_default_naming_the_file(root) -> None:
    data, info = root
    with pytest.raises(NiftiError, match=r"labels outside 0\.\.19.*--bad-masks exclude") as err:
        list(iter_training_studies(data))
    assert f"{info.train_uids[1]}.nii" in str(err.value)
    with pytest.raises(NiftiError, match="labels outside"):  # stage 2 and stage 1 read through it
        list(iter_rsna_studies(data))
    with pytest.raises(NiftiError, match="labels outside"):
        load_training_studies(data, SegTrainConfig())


def test_exclude_uses_the_study_without_its_mask(root) -> None:
    data, info = root
    good, bad, none = info.train_uids
    studies = {s.uid: s for s in iter_training_studies(data, bad_masks="exclude")}
    assert list(studies) == info.train_uids
    assert studies[good].mask_source == "true"
    np.testing.assert_array_equal(studies[good].mask, info.labels[good])
    np.testing.assert_array_equal(studies[good].volume.hu, info.hu[good])
    assert studies[bad].mask is None and studies[none].mask is None
    assert studies[bad].mask_source is None
    # stage 1 keeps only the studies with a (good) mask; the baseline reads no mask at all
    assert [s.uid for s in iter_training_studies(data, bad_masks="exclude", require_mask=True)] == [good]
    assert [s.uid for s in load_training_studies(data, SegTrainConfig(), bad_masks="exclude")] == [good]
    base = list(iter_baseline_studies(data))
    assert [s.uid for s in base] == info.train_uids
    assert all(s.labels == studies[s.uid].labels for s in base)
    with pytest.raises(ValueError, match="bad_masks"):
        list(iter_training_studies(data, bad_masks="ignore"))


def test_cache_masks_and_pseudo_masks(root, tmp_path) -> None:
    data, info = root
    good, bad, none = info.train_uids
    cache = tmp_path / "cache"
    assert not prepare_cache(data, cache, bad_masks="exclude").failed
    pseudo = np.full(info.hu[none].shape, 3, np.uint8)
    np.save(cache / none / PSEUDO_MASK_FILE, pseudo)
    studies = {s.uid: s for s in iter_training_studies(data, cache=cache)}  # "error" is prepare's job here
    assert studies[good].mask_source == "true"
    np.testing.assert_array_equal(studies[good].mask, info.labels[good])
    assert studies[bad].mask is None  # left out when the cache was prepared
    assert studies[none].mask_source == "pseudo"
    np.testing.assert_array_equal(studies[none].mask, pseudo)
    assert [s.uid for s in iter_training_studies(data, cache=cache, require_mask=True)] == [good]
    # stage 2: the pseudo mask's study is used; the study without any mask is skipped
    assert [s.uid for s in iter_rsna_studies(data, cache=cache)] == [good, none]
