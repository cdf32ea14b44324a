"""Reorientation into the canonical axes by flips/permutations, keeping every voxel's world position."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cspine.io.orient import canonical_transform, from_canonical, to_canonical
from cspine.io.volume import SliceInfo, Volume, volume_from_arrays


def volume_with(perm: tuple[int, int, int], signs: tuple[int, int, int], shape=(4, 5, 6)) -> Volume:
    """Array axis i points along LPS axis perm[i] with sign signs[i]; spacing 1, 2, 3 mm."""
    affine = np.eye(4)
    affine[:3, :3] = 0
    for i in range(3):
        affine[perm[i], i] = signs[i] * (i + 1.0)
    affine[:3, 3] = (10.0, -20.0, 30.0)
    hu = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    slices = tuple(SliceInfo(f"{k}.dcm", k + 1, f"1.{k}") for k in range(shape[0]))
    return Volume(hu, affine, slices, {"StudyInstanceUID": "1"})


def assert_same_world(orig: Volume, canon: Volume) -> None:
    """Every voxel of the canonical volume sits where the same value sat in the original."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in canon.shape], indexing="ij"), -1).reshape(-1, 3)
    world = canon.index_to_world(idx)
    back = np.rint(orig.world_to_index(world)).astype(int)
    np.testing.assert_allclose(orig.index_to_world(back), world, atol=1e-9)
    np.testing.assert_array_equal(orig.hu[tuple(back.T)], canon.hu.reshape(-1))


@pytest.mark.parametrize("perm", list(itertools.permutations(range(3))))
@pytest.mark.parametrize("signs", [(1, 1, 1), (-1, 1, -1), (1, -1, 1), (-1, -1, -1)])
def test_any_axis_order_becomes_canonical(perm, signs) -> None:
    vol = volume_with(perm, signs)
    canon = to_canonical(vol)
    a = canon.affine[:3, :3]
    assert a[2, 0] < 0 and a[1, 1] > 0 and a[0, 2] > 0  # S->I, A->P, R->L in LPS
    assert np.count_nonzero(np.round(a, 9)) == 3
    assert_same_world(vol, canon)
    assert canon.hu.flags.c_contiguous and not np.shares_memory(canon.hu, vol.hu)
    np.testing.assert_array_equal(from_canonical(canon.hu, canon), vol.hu)


def test_axial_dicom_order_reversed_with_slice_records() -> None:
    vol = volume_with((2, 1, 0), (1, 1, 1))  # DICOM stacking: inferior -> superior
    canon = to_canonical(vol)
    assert canon.meta["reorientation"] == {"perm": [0, 1, 2], "flip": [True, False, False]}
    assert [s.instance_number for s in canon.slices] == [4, 3, 2, 1]
    np.testing.assert_array_equal(canon.hu[0], vol.hu[-1])
    assert canon.index_of_instance(4) == 0


def test_inplace_flip_reuses_memory_and_matches_copy() -> None:
    vol = volume_with((2, 1, 0), (1, -1, -1), shape=(5, 4, 3))
    expected = to_canonical(vol).hu
    original = vol.hu
    canon = to_canonical(vol, inplace=True)
    assert canon.hu is original
    np.testing.assert_array_equal(canon.hu, expected)


def test_sagittal_volume_drops_axial_slice_records() -> None:
    vol = volume_with((0, 2, 1), (1, -1, 1))  # slices along x: a sagittal series
    canon = to_canonical(vol)
    assert canon.slices == () and canon.meta["source_shape"] == [4, 5, 6]
    assert canon.shape == (5, 6, 4)
    assert_same_world(vol, canon)


def test_oblique_picks_dominant_axes() -> None:
    t = np.deg2rad(20)
    rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])  # axial-ish, tilted 20 deg
    reo = canonical_transform(affine)
    assert reo.perm == (0, 1, 2) and reo.flip == (True, False, False)


def test_canonical_volume_is_unchanged() -> None:
    vol = volume_from_arrays(np.arange(24, dtype=np.int16).reshape(2, 3, 4), (2.0, 1.0, 1.0))
    canon = to_canonical(vol)
    assert canonical_transform(vol.affine).is_identity
    np.testing.assert_array_equal(canon.hu, vol.hu)
    np.testing.assert_array_equal(canon.affine, vol.affine)
