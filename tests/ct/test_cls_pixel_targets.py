"""In-plane fracture boxes: carried onto the canonical grid, onto each crop, and into the pixel loss."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from test_cls_train import toy_study

from cspine.ct.cls.crops import extract_crops
from cspine.ct.cls.dataset import UNKNOWN, CropDataset, pixel_targets, samples_from_study
from cspine.ct.cls.train import pixel_loss, weighted_bce_loss
from cspine.ct.training_studies import box_regions_of
from cspine.io.orient import to_canonical
from cspine.io.volume import SliceInfo, Volume
from cspine.models.vertebra_classifier import ClsConfig, build_classifier

UID = "1.2.3"


def _stored_volume(flip_rows: bool, flip_cols: bool) -> Volume:
    """A 4-slice 20x30 series as read from DICOM (rows = DICOM rows), in some in-plane orientation."""
    z, y, x = 4, 20, 30
    hu = np.zeros((z, y, x), np.int16)
    affine = np.diag([2.0, 1.0, 1.0, 1.0])  # index (z, y, x) -> LPS: axis 0 along S (below), y, x
    affine[:3, :3] = 0
    affine[2, 0] = -2.0  # slices run superior -> inferior
    affine[1, 1] = -1.0 if flip_rows else 1.0  # rows run posterior -> anterior when flipped
    affine[0, 2] = -1.0 if flip_cols else 1.0  # columns run left -> right when flipped
    slices = tuple(SliceInfo(f"{k + 1}.dcm", k + 1, f"{UID}.{k}") for k in range(z))
    return Volume(hu, affine, slices, {})


@pytest.mark.parametrize("flip_rows,flip_cols", [(False, False), (True, False), (False, True), (True, True)])
def test_boxes_follow_the_image_into_the_canonical_orientation(flip_rows: bool, flip_cols: bool) -> None:
    stored = _stored_volume(flip_rows, flip_cols)
    stored.hu[2, 3:7, 5:12] = 1  # the fractured pixels, as stored (rows 3..6, columns 5..11)
    boxes = pd.DataFrame([{"StudyInstanceUID": UID, "x": 5.0, "y": 3.0, "width": 7.0, "height": 4.0,
                           "slice_number": 3}])
    canon = to_canonical(stored)
    regions = box_regions_of(canon, boxes, UID)
    assert regions is not None and len(regions) == 1
    (z, ((y0, y1, x0, x1),)), = regions.items()
    marked = np.argwhere(canon.hu == 1)
    assert {int(v) for v in marked[:, 0]} == {z}
    assert (y0, y1, x0, x1) == (marked[:, 1].min(), marked[:, 1].max() + 1, marked[:, 2].min(),
                                marked[:, 2].max() + 1)
    assert box_regions_of(canon, boxes.assign(StudyInstanceUID="other"), UID) is None


def test_pixel_targets_mark_the_box_unknowns_and_negatives() -> None:
    study = toy_study(3)
    fractured = [v for v, y in study.labels.items() if y]
    intact = [v for v, y in study.labels.items() if not y]
    assert fractured and intact
    cfg = ClsConfig(backbone="test_resnet", n_slices=6, image_size=32, pixel_head=True)
    crops = extract_crops(study.volume, study.seg, cfg)
    z = sorted(study.box_slices or ())[0]
    regions = {z: ((8, 16, 8, 24),)}  # the upper half of the block on the fractured slice
    name = next(v for v in fractured if z in crops[v].slice_indices)
    t = pixel_targets(crops[name], True, regions, 32)
    i = int(np.flatnonzero(crops[name].slice_indices == z)[0])
    assert t[i].max() == 1 and t[i].sum() > 0 and set(np.unique(t)) == {0, 1}
    rows = np.flatnonzero(t[i].max(axis=1))
    assert rows.max() < 16  # only the upper half of the crop (the box), not the whole slice
    assert not t[np.arange(len(t)) != i].any()
    assert (pixel_targets(crops[name], True, None, 32) == UNKNOWN).all()  # no boxes: nothing is known
    other = next(v for v in intact if v in crops)
    z_other = int(crops[other].slice_indices[2])
    t_other = pixel_targets(crops[other], False, {z_other: ((8, 16, 8, 24),)}, 32)
    assert set(np.unique(t_other[2])) == {0, UNKNOWN}  # a box seen from an intact crop: not "no fracture"
    assert not t_other[np.arange(len(t_other)) != 2].any()
    assert not pixel_targets(crops[other], False, {}, 32).any()  # boxes known, none here: all negative


def test_pixel_loss_ignores_unknown_cells_and_learns_where_the_box_is() -> None:
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    target[0, 0, :4, :4] = 1  # top-left cell positive
    target[0, 0, 4:, 4:] = UNKNOWN  # bottom-right cell not known
    loss = pixel_loss(logits, target)
    loss.backward()
    g = logits.grad[0, 0]
    assert g[0, 0] < 0 and g[0, 1] > 0 and g[1, 0] > 0 and g[1, 1] == 0
    assert float(pixel_loss(logits, torch.full_like(target, UNKNOWN)).detach()) == 0.0


def test_a_classifier_with_a_pixel_head_trains_on_crops_with_boxes() -> None:
    torch.manual_seed(0)
    cfg = ClsConfig(backbone="test_resnet", n_slices=6, image_size=32, gru_hidden=8, attn_dim=8,
                    dropout=0.0, pixel_head=True)
    studies = [toy_study(s) for s in range(3)]
    samples = []
    for st in studies:  # boxes: the whole block on each boxed slice
        regions = {z: ((8, 24, 8, 24),) for z in st.box_slices or ()}
        samples += samples_from_study(type(st)(st.uid, st.volume, st.seg, st.labels, st.box_slices, regions),
                                      cfg)
    ds = CropDataset(samples, augment=True, seed=0)
    batch = [torch.stack([ds[i][j] for i in range(len(ds))]) for j in range(4)]
    x, y, sy, pix = batch
    assert pix.shape == (len(ds), 6, 32, 32) and pix.dtype == torch.uint8 and (pix == 1).any()
    model = build_classifier(cfg)
    out = model(x)
    assert out.pixel_logits is not None and out.pixel_logits.shape == (len(ds), 6, 4, 4)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(12):
        loss = pixel_loss(model(x).pixel_logits, pix)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]
    full = weighted_bce_loss(model(x), y, sy, 1.0, pix, 5.0)
    assert float(full.detach()) > float(weighted_bce_loss(model(x), y, sy, 1.0).detach())  # + the pixel term
