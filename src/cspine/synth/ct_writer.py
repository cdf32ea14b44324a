"""Write a volume as a CT series the way scanners do: one CT Image Storage file per axial slice.

Varied per study (see :class:`SeriesOptions`): transfer syntax (uncompressed, JPEG lossless
process 14 SV1 ``.4.70`` via GDCM, JPEG 2000 lossless ``.4.90`` via pylibjpeg-openjpeg, RLE),
signed or unsigned pixels with a matching RescaleIntercept, BitsStored 12 or 16, InstanceNumber
running cranio-caudal or the reverse, head-first or feet-first (which mirrors the columns and the
ImageOrientationPatient row direction), a SliceThickness tag that may differ from the real spacing.
Readers must therefore use the geometry (ImagePositionPatient/ImageOrientationPatient), never the
file names or tags that merely look informative. Every encoded slice is decoded again with pydicom
and compared with the stored values: the writer never produces a file that does not round-trip.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.encaps import encapsulate, itemize_fragment
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_dataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
    generate_uid,
)

from cspine.errors import CspineError
from cspine.fileio import atomic_path
from cspine.io.volume import Volume
from cspine.labels import BONE_WINDOW
from cspine.synth import gdcm_codec

#: Encodings by name -> transfer syntax UID.
ENCODINGS: dict[str, str] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "jpeg_lossless": JPEGLosslessSV1,
    "jpeg2000": JPEG2000Lossless,
    "rle": RLELossless,
}
#: Root of the UIDs this writer generates (pydicom's registered root for generated UIDs).
UID_PREFIX = "1.2.826.0.1.3680043.8.498."


@dataclass(frozen=True)
class SeriesOptions:
    """How a series is written (all the ways real scanners differ that a reader must survive)."""

    encoding: str = "explicit"
    signed: bool = False  # PixelRepresentation 1
    intercept: float = -1024.0  # RescaleIntercept; stored = HU - intercept
    bits_stored: int = 16  # 12 or 16
    reverse_numbering: bool = False  # InstanceNumber 1 = the most caudal slice
    feet_first: bool = False  # FFS: columns mirrored, IOP row direction = -x
    slice_thickness: float | None = None  # the SliceThickness tag; None = the true spacing

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.encoding!r}; choose from {sorted(ENCODINGS)}")
        if self.bits_stored not in (12, 16):
            raise ValueError("bits_stored must be 12 or 16")


@dataclass(frozen=True)
class WrittenSeries:
    """Where each canonical slice went: ``paths[k]`` and ``instance_numbers[k]`` for array slice k."""

    paths: tuple[Path, ...]
    instance_numbers: tuple[int, ...]
    flip_x: bool
    series_uid: str
    transfer_syntax: str


def random_options(rng: np.random.Generator, spacing_z: float) -> SeriesOptions:
    """A realistic mix: ~1/3 each of uncompressed, JPEG lossless and JPEG 2000 (a little RLE)."""
    encoding = str(
        rng.choice(
            ["explicit", "jpeg_lossless", "jpeg2000", "implicit", "rle"], p=[0.27, 0.33, 0.30, 0.05, 0.05]
        )
    )
    signed = bool(rng.random() < 0.5)
    intercept = float(rng.choice([0.0, -1024.0])) if signed else -1024.0
    bits = 12 if (not signed or intercept == 0.0) and rng.random() < 0.4 else 16
    thickness = None
    if rng.random() < 0.35:  # the tag says the nominal/reconstruction thickness, not the spacing
        thickness = float(rng.choice([spacing_z * 1.25, spacing_z * 2.0, 2.0, 3.0]))
    return SeriesOptions(
        encoding, signed, intercept, bits, bool(rng.random() < 0.5), bool(rng.random() < 0.15), thickness
    )


def _stored(hu: np.ndarray, opts: SeriesOptions, where: str) -> np.ndarray:
    stored = hu.astype(np.int32) - int(round(opts.intercept))
    if opts.signed:
        lo, hi = (-(1 << (opts.bits_stored - 1)), (1 << (opts.bits_stored - 1)) - 1)
    else:
        lo, hi = 0, (1 << opts.bits_stored) - 1
    if stored.min() < lo or stored.max() > hi:
        raise CspineError(
            f"HU range {hu.min()}..{hu.max()} does not fit {opts.bits_stored} stored bits "
            f"({'signed' if opts.signed else 'unsigned'}, intercept {opts.intercept})",
            where,
        )
    return stored.astype(np.int16 if opts.signed else np.uint16)


def _fits(hu_min: int, hu_max: int, opts: SeriesOptions) -> bool:
    lo, hi = hu_min - opts.intercept, hu_max - opts.intercept
    if opts.signed:
        return -(1 << (opts.bits_stored - 1)) <= lo and hi < (1 << (opts.bits_stored - 1))
    return 0 <= lo and hi < (1 << opts.bits_stored)


def fit_options(opts: SeriesOptions, hu: np.ndarray) -> SeriesOptions:
    """``opts`` with BitsStored 16 when the study's HU range does not fit 12 bits."""
    if _fits(int(hu.min()), int(hu.max()), opts):
        return opts
    from dataclasses import replace

    return replace(opts, bits_stored=16)




def _base_dataset(
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    opts: SeriesOptions,
    shape: tuple[int, int],
    spacing: tuple[float, float, float],
    extra: dict,
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Manufacturer = "cspine synthetic phantom"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PatientID = extra.get("PatientID", study_uid)
    ds.PatientName = ""
    ds.StudyDate = extra.get("StudyDate", "20220101")
    ds.StudyTime = "120000"
    ds.SeriesNumber = int(extra.get("SeriesNumber", 2))
    ds.AcquisitionNumber = 1
    ds.BodyPartExamined = "CSPINE"
    ds.PatientPosition = "FFS" if opts.feet_first else "HFS"
    ds.KVP = "120"
    ds.ConvolutionKernel = extra.get("ConvolutionKernel", "BONE")
    ds.Rows, ds.Columns = shape
    ds.PixelSpacing = [f"{spacing[1]:.6g}", f"{spacing[2]:.6g}"]
    thickness = opts.slice_thickness if opts.slice_thickness is not None else spacing[0]
    ds.SliceThickness = f"{thickness:.6g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = opts.bits_stored
    ds.HighBit = opts.bits_stored - 1
    ds.PixelRepresentation = 1 if opts.signed else 0
    ds.RescaleIntercept = f"{opts.intercept:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = f"{BONE_WINDOW[0]:g}"
    ds.WindowWidth = f"{BONE_WINDOW[1]:g}"
    return ds


def write_ct_series(
    volume: Volume | object,
    folder: str | Path,
    options: SeriesOptions | None = None,
    *,
    study_uid: str | None = None,
    uid_seed: str | int = 0,
    extra: dict | None = None,
    verify: bool = True,
    verify_every: int = 1,
) -> WrittenSeries:
    """Write ``volume`` (a :class:`Volume`, axis 0 = slices, or a ``Phantom``) as ``folder/<N>.dcm``.

    Args:
        volume: The study; its affine gives ImagePositionPatient/ImageOrientationPatient/PixelSpacing.
        folder: Output folder (created). Files are named by InstanceNumber and written atomically.
        options: How to write it (default: uncompressed, unsigned, 16 bits, cranio-caudal, HFS).
        study_uid: StudyInstanceUID (default: generated from ``uid_seed``).
        uid_seed: Entropy for the generated UIDs: the same seed gives the same UIDs.
        extra: Optional tag values (``PatientID``, ``StudyDate``, ``SeriesNumber``, ``ConvolutionKernel``).
        verify: Decode written files with pydicom and compare with the stored values.
        verify_every: Verify every n-th slice (and the last); 1 = all of them.

    Returns:
        A :class:`WrittenSeries` mapping each canonical slice to its file and InstanceNumber.
    """
    plan = _plan_series(volume, folder, options, study_uid, uid_seed, extra, verify, verify_every)
    template = _SeriesTemplate(plan.base, plan.syntax, plan.opts)
    for s in plan.slices:
        template.write(s)
    return plan.written


def write_ct_series_reference(
    volume: Volume | object,
    folder: str | Path,
    options: SeriesOptions | None = None,
    *,
    study_uid: str | None = None,
    uid_seed: str | int = 0,
    extra: dict | None = None,
    verify: bool = True,
    verify_every: int = 1,
) -> WrittenSeries:
    """The reference implementation of :func:`write_ct_series`: one pydicom ``save_as`` per slice.

    Slow and obviously right: each file is a pydicom dataset saved whole (JPEG lossless through GDCM
    from a raw temporary file). :func:`write_ct_series` encodes a series' constant elements once and
    must write byte-identical files; the tests compare the two file by file and ``bench/writer.py``
    times one against the other. Same arguments and result as :func:`write_ct_series`.

    Example:
        >>> from cspine.synth.phantom import make_phantom  # doctest: +SKIP
        >>> write_ct_series_reference(make_phantom(0, size=64), "out/ref")  # doctest: +SKIP
    """
    plan = _plan_series(volume, folder, options, study_uid, uid_seed, extra, verify, verify_every)
    for s in plan.slices:
        ds = plan.base.copy()
        ds.SOPInstanceUID = s.sop_uid
        ds.InstanceNumber = s.number
        ds.ImagePositionPatient = s.ipp
        ds.SliceLocation = s.location
        _write_slice_reference(ds, s.stored, plan.syntax, s.path, s.verify)
    return plan.written


@dataclass(frozen=True)
class _Slice:
    """What differs between the files of one series."""

    sop_uid: str
    number: int  # InstanceNumber
    ipp: list[str]  # ImagePositionPatient
    location: str  # SliceLocation
    stored: np.ndarray  # the stored pixel values, (rows, cols), C-contiguous
    path: Path
    verify: bool


@dataclass(frozen=True)
class _Plan:
    base: Dataset  # the elements every slice shares
    syntax: str
    opts: SeriesOptions
    slices: list[_Slice]
    written: WrittenSeries


def _plan_series(
    volume: Volume | object,
    folder: str | Path,
    options: SeriesOptions | None,
    study_uid: str | None,
    uid_seed: str | int,
    extra: dict | None,
    verify: bool,
    verify_every: int,
) -> _Plan:
    if not isinstance(volume, Volume):
        volume = volume.volume()  # a Phantom
    opts = fit_options(options or SeriesOptions(), volume.hu)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    entropy = [str(uid_seed)]
    study_uid = study_uid or generate_uid(UID_PREFIX, entropy + ["study"])
    series_uid = generate_uid(UID_PREFIX, entropy + [study_uid, "series"])
    frame_uid = generate_uid(UID_PREFIX, entropy + [study_uid, "frame"])
    n, rows, cols = volume.hu.shape
    spacing = volume.spacing
    a = volume.affine
    row_dir = a[:3, 2] / np.linalg.norm(a[:3, 2])  # direction of increasing column index
    col_dir = a[:3, 1] / np.linalg.norm(a[:3, 1])  # direction of increasing row index
    if opts.feet_first:
        row_dir = -row_dir
    base = _base_dataset(study_uid, series_uid, frame_uid, opts, (rows, cols), spacing, extra or {})
    base.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
    syntax = ENCODINGS[opts.encoding]
    # Checked for the whole study before the first file: never leave half a series behind.
    stored = _stored(volume.hu, opts, str(folder))
    if opts.feet_first:  # FFS: the columns run the other way
        stored = np.ascontiguousarray(stored[:, :, ::-1])
    first_col = cols - 1 if opts.feet_first else 0
    slices = []
    for k in range(n):
        number = n - k if opts.reverse_numbering else k + 1
        ipp = a[:3, :3] @ np.array([k, 0, first_col], dtype=np.float64) + a[:3, 3]
        slices.append(
            _Slice(
                sop_uid=generate_uid(UID_PREFIX, entropy + [series_uid, str(k)]),
                number=number,
                ipp=[f"{v:.4f}" for v in ipp],
                location=f"{ipp[2]:.4f}",
                stored=stored[k],
                path=folder / f"{number}.dcm",
                verify=verify and (k % max(1, verify_every) == 0 or k == n - 1),
            )
        )
    written = WrittenSeries(
        tuple(s.path for s in slices), tuple(s.number for s in slices), opts.feet_first, series_uid, syntax
    )
    return _Plan(base, syntax, opts, slices, written)


# The tags that change from slice to slice; everything else in a series' files is the same bytes.
_MEDIA_SOP_INSTANCE_UID = 0x00020003
_VARYING = (0x00080018, 0x00200013, 0x00200032, 0x00201041, 0x7FE00010)  # SOPInstanceUID .. PixelData
_PIXEL_DATA = 0x7FE00010
# GDCM's writer adds these Type 2 attributes (empty) when they are missing; the JPEG lossless files
# it wrote (before the in-memory route) had them, so the pre-encoded header has them too.
_GDCM_TYPE2 = ("AccessionNumber", "ReferringPhysicianName", "PatientBirthDate", "PatientSex", "StudyID")
# ... and re-encodes these from their numbers (ImagePositionPatient too, per slice): see gdcm_codec.format_ds.
_GDCM_DS = ("PixelSpacing", "ImageOrientationPatient", "RescaleIntercept", "RescaleSlope")
_PREAMBLE = b"\x00" * 128 + b"DICM"


def _encode_elements(elements: list[DataElement], implicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    for elem in elements:
        write_data_element(fp, elem)
    return fp.getvalue()


def _encode_runs(ds: Dataset, varying: tuple[int, ...], implicit: bool) -> list[bytes]:
    """``ds`` (without the varying tags) encoded by pydicom as the runs between consecutive varying tags.

    Elements must be in ascending tag order in a file, so run ``i`` holds the tags below ``varying[i]``
    (and above ``varying[i-1]``); the last run holds the tags above ``varying[-1]``.
    """
    bounds = (-1, *varying, 1 << 32)
    runs = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        part = Dataset()
        for elem in ds:
            if lo < elem.tag < hi:
                part.add(elem)
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, implicit
        write_dataset(fp, part)
        runs.append(fp.getvalue())
    return runs


class _SeriesTemplate:
    """The bytes a series' files share, encoded once by pydicom; per slice only the varying elements.

    A file is: preamble, ``DICM``, file meta (its group length recomputed because the instance UID's
    length can change), then the dataset runs interleaved with SOPInstanceUID, InstanceNumber,
    ImagePositionPatient, SliceLocation and PixelData. The result is byte-identical to what
    :func:`write_ct_series_reference` writes (the tests compare them file by file).
    """

    def __init__(self, base: Dataset, syntax: str, opts: SeriesOptions) -> None:
        self.syntax = syntax
        self.implicit = syntax == ImplicitVRLittleEndian
        self.gdcm = syntax == JPEGLosslessSV1
        ds = base.copy()
        for tag in _VARYING:
            if tag in ds:
                del ds[tag]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = base.SOPClassUID
        meta.MediaStorageSOPInstanceUID = "1.2"  # a placeholder, encoded per slice
        meta.TransferSyntaxUID = syntax
        if self.gdcm:
            import gdcm

            for keyword in _GDCM_TYPE2:
                if keyword not in ds:
                    setattr(ds, keyword, "")
            for keyword in _GDCM_DS:
                ds[keyword].value = (
                    [gdcm_codec.format_ds(v) for v in ds[keyword].value]
                    if ds[keyword].VM > 1
                    else gdcm_codec.format_ds(ds[keyword].value)
                )
            meta.FileMetaInformationVersion = b"\x00\x01"
            meta.ImplementationClassUID = gdcm.FileMetaInformation.GetImplementationClassUID()
            meta.ImplementationVersionName = gdcm.FileMetaInformation.GetImplementationVersionName()
            meta.SourceApplicationEntityTitle = gdcm.FileMetaInformation.GetSourceApplicationEntityTitle()
        else:
            validate_file_meta(meta, enforce_standard=True)  # adds pydicom's implementation UID/version
        del meta[_MEDIA_SOP_INSTANCE_UID]
        self.meta_runs = _encode_runs(meta, (_MEDIA_SOP_INSTANCE_UID,), implicit=False)
        self.runs = _encode_runs(ds, _VARYING, self.implicit)
        self.encoder, self.plugin, self.pixel_options = None, "", {}
        if syntax in (JPEG2000Lossless, RLELossless):
            from pydicom.pixels import get_encoder
            from pydicom.pixels.utils import as_pixel_options

            self.encoder = get_encoder(syntax)
            self.plugin = "pylibjpeg" if syntax == JPEG2000Lossless else ""
            self.pixel_options = as_pixel_options(base)  # rows, columns, bits... as compress() uses
        self.bits_stored, self.signed = opts.bits_stored, opts.signed

    def _pixel_element(self, stored: np.ndarray) -> DataElement:
        if self.encoder is not None:
            frame = self.encoder.encode(stored, encoding_plugin=self.plugin, **self.pixel_options)
            return DataElement(_PIXEL_DATA, "OB", encapsulate([frame]), is_undefined_length=True)
        if self.gdcm:
            fragments = gdcm_codec.encode_jpeg_lossless(stored, self.bits_stored, self.signed)
            value = itemize_fragment(b"") + b"".join(itemize_fragment(f) for f in fragments)  # empty BOT
            return DataElement(_PIXEL_DATA, "OB", value, is_undefined_length=True)
        return DataElement(_PIXEL_DATA, "OW", stored.tobytes())

    def encode(self, s: _Slice) -> bytes:
        """The whole file of slice ``s``."""
        uid = _encode_elements([DataElement(_MEDIA_SOP_INSTANCE_UID, "UI", s.sop_uid)], implicit=False)
        meta_len = len(self.meta_runs[0]) + len(uid) + len(self.meta_runs[1])
        group_length = _encode_elements([DataElement(0x00020000, "UL", meta_len)], implicit=False)
        varying = [
            DataElement(0x00080018, "UI", s.sop_uid),
            DataElement(0x00200013, "IS", s.number),
            DataElement(0x00200032, "DS", [gdcm_codec.format_ds(v) for v in s.ipp] if self.gdcm else s.ipp),
            DataElement(0x00201041, "DS", s.location),
            self._pixel_element(s.stored),
        ]
        parts = [_PREAMBLE, group_length, self.meta_runs[0], uid, self.meta_runs[1]]
        for run, elem in zip(self.runs[:-1], varying, strict=True):
            parts += [run, _encode_elements([elem], self.implicit)]
        parts.append(self.runs[-1])
        return b"".join(parts)

    def write(self, s: _Slice) -> None:
        data = self.encode(s)
        with atomic_path(s.path) as tmp:
            tmp.write_bytes(data)
            if s.verify:
                _verify(tmp, s.stored, self.syntax, s.path)










def _verify(tmp: Path, stored: np.ndarray, syntax: str, path: Path) -> None:
    back = pydicom.dcmread(tmp)
    if back.file_meta.TransferSyntaxUID != syntax:
        raise CspineError(f"wrote {back.file_meta.TransferSyntaxUID}, expected {syntax}", path)
    if not np.array_equal(back.pixel_array, stored):
        raise CspineError(f"encoded slice does not decode to the same values ({syntax})", path)


def _write_slice_reference(ds: Dataset, stored: np.ndarray, syntax: str, path: Path, verify: bool) -> None:
    """The reference slice writer: pydicom ``save_as`` (JPEG lossless: GDCM from a raw temporary file)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian if syntax == JPEGLosslessSV1 else syntax
    ds.file_meta = meta
    ds.PixelData = stored.tobytes()
    with atomic_path(path) as tmp:
        if syntax in (JPEG2000Lossless, RLELossless):
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            # compress() would otherwise replace the SOPInstanceUID with a random one
            ds.compress(
                syntax,
                stored,
                encoding_plugin="pylibjpeg" if syntax == JPEG2000Lossless else "",
                generate_instance_uid=False,
            )
            ds.save_as(tmp, enforce_file_format=True)
        elif syntax == JPEGLosslessSV1:
            fd, raw_name = tempfile.mkstemp(suffix=".dcm", dir=path.parent, prefix=".raw.")
            os.close(fd)
            try:
                ds.save_as(raw_name, enforce_file_format=True)
                gdcm_codec.encode_jpeg_lossless_file(Path(raw_name), tmp)
            finally:
                os.unlink(raw_name)
        else:
            ds.save_as(
                tmp,
                enforce_file_format=True,
                implicit_vr=syntax == ImplicitVRLittleEndian,
                little_endian=True,
            )
        if verify:
            _verify(tmp, stored, syntax, path)
