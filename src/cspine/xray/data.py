"""Radiograph datasets: a folder per class or a CSV; stratified (grouped) splits; leakage check.

A dataset is either

* a folder with one sub-folder per class (``normal/``, ``fracture/``, ...): the class names are the
  folder names (in ``labels.XRAY_CLASSES`` order when they are those, else sorted), or
* a CSV with columns ``path,label[,patient_id]`` (paths relative to the CSV's folder, or absolute).
  A folder holding a ``labels.csv`` with those columns is read as that CSV (so the patient ids of
  ``cspine.synth.xray.generate_xray_dataset`` group the split).

The split is stratified by class, 70/15/15 by default, and grouped by ``patient_id`` when given
(all images of a patient fall in one split). It is saved as ``splits.json`` (paths relative to the
dataset root) so evaluation sees exactly the held-out images. Because public radiograph sets
hold near-identical images of the same patient, :func:`find_near_duplicates` compares perceptual
hashes across splits and reports pairs that would leak; ``drop_leaking`` removes them from
validation/test.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cspine.errors import DatasetError, ImageError
from cspine.fileio import read_json, write_json
from cspine.io.images import DEFAULT_MAX_PIXELS, image_shape, is_image_file, read_image
from cspine.labels import XRAY_CLASSES

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLITS_FILE = "splits.json"
LABELS_CSV = "labels.csv"


@dataclass(frozen=True)
class XrayItem:
    """One radiograph: its file, class index and (optional) patient id."""

    path: Path
    label: int
    patient_id: str | None = None


@dataclass(frozen=True)
class XrayDataset:
    """All radiographs of a dataset, with its root (for relative paths), class names and the largest image
    it reads (``max_pixels``, see :func:`cspine.io.images.read_image`)."""

    root: Path
    items: tuple[XrayItem, ...]
    class_names: tuple[str, ...]
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def key(self, item: XrayItem) -> str:
        """The item's path relative to the root (POSIX), as stored in ``splits.json``."""
        try:
            return item.path.resolve().relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return item.path.resolve().as_posix()

    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items], dtype=np.int64)


def _order_classes(names: Sequence[str]) -> tuple[str, ...]:
    if set(names) <= set(XRAY_CLASSES):
        return tuple(c for c in XRAY_CLASSES if c in names)
    return tuple(sorted(names))


def _check_classes(counts: Counter, where: Path) -> None:
    if len(counts) < 2:
        raise DatasetError(
            f"holds a single class ({', '.join(counts) or 'none'}); a classifier needs at least two "
            "(e.g. normal/, fracture/, dislocation/)", where)


def load_dataset(source: str | Path, class_names: Sequence[str] | None = None,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> XrayDataset:
    """Read a class-folder dataset or a ``path,label[,patient_id]`` CSV.

    Args:
        source: the dataset folder or CSV file.
        class_names: the expected class order (e.g. a trained model's); images of other classes are
            an error. ``None`` = from the data.
        max_pixels: the largest image the dataset's readers accept (checked when images are read, or
            by :func:`check_images`).

    Raises:
        DatasetError: missing source, empty class folder, unknown label, fewer than two classes.
    """
    data = _load_dataset(Path(source), class_names)
    return dataclasses.replace(data, max_pixels=max_pixels)


def check_images(data: XrayDataset) -> None:
    """Read every image's header (no pixel is decoded): refuse a dataset with an unreadable image or one
    larger than ``data.max_pixels`` before any work starts.

    Raises:
        ImageError: naming the first bad image and how many more there are.
    """
    bad: list[ImageError] = []
    for item in data.items:
        try:
            image_shape(item.path, data.max_pixels)
        except ImageError as exc:
            bad.append(exc)
    if bad:
        more = f" ({len(bad) - 1} more image(s) of the dataset fail too)" if len(bad) > 1 else ""
        raise ImageError(f"{bad[0]}{more}")


def _load_dataset(source: Path, class_names: Sequence[str] | None) -> XrayDataset:
    if not source.exists():
        raise DatasetError("dataset not found (expected a folder per class or a CSV)", source)
    if source.is_file():
        return _from_csv(source, class_names)
    subdirs = sorted(d for d in source.iterdir() if d.is_dir() and not d.name.startswith("."))
    if _is_labels_csv(source / LABELS_CSV):
        # e.g. cspine's synthetic radiographs: class folders plus labels.csv with patient ids,
        # which the split needs to keep a patient's exposures together
        return _from_csv(source / LABELS_CSV, class_names)
    if not subdirs:
        raise DatasetError("has no class sub-folders (e.g. normal/, fracture/, dislocation/) and no "
                           f"{LABELS_CSV}", source)
    files: dict[str, list[Path]] = {}
    for d in subdirs:
        found = sorted(p for p in d.rglob("*") if is_image_file(p))
        if not found:
            raise DatasetError("class folder holds no images (.png/.jpg/.tif/.dcm); remove it or add "
                               "images", d)
        files[d.name] = found
    names = tuple(class_names) if class_names is not None else _order_classes(list(files))
    unknown = set(files) - set(names)
    if unknown:
        raise DatasetError(f"has class folders {sorted(unknown)} that the model does not know "
                           f"(its classes: {list(names)})", source)
    _check_classes(Counter({k: len(v) for k, v in files.items()}), source)
    items = tuple(XrayItem(p, names.index(c)) for c in names for p in files.get(c, []))
    return XrayDataset(source, items, names)


def _is_labels_csv(path: Path) -> bool:
    if not path.is_file():
        return False
    with open(path, encoding="utf-8-sig") as f:
        header = [c.strip() for c in f.readline().strip().split(",")]
    return "path" in header and "label" in header


def _from_csv(path: Path, class_names: Sequence[str] | None) -> XrayDataset:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = [{(k or "").strip(): (v or "") for k, v in r.items()} for r in reader]
            fields = [c.strip() for c in reader.fieldnames or []]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot be read as CSV ({exc})", path) from exc
    if not rows or "path" not in fields or "label" not in fields:
        raise DatasetError("must be a CSV with a header path,label[,patient_id] and at least one row", path)
    root = path.parent
    counts: Counter = Counter(r["label"].strip() for r in rows)
    names = tuple(class_names) if class_names is not None else _order_classes(list(counts))
    unknown = set(counts) - set(names)
    if unknown:
        raise DatasetError(f"has labels {sorted(unknown)} outside the classes {list(names)}", path)
    _check_classes(counts, path)
    items = []
    for i, r in enumerate(rows, start=2):
        p = Path(r["path"].strip())
        p = p if p.is_absolute() else root / p
        if not p.is_file():
            raise DatasetError(f"line {i}: image {p} does not exist", path)
        pid = (r.get("patient_id") or "").strip() or None
        items.append(XrayItem(p, names.index(r["label"].strip()), pid))
    return XrayDataset(root, tuple(items), names)


# --- splits -----------------------------------------------------------------------------------

def make_splits(data: XrayDataset, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                seed: int = 0) -> dict[str, list[int]]:
    """Stratified train/val/test item indices; grouped by patient when patient ids are given.

    Images without a patient id are their own group. Each group is assigned as a whole, class by
    class (a group's class is its most frequent label), so the class mix of every split follows
    ``fractions`` as closely as the group sizes allow.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(data.items):
        groups[it.patient_id if it.patient_id is not None else f"__image{i}"].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for g, idx in groups.items():
        label = Counter(data.items[i].label for i in idx).most_common(1)[0][0]
        by_class[label].append(g)
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for label in sorted(by_class):
        gs = sorted(by_class[label])
        rng.shuffle(gs)
        total = sum(len(groups[g]) for g in gs)
        filled = dict.fromkeys(SPLITS, 0)
        for g in gs:
            # put the group into the split that is least filled relative to its target share of this
            # class (with few groups this still gives every split one before train takes more)
            fill = {s: filled[s] / (fractions[k] * total) if fractions[k] > 0 else np.inf
                    for k, s in enumerate(SPLITS)}
            s = min(SPLITS, key=lambda s: (fill[s], SPLITS.index(s)))
            out[s].extend(groups[g])
            filled[s] += len(groups[g])
    return {s: sorted(v) for s, v in out.items()}


def save_splits(path: str | Path, data: XrayDataset, splits: dict[str, list[int]], seed: int,
                fractions: tuple[float, float, float], dropped: Sequence[str] = ()) -> None:
    """Write ``splits.json``: the class names and each split's image paths (relative to the root)."""
    write_json(path, {
        "class_names": list(data.class_names), "seed": seed, "fractions": list(fractions),
        "root": str(data.root.resolve()),
        **{s: [data.key(data.items[i]) for i in splits[s]] for s in SPLITS},
        "dropped_near_duplicates": list(dropped),
    })


def load_splits(path: str | Path, data: XrayDataset) -> dict[str, list[int]]:
    """Map the paths of a ``splits.json`` back to item indices of ``data``.

    Raises:
        DatasetError: the file lists images that ``data`` does not hold.
    """
    path = Path(path)
    doc = read_json(path)
    index = {data.key(it): i for i, it in enumerate(data.items)}
    out = {}
    for s in SPLITS:
        missing = [k for k in doc.get(s, []) if k not in index]
        if missing:
            raise DatasetError(f"lists {len(missing)} {s} images not in the dataset {data.root} "
                               f"(e.g. {missing[0]}); is --data the dataset the model was trained on?", path)
        out[s] = [index[k] for k in doc.get(s, [])]
    return out


# --- near duplicates ---------------------------------------------------------------------------

@dataclass(frozen=True)
class NearDuplicate:
    """Two images in different splits whose perceptual hashes differ by ``distance`` bits."""

    a: int
    b: int
    split_a: str
    split_b: str
    distance: int


def perceptual_hashes(data: XrayDataset, indices: Sequence[int] | None = None,
                      hash_size: int = 8) -> np.ndarray:
    """pHash (DCT) of each image as a boolean ``(N, hash_size**2)`` array."""
    import imagehash
    from PIL import Image

    idx = range(len(data.items)) if indices is None else indices
    out = []
    for i in idx:
        img = read_image(data.items[i].path, data.max_pixels)
        pil = Image.fromarray(np.round(img * 255).astype(np.uint8))
        out.append(imagehash.phash(pil, hash_size=hash_size).hash.ravel())
    return np.asarray(out, dtype=bool).reshape(len(out), hash_size * hash_size)


def find_near_duplicates(data: XrayDataset, splits: dict[str, list[int]], max_distance: int = 4,
                         hashes: np.ndarray | None = None) -> list[NearDuplicate]:
    """Pairs of images in different splits whose pHashes differ by <= ``max_distance`` of 64 bits.

    A distance of 0-4 bits is a re-encoded, resized or slightly cropped copy of the same image;
    such pairs across train/test inflate test accuracy.
    """
    if hashes is None:
        hashes = perceptual_hashes(data)
    where = {i: s for s in SPLITS for i in splits.get(s, [])}
    order = sorted(where)
    h = hashes[order].astype(np.uint8)
    # Hamming distances of all pairs at once: (N, N) = mismatching bits
    dist = (h[:, None, :] != h[None, :, :]).sum(-1) if len(order) <= 3000 else None
    out: list[NearDuplicate] = []
    for ia in range(len(order)):
        row = dist[ia] if dist is not None else (h != h[ia]).sum(-1)
        for ib in np.nonzero(row[ia + 1:] <= max_distance)[0] + ia + 1:
            a, b = order[ia], order[int(ib)]
            if where[a] != where[b]:
                out.append(NearDuplicate(a, b, where[a], where[b], int(row[ib])))
    return out


def drop_leaking(splits: dict[str, list[int]], pairs: Sequence[NearDuplicate]) -> tuple[dict[str, list[int]],
                                                                                         list[int]]:
    """Remove from val/test each image with a near duplicate in an earlier split (train < val < test)."""
    rank = {s: k for k, s in enumerate(SPLITS)}
    drop = set()
    for p in pairs:
        later = p.a if rank[p.split_a] > rank[p.split_b] else p.b
        drop.add(later)
    return {s: [i for i in v if i not in drop] for s, v in splits.items()}, sorted(drop)


def check_leakage(data: XrayDataset, splits: dict[str, list[int]], max_distance: int = 4,
                  drop: bool = False) -> tuple[dict[str, list[int]], list[NearDuplicate], list[int]]:
    """Find near duplicates across splits, warn, and drop them from val/test when ``drop``.

    Returns:
        (the splits, possibly reduced; the pairs found; the dropped item indices).
    """
    pairs = find_near_duplicates(data, splits, max_distance)
    dropped: list[int] = []
    if pairs:
        eg = pairs[0]
        log.warning(
            "%d near-duplicate image pairs across splits (pHash distance <= %d), e.g. %s (%s) ~ %s (%s): "
            "test figures may be inflated by leakage%s", len(pairs), max_distance,
            data.key(data.items[eg.a]), eg.split_a, data.key(data.items[eg.b]), eg.split_b,
            "" if drop else "; use --drop-duplicates to remove them from val/test")
        if drop:
            splits, dropped = drop_leaking(splits, pairs)
            log.warning("dropped %d images from val/test", len(dropped))
    for s in SPLITS:
        if not splits[s]:
            raise DatasetError(f"the {s} split is empty; the dataset is too small for a 70/15/15 split "
                               "(at least a few images per class are needed)", data.root)
    return splits, pairs, dropped
