"""Finding the image files of a study, reading their headers, splitting and choosing a series.

Defined behaviours (each tested in tests/io/test_dicom_series.py):

* non-DICOM, unreadable or truncated files, files without PixelData, colour images, images without
  ImagePositionPatient/ImageOrientationPatient, multi-frame files without functional groups: skipped
  with a warning;
* multi-frame images with functional groups (Enhanced CT, Legacy Converted Enhanced CT, ...): one
  :class:`Header` per frame, read from the per-frame and shared functional groups
  (:mod:`cspine.io.dicom_enhanced`); from there on a frame is a slice like any other;
* localizers (ImageType contains LOCALIZER) and secondary captures (SOP class 1.2.840.10008.5.1.4.1.1.7*):
  ignored with a warning;
* series are split by StudyInstanceUID, SeriesInstanceUID, SeriesNumber, image size *and* orientation
  (real files share one UID across orientations); empty UIDs (anonymised files) are one group;
* the chosen series is the axial series of the wanted modality (CT) with the most images, else the
  largest series of that modality (with a warning); images with an empty Modality count as CT (with a
  warning) when no image says CT; no series of that modality is a :class:`DicomError` (the MR folders of
  ../shared/data/dicom-edge-cases get it).
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cspine.errors import DicomError

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_SEQ_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
#: Two orientations whose direction cosines differ by less than this are the same orientation.
ORIENTATION_TOL = 1e-3


@dataclass(frozen=True)
class Header:
    """The facts of one image file that series building needs (no patient identifiers)."""

    path: str
    syntax: str
    modality: str
    study_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    sop_instance_uid: str
    instance_number: int | None
    image_type: tuple[str, ...]
    ipp: tuple[float, float, float]
    iop: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float] | None
    rows: int
    cols: int
    bits_stored: int
    signed: bool
    slope: float
    intercept: float
    slice_thickness: float | None
    frame_of_reference: str
    warnings: tuple[str, ...] = ()
    #: Frame index (0-based) in a multi-frame file; None for a single-frame image.
    frame: int | None = None

    @property
    def image_key(self) -> tuple[str, int | None]:
        """Identifies one image: its SOPInstanceUID and, in a multi-frame file, its frame."""
        return self.sop_instance_uid, self.frame

    @property
    def where(self) -> str:
        """The file, and the frame in a multi-frame file, for messages."""
        return self.path if self.frame is None else f"{self.path} (frame {self.frame + 1})"

    @property
    def normal(self) -> np.ndarray:
        row, col = np.asarray(self.iop[:3]), np.asarray(self.iop[3:])
        return np.cross(row, col)


@dataclass
class ScanResult:
    """Headers of usable images and the files skipped, by reason."""

    headers: list[Header] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, path: str) -> None:
        self.skipped.setdefault(reason, []).append(path)


def list_files(source: str | Path | Sequence[str | Path]) -> list[str]:
    """All files of a folder (recursive, hidden files excluded), or the given list of files."""
    if isinstance(source, (str, Path)):
        root = Path(source)
        if root.is_file():
            return [str(root)]
        if not root.is_dir():
            raise DicomError("no such file or folder", root)
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [os.path.join(dirpath, f) for f in sorted(filenames) if not f.startswith(".")]
        if not files:
            raise DicomError("the folder holds no files", root)
        return files
    files = [str(p) for p in source]
    if not files:
        raise DicomError("no files given")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DicomError(f"{len(missing)} of the given files do not exist (first: {missing[0]})")
    return files


def _floats(value: object, n: int) -> tuple[float, ...] | None:
    try:
        out = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _pixels_truncated(path: str, ds: object) -> bool:
    """Whether the (deferred) PixelData of ``ds`` runs past the end of the file."""
    raw = ds._dict.get(0x7FE00010)  # type: ignore[attr-defined]
    size = os.path.getsize(path)
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    if tell is None or length is None:
        return False
    if length != 0xFFFFFFFF:  # native: the value must fit in the file
        return tell + length > size
    with open(path, "rb") as f:  # encapsulated: the fragments end with a sequence delimiter
        f.seek(max(tell, size - 8))
        if f.read() == _SEQ_DELIMITER:  # the usual case: it is the last thing in the file
            return False
        f.seek(max(tell, size - 65536))  # trailing padding elements may follow it
        return _SEQ_DELIMITER not in f.read()


def _pixel_module_problem(ds: object, get, n_frames: int) -> str | None:  # noqa: ANN001
    """What makes the Image Pixel module unusable (a decoder would fail, or crash, on it), or None."""
    rows, cols = _int(get("Rows")), _int(get("Columns"))
    if not rows or not cols or rows < 0 or cols < 0:
        return f"invalid image size (Rows {get('Rows')}, Columns {get('Columns')})"
    bits_alloc, bits_stored = _int(get("BitsAllocated")), _int(get("BitsStored"))
    if bits_alloc not in (8, 16, 32):
        return f"BitsAllocated {bits_alloc} is not 8, 16 or 32 (missing or damaged Image Pixel module)"
    if bits_stored is not None and not 0 < bits_stored <= bits_alloc:
        return f"BitsStored {bits_stored} does not fit BitsAllocated {bits_alloc}"
    if _int(get("PixelRepresentation")) not in (None, 0, 1):
        return f"PixelRepresentation {get('PixelRepresentation')} is not 0 or 1"
    raw = ds._dict.get(0x7FE00010)  # type: ignore[attr-defined]
    length = getattr(raw, "length", None)
    if length is not None and length != 0xFFFFFFFF:  # native: the value holds every frame
        expected = rows * cols * (bits_alloc // 8) * max(1, n_frames)
        if length < expected:
            return (f"pixel data holds {length} bytes, Rows x Columns x frames need {expected} (damaged "
                    "header or truncated data)")
    return None


_INT_VRS = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}


def _fast_getter(ds: object):  # noqa: ANN202 - returns get(keyword, default)
    """A ``get(keyword, default)`` for plain header values that converts the raw bytes itself.

    pydicom's ``Dataset.get`` costs ~0.1 ms per element (value validation hooks), more than parsing
    the file; for the numbers, codes and UIDs that series building needs, decoding the raw bytes is
    enough. Anything unusual falls back to ``Dataset.get``. The tests check both give equal headers.
    """
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement

    raw_dict = ds._dict  # type: ignore[attr-defined]

    def get(keyword: str, default: object = None) -> object:
        tag = tag_for_keyword(keyword)
        elem = raw_dict.get(tag)
        if elem is None:
            return default
        if not isinstance(elem, RawDataElement) or elem.value is None:
            return ds.get(keyword, default)  # type: ignore[attr-defined]
        try:
            vr = elem.VR or dictionary_VR(tag)
            if vr in _INT_VRS:
                fmt = ("<" if elem.is_little_endian else ">") + _INT_VRS[vr]
                vals = struct.unpack(fmt * (len(elem.value) // struct.calcsize(fmt)), elem.value)
                return vals[0] if len(vals) == 1 else list(vals)
            if vr not in ("CS", "DS", "IS", "UI"):
                return ds.get(keyword, default)  # type: ignore[attr-defined]
            parts = [p.strip(" \x00") for p in elem.value.decode("ascii").split("\\")]
        except (UnicodeDecodeError, struct.error, KeyError):
            return ds.get(keyword, default)  # type: ignore[attr-defined]
        return parts[0] if len(parts) == 1 else parts

    return get


def _not_dicom(path: str, reason: str) -> str:
    from cspine.io.archives import is_archive

    return "an archive (unpack it first)" if is_archive(path) else reason


def read_header(path: str, *, fast: bool = True) -> Header | list[Header] | tuple[str, str]:
    """The :class:`Header` of one file (a list of them, one per frame, for a multi-frame file), or
    ``(skip reason, path)`` when it cannot be used."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                ds = pydicom.dcmread(path, defer_size=1024)
            except InvalidDicomError:
                ds = pydicom.dcmread(path, defer_size=1024, force=True)
                if "Rows" not in ds or "SOPClassUID" not in ds:
                    return _not_dicom(path, "not a DICOM file"), path
        except Exception:  # pydicom raises many kinds on garbage  # noqa: BLE001
            return _not_dicom(path, "not a DICOM file or truncated header"), path
        try:
            get = _fast_getter(ds) if fast else ds.get
            if "PixelData" not in ds:
                # pydicom drops a PixelData element cut off by the end of the file
                with open(path, "rb") as f:
                    cut = b"\xe0\x7f\x10\x00" in f.read()
                return ("truncated pixel data" if cut else "no PixelData (not an image)"), path
            image_type = tuple(str(v).strip().upper() for v in (get("ImageType") or ()))
            if isinstance(get("ImageType"), str):
                image_type = (str(get("ImageType")).strip().upper(),)
            sop_class = str(get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
            if "LOCALIZER" in image_type:
                return "localizer (ImageType LOCALIZER)", path
            if sop_class.startswith(SECONDARY_CAPTURE_PREFIX):
                return "secondary capture", path
            n_frames = _int(get("NumberOfFrames")) or 1
            if (_int(get("SamplesPerPixel")) or 1) != 1:
                return "colour image", path
            ipp = _floats(get("ImagePositionPatient"), 3)
            iop = _floats(get("ImageOrientationPatient"), 6)
            if n_frames > 1:
                ipp, iop = ipp or (0.0, 0.0, 0.0), iop or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # per frame below
            if ipp is None or iop is None:
                return "no ImagePositionPatient/ImageOrientationPatient", path
            if _pixels_truncated(path, ds):
                return "truncated pixel data", path
            problem = _pixel_module_problem(ds, get, n_frames)
            if problem is not None:
                return problem, path
            slope, intercept = get("RescaleSlope", None), get("RescaleIntercept", None)
            if slope not in (None, "") and float(slope) == 0.0:
                return "RescaleSlope 0 (every pixel would read as the intercept)", path
            thickness = get("SliceThickness", None)
            header = Header(
                path=path,
                syntax=str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")),
                modality=str(get("Modality", "") or "").upper(),
                study_uid=str(get("StudyInstanceUID", "") or ""),
                series_uid=str(get("SeriesInstanceUID", "") or ""),
                series_number=_int(get("SeriesNumber")),
                series_description=str(get("SeriesDescription", "") or ""),
                sop_instance_uid=str(get("SOPInstanceUID", "")
                                     or ds.file_meta.get("MediaStorageSOPInstanceUID", "") or ""),
                instance_number=_int(get("InstanceNumber")),
                image_type=image_type,
                ipp=ipp,  # type: ignore[arg-type]
                iop=iop,  # type: ignore[arg-type]
                pixel_spacing=_floats(get("PixelSpacing"), 2),  # type: ignore[arg-type]
                rows=int(get("Rows")),
                cols=int(get("Columns")),
                bits_stored=_int(get("BitsStored")) or 0,
                signed=_int(get("PixelRepresentation")) == 1,
                slope=1.0 if slope in (None, "") else float(slope),
                intercept=0.0 if intercept in (None, "") else float(intercept),
                slice_thickness=None if thickness in (None, "") else float(thickness),
                frame_of_reference=str(get("FrameOfReferenceUID", "") or ""),
                warnings=tuple(dict.fromkeys(str(w.message)[:160] for w in caught)),
            )
            if n_frames > 1:
                from cspine.io.dicom_enhanced import frame_headers

                return frame_headers(ds, header, n_frames)
        except Exception as exc:  # a broken element deep in the header  # noqa: BLE001
            return f"unreadable header ({type(exc).__name__})", path
    return header


def scan(files: Sequence[str], map_fn=map) -> ScanResult:  # noqa: ANN001 - map or Pool.imap
    """Read the headers of ``files`` (with ``map_fn``, e.g. a process pool's ``imap``)."""
    result = ScanResult()
    for item in map_fn(read_header, files):
        if isinstance(item, Header):
            result.headers.append(item)
        elif isinstance(item, list):  # the frames of a multi-frame file
            result.headers.extend(item)
        else:
            result.skip(*item)
    return result


@dataclass
class SeriesGroup:
    """The images of one series in one orientation."""

    headers: list[Header]

    @property
    def first(self) -> Header:
        return self.headers[0]

    @property
    def orientation(self) -> str:
        """``axial``, ``coronal`` or ``sagittal`` by the dominant axis of the slice normal."""
        n = np.abs(self.first.normal)
        return ("sagittal", "coronal", "axial")[int(np.argmax(n))]

    def describe(self) -> str:
        h = self.first
        num = "?" if h.series_number is None else h.series_number
        desc = f" '{h.series_description}'" if h.series_description else ""
        return (f"series {num}{desc} ({h.modality or 'no modality'}, {self.orientation}, "
                f"{len(self.headers)} images, UID {h.series_uid or '(empty)'})")

    def summary(self) -> dict[str, object]:
        h = self.first
        return {"SeriesInstanceUID": h.series_uid or None, "SeriesNumber": h.series_number,
                "SeriesDescription": h.series_description, "Modality": h.modality,
                "orientation": self.orientation, "n_images": len(self.headers)}


def split_series(headers: Sequence[Header]) -> list[SeriesGroup]:
    """Split headers by study UID, series UID, SeriesNumber, image size, pixel spacing, frame of
    reference and orientation: the images of one group can be stacked into one volume."""
    groups: list[tuple[tuple[object, ...], np.ndarray, list[Header]]] = []
    for h in headers:
        spacing = None if h.pixel_spacing is None else tuple(round(float(v), 4) for v in h.pixel_spacing)
        key = (h.study_uid, h.series_uid, h.series_number, h.rows, h.cols, spacing, h.frame_of_reference)
        iop = np.asarray(h.iop)
        for gkey, giop, members in groups:
            if gkey == key and np.max(np.abs(giop - iop)) < ORIENTATION_TOL:
                members.append(h)
                break
        else:
            groups.append((key, iop, [h]))
    return [SeriesGroup(members) for _, _, members in groups]


def choose_series(groups: Sequence[SeriesGroup], modality: str | None, where: str
                  ) -> tuple[SeriesGroup, str, list[str]]:
    """Pick the series to read: axial, of ``modality``, with the most images.

    Returns the group, a sentence saying which was chosen and why, and warnings.
    """
    warns: list[str] = []
    if not groups:
        raise DicomError("no usable image files", where)
    wanted = [g for g in groups if modality is None or g.first.modality == modality.upper()]
    if not wanted and modality is not None:
        # Over-zealous anonymisers blank Modality too: such images are read, with a warning.
        wanted = [g for g in groups if not g.first.modality]
        if wanted:
            warns.append(f"no image says Modality {modality}; assumed the images with an empty Modality "
                         f"are {modality}")
    if not wanted:
        found = "; ".join(g.describe() for g in groups)
        raise DicomError(f"no {modality} series found (found: {found}); cspine reads CT studies "
                         "(pass modality=None to read another modality's geometry anyway)", where)
    axial = [g for g in wanted if g.orientation == "axial"]
    pool = axial or wanted
    best = max(pool, key=lambda g: (len(g.headers), -(g.first.series_number or 0)))
    kind = f"axial {modality} " if axial and modality else ("axial " if axial else "")
    why = f"chose {best.describe()}: the {kind}series with the most images"
    if len(groups) > 1:
        others = [g.describe() for g in groups if g is not best]
        why += f"; ignored {len(others)} other(s): " + "; ".join(others)
    if not axial:
        warns.append(f"no axial series; {why}")
    return best, why, warns
