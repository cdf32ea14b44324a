"""Radiograph datasets: class folders and CSVs, stratified grouped splits, leakage check, bad input."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _xray_toy import write_toy_dataset
from PIL import Image

from cspine.errors import DatasetError, ImageError
from cspine.models.radiograph import TORCHVISION_MEAN, TORCHVISION_STD
from cspine.xray.data import (
    check_leakage,
    find_near_duplicates,
    load_dataset,
    load_splits,
    make_splits,
    save_splits,
)
from cspine.xray.transforms import Augment, augment, normalize, preprocess


def test_class_folders_ordered_and_split_stratified(tmp_path: Path) -> None:
    root = write_toy_dataset(tmp_path / "d", per_class=20)
    data = load_dataset(root)
    assert data.class_names == ("normal", "fracture", "dislocation")  # labels.XRAY_CLASSES order
    splits = make_splits(data, seed=1)
    assert sorted(i for s in splits.values() for i in s) == list(range(60))
    for s, n in (("train", 14), ("val", 3), ("test", 3)):
        counts = Counter(data.items[i].label for i in splits[s])
        assert counts == {0: n, 1: n, 2: n}, (s, counts)
    save_splits(tmp_path / "splits.json", data, splits, 1, (0.7, 0.15, 0.15))
    assert load_splits(tmp_path / "splits.json", data) == splits


def test_csv_grouped_by_patient(tmp_path: Path) -> None:
    root = write_toy_dataset(tmp_path / "d", per_class=12)
    lines = ["path,label,patient_id"]
    for c in ("normal", "fracture", "dislocation"):
        for i, p in enumerate(sorted((root / c).glob("*.png"))):
            lines.append(f"{p.relative_to(root).as_posix()},{c},{c}-{i // 3}")  # 3 images per patient
    (root / "list.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset(root / "list.csv")
    assert len(data.items) == 36 and data.items[0].patient_id == "normal-0"
    splits = make_splits(data, seed=0)
    owner: dict[str, str] = {}
    for s, idx in splits.items():
        for i in idx:
            pid = data.items[i].patient_id
            assert owner.setdefault(pid, s) == s  # a patient never spans two splits
    assert all(splits[s] for s in splits)


def test_planted_duplicates_found_and_dropped(tmp_path: Path) -> None:
    root = write_toy_dataset(tmp_path / "d", per_class=10, seed=3)
    a_src, b_src = root / "fracture" / "fracture_000.png", root / "normal" / "normal_004.png"
    # plant: a brightened JPEG re-encode of one image and a resized PNG copy of another
    a = np.asarray(Image.open(a_src)).astype(np.int16)
    bright = np.clip(a + 6, 0, 255).astype(np.uint8)
    Image.fromarray(bright).save(root / "fracture" / "zz_copy.jpg", quality=90)
    Image.open(b_src).resize((80, 80)).save(root / "normal" / "zz_copy2.png")
    data = load_dataset(root)
    idx = {data.key(it): i for i, it in enumerate(data.items)}
    ia, ia2 = idx["fracture/fracture_000.png"], idx["fracture/zz_copy.jpg"]
    ib, ib2 = idx["normal/normal_004.png"], idx["normal/zz_copy2.png"]
    rest = [i for i in range(len(data.items)) if i not in (ia, ia2, ib, ib2)]
    splits = {"train": [ia, ib, *rest[:18]], "val": [ib2, *rest[18:23]], "test": [ia2, *rest[23:]]}
    pairs = find_near_duplicates(data, splits, max_distance=4)
    found = {frozenset((p.a, p.b)) for p in pairs}
    assert frozenset((ia, ia2)) in found and frozenset((ib, ib2)) in found
    kept, pairs2, dropped = check_leakage(data, splits, 4, drop=True)
    assert ia2 in dropped and ib2 in dropped  # the later split's copy goes, train keeps its image
    assert ia in kept["train"] and ib in kept["train"]
    assert ia2 not in kept["test"] and ib2 not in kept["val"]
    assert set(dropped) <= set(splits["val"]) | set(splits["test"])


def test_duplicate_across_splits_forced(tmp_path: Path) -> None:
    root = write_toy_dataset(tmp_path / "d", per_class=4, seed=5)
    data = load_dataset(root)
    src = data.items[0].path
    shutil.copy(src, src.parent / "dup.png")
    data = load_dataset(root)
    i_src = next(i for i, it in enumerate(data.items) if it.path == src)
    i_dup = next(i for i, it in enumerate(data.items) if it.path.name == "dup.png")
    others = [i for i in range(len(data.items)) if i not in (i_src, i_dup)]
    splits = {"train": [i_src, *others[:6]], "val": others[6:9], "test": [i_dup, *others[9:]]}
    pairs = find_near_duplicates(data, splits)
    assert any({p.a, p.b} == {i_src, i_dup} and p.distance == 0 for p in pairs)


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    root = write_toy_dataset(tmp_path / "d", per_class=3)
    (root / "empty_class").mkdir()
    with pytest.raises(DatasetError, match="empty_class.*no images"):
        load_dataset(root)
    single = write_toy_dataset(tmp_path / "s", per_class=3, classes=("normal",))
    with pytest.raises(DatasetError, match="single class"):
        load_dataset(single)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "bad.csv").write_text("file,class\nx.png,normal\n")
    with pytest.raises(DatasetError, match="path,label"):
        load_dataset(tmp_path / "bad.csv")
    (tmp_path / "gone.csv").write_text("path,label\nnothere.png,normal\nalso.png,fracture\n")
    with pytest.raises(DatasetError, match="nothere.png"):
        load_dataset(tmp_path / "gone.csv")
    broken = write_toy_dataset(tmp_path / "b", per_class=3)
    (broken / "fracture" / "corrupt.png").write_bytes(b"\x89PNG garbage")
    data = load_dataset(broken)
    with pytest.raises(ImageError, match="corrupt.png"):
        check_leakage(data, make_splits(data), 4)


def test_transforms_three_channels_and_the_given_normalisation() -> None:
    img = np.zeros((50, 80), np.float32)
    img[:, 40:] = 1.0
    x = preprocess(img, 32, TORCHVISION_MEAN, TORCHVISION_STD)
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, 0, 0].numpy(), [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225],
                               rtol=1e-5)
    np.testing.assert_allclose(x[:, 0, -1].numpy(), [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224,
                                                     (1 - 0.406) / 0.225], rtol=1e-5)
    import torch

    g = torch.from_numpy(0.3 + 0.4 * img[None, :32, 24:56])  # mid-gray: a contrast change shows
    assert torch.equal(augment(g, Augment()), g)  # off by default
    out = augment(g, Augment(enabled=True, max_rotation=10), torch.Generator().manual_seed(0))
    assert out.shape == g.shape and not torch.equal(out, g)
    mirror = Augment(enabled=True, max_rotation=0.0, max_contrast=0.0, p_flip=1.0)
    assert torch.allclose(augment(g, mirror), g.flip(-1), atol=1e-6)  # facing the other way
    assert normalize(g, TORCHVISION_MEAN, TORCHVISION_STD).shape == (3, 32, 32)
    half = normalize(g, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # Lite0's registry normalisation
    torch.testing.assert_close(half, (g.expand(3, -1, -1) - 0.5) / 0.5)
