"""Pixel decoding of one DICOM image to int16 HU, with pluggable backends.

Backends:

* ``"pydicom"``: pydicom 3 with the pylibjpeg plugins (libjpeg, openjpeg, rle) first and GDCM as
  fallback, pydicom's own decoders for native/deflated/RLE data.
* ``"gdcm"``: pydicom 3 with the GDCM plugin only (then pydicom's native decoders).
* ``"dicomsdl"``: the C++ reader dicomsdl, about 3x faster per slice. Used only for the transfer
  syntaxes in :data:`DICOMSDL_EXACT`, for which the tests prove it bit-exact against pydicom on real
  files (tests/io/test_dicom_decode.py).
* ``"auto"``: dicomsdl when it is installed and the syntax is in :data:`DICOMSDL_EXACT`, else pydicom.

HU = stored value x RescaleSlope + RescaleIntercept, after masking the stored value to BitsStored
bits (unsigned) or sign-extending it from BitsStored bits (PixelRepresentation 1), rounded and clipped
to ``labels.HU_MIN..HU_MAX``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cspine.errors import DicomError, UnsupportedTransferSyntaxError
from cspine.labels import HU_MAX, HU_MIN

log = logging.getLogger(__name__)

BACKENDS = ("auto", "pydicom", "gdcm", "dicomsdl")

NATIVE_SYNTAXES = frozenset({
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
})
#: Syntaxes for which dicomsdl is proven bit-exact against pydicom (lossless ones; tests check it).
DICOMSDL_EXACT = NATIVE_SYNTAXES | frozenset({
    "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5",
})
#: Syntaxes that no installed decoder handles (JPEG spectral selection / full progression).
UNDECODABLE = frozenset({"1.2.840.10008.1.2.4.53", "1.2.840.10008.1.2.4.55"})


def syntax_name(uid: str) -> str:
    """The registered name of a transfer syntax UID, or ``"unknown"``."""
    from pydicom.uid import UID

    name = UID(uid).name
    return name if name and name != uid else "unknown transfer syntax"


def check_decodable(uid: str, path: str | Path) -> None:
    """Raise :class:`UnsupportedTransferSyntaxError` when nothing installed decodes syntax ``uid``."""
    if uid in NATIVE_SYNTAXES:
        return
    from pydicom.pixels import get_decoder

    ok = uid not in UNDECODABLE
    if ok:
        try:
            ok = get_decoder(uid).is_available
        except NotImplementedError:
            ok = False
    if not ok:
        raise UnsupportedTransferSyntaxError(
            f"transfer syntax {uid} ({syntax_name(uid)}) cannot be decoded by pydicom, its pylibjpeg "
            "plugins or GDCM; convert the study to a lossless syntax (e.g. `gdcmconv --raw` or "
            "`dcmdjpeg`) first", path)


def dicomsdl_available() -> bool:
    try:
        import dicomsdl  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, syntax: str) -> str:
    """The backend that decodes a file of transfer syntax ``syntax`` when ``backend`` is asked for."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown DICOM backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "dicomsdl" if syntax in DICOMSDL_EXACT and dicomsdl_available() else "pydicom"
    return backend


def fix_stored_bits(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Mask (unsigned) or sign-extend (signed) stored values to ``bits_stored`` bits.

    Idempotent, so it is safe whether or not the decoder already did it.

    >>> fix_stored_bits(np.array([0x0FFF, 0xF001], np.uint16), 12, False).tolist()
    [4095, 1]
    >>> fix_stored_bits(np.array([0x0FFF, 0x0800], np.uint16).view(np.int16), 12, True).tolist()
    [-1, -2048]
    """
    bits_alloc = arr.dtype.itemsize * 8
    if not bits_stored or bits_stored >= bits_alloc:
        return arr
    if signed:
        shift = bits_alloc - bits_stored
        sarr = arr.view(arr.dtype.str.replace("u", "i")) if arr.dtype.kind == "u" else arr
        return (sarr << shift) >> shift
    mask = (1 << bits_stored) - 1
    uarr = arr.view(arr.dtype.str.replace("i", "u")) if arr.dtype.kind == "i" else arr
    return uarr & np.array(mask, dtype=uarr.dtype)


def stored_to_hu(stored: np.ndarray, slope: float, intercept: float, out: np.ndarray | None = None
                 ) -> np.ndarray:
    """HU = stored x slope + intercept, rounded, clipped to HU_MIN..HU_MAX, as int16 (into ``out``)."""
    if out is None:
        out = np.empty(stored.shape, np.int16)
    if float(slope).is_integer() and float(intercept).is_integer():
        # Integer arithmetic: exact, and cheaper than float for the usual slope 1 / intercept -1024.
        tmp = stored.astype(np.int32)
        if slope != 1:
            tmp *= int(slope)
        tmp += int(intercept)
    else:
        tmp = np.rint(stored.astype(np.float64) * float(slope) + float(intercept))
    np.clip(tmp, HU_MIN, HU_MAX, out=tmp)
    out[...] = tmp
    return out


def _rescale(ds: Any) -> tuple[float, float]:
    slope = ds.get("RescaleSlope", None)
    intercept = ds.get("RescaleIntercept", None)
    return (1.0 if slope in (None, "") else float(slope),
            0.0 if intercept in (None, "") else float(intercept))


def _pydicom_stored(ds: Any, backend: str) -> np.ndarray:
    from pydicom.pixels import pixel_array

    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    if syntax in NATIVE_SYNTAXES:
        return pixel_array(ds)
    plugins = ["gdcm", ""] if backend == "gdcm" else ["pylibjpeg", "gdcm", ""]
    errors = []
    for plugin in plugins:
        try:
            return pixel_array(ds, decoding_plugin=plugin) if plugin else pixel_array(ds)
        except (ValueError, RuntimeError, NotImplementedError) as exc:  # plugin lacks this syntax
            errors.append(f"{plugin or 'default'}: {exc}")
    raise DicomError("could not decode pixel data: " + "; ".join(errors))


def decode_hu(ds: Any, *, backend: str = "pydicom", path: str | Path | None = None) -> np.ndarray:
    """Decode one single-frame pydicom ``Dataset`` to an int16 HU image ``(rows, columns)``.

    Args:
        ds: a dataset read with its pixel data (``pydicom.dcmread(path)``).
        backend: ``"pydicom"``, ``"gdcm"`` or ``"auto"`` (same as ``"pydicom"`` for a dataset in memory).
        path: the file, for error messages (defaults to ``ds.filename``).

    Raises:
        UnsupportedTransferSyntaxError: nothing installed decodes the file's transfer syntax.
        DicomError: no pixel data, or the decoder failed.
    """
    path = path if path is not None else getattr(ds, "filename", None)
    if "PixelData" not in ds:
        raise DicomError("the file has no PixelData", path)
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    check_decodable(syntax, path or "<dataset>")
    try:
        arr = _pydicom_stored(ds, "gdcm" if backend == "gdcm" else "pydicom")
        if arr.ndim != 2:
            raise DicomError(f"expected one grey-level frame, got pixel array of shape {arr.shape}")
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        arr = fix_stored_bits(arr, int(ds.get("BitsStored", 0) or 0), signed)
        slope, intercept = _rescale(ds)
        return stored_to_hu(arr, slope, intercept)
    except DicomError as exc:
        raise DicomError(str(exc), path) from exc
    except Exception as exc:  # decoders and value parsers raise anything on a damaged file
        raise DicomError(f"could not decode pixel data ({type(exc).__name__}: {str(exc)[:200]}); the file "
                         "may be truncated or corrupt", path) from exc


def decode_file_into(path: str | Path, out: np.ndarray, *, backend: str, syntax: str, slope: float,
                     intercept: float, bits_stored: int, signed: bool) -> list[str]:
    """Decode the file at ``path`` into ``out`` (int16 HU, shape (rows, cols)); return warnings.

    The header facts come from the series scan, so a backend that only decodes (dicomsdl) need not
    parse them again. Raises :class:`DicomError` naming the file when decoding fails.
    """
    chosen = resolve_backend(backend, syntax)
    warns: list[str] = []
    try:
        if chosen == "dicomsdl":
            import dicomsdl

            arr = dicomsdl.open(str(path)).pixelData(storedvalue=True)
        else:
            import pydicom

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                ds = pydicom.dcmread(path)
                arr = _pydicom_stored(ds, chosen)
            warns += [f"{path}: {w.message}" for w in caught][:3]
    except DicomError as exc:
        raise DicomError(str(exc), path) from exc
    except Exception as exc:  # decoders raise anything from RuntimeError to struct.error
        raise DicomError(f"could not decode pixel data ({type(exc).__name__}: {exc}); the file may be "
                         "truncated or corrupt", path) from exc
    if arr.shape != out.shape:
        raise DicomError(f"decoded image has shape {arr.shape}, expected {out.shape}", path)
    stored_to_hu(fix_stored_bits(arr, bits_stored, signed), slope, intercept, out=out)
    return warns


def decode_frames_into(path: str | Path, frames: Sequence[int], outs: Sequence[np.ndarray], *, backend: str,
                       syntax: str, slopes: Sequence[float], intercepts: Sequence[float], bits_stored: int,
                       signed: bool) -> list[str]:
    """Decode frames ``frames`` (0-based) of the multi-frame file at ``path`` into ``outs`` (int16 HU).

    The file is opened once; only the requested frames are decoded (pydicom's ``iter_pixels``; dicomsdl is
    not used for multi-frame files). Each frame has its own rescale (``slopes``, ``intercepts``), as the
    per-frame functional groups allow. Raises :class:`DicomError` naming the file when decoding fails.
    """
    from pydicom.pixels import iter_pixels

    order = sorted(range(len(frames)), key=lambda i: frames[i])
    indices = [int(frames[i]) for i in order]
    plugins = [""] if syntax in NATIVE_SYNTAXES else (
        ["gdcm", ""] if backend == "gdcm" else ["pylibjpeg", "gdcm", ""])
    errors: list[str] = []
    warns: list[str] = []
    for plugin in plugins:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for i, arr in zip(order, iter_pixels(str(path), indices=indices, decoding_plugin=plugin),
                                  strict=True):
                    if arr.shape != outs[i].shape:
                        raise DicomError(f"decoded frame {frames[i] + 1} has shape {arr.shape}, expected "
                                         f"{outs[i].shape}", path)
                    stored = fix_stored_bits(arr, bits_stored, signed)
                    stored_to_hu(stored, slopes[i], intercepts[i], out=outs[i])
            warns += [f"{path}: {w.message}" for w in caught][:3]
            return warns
        except DicomError:
            raise
        except Exception as exc:  # decoders raise anything from RuntimeError to struct.error
            errors.append(f"{plugin or 'default'}: {type(exc).__name__}: {exc}")
    raise DicomError("could not decode the frames' pixel data (" + "; ".join(errors)[:400]
                     + "); the file may be truncated or corrupt", path)


def read_slice_hu(path: str | Path, *, backend: str = "pydicom") -> tuple[np.ndarray, list[str]]:
    """Read one DICOM image file to int16 HU, with the warnings raised while parsing it.

    Non-conformant files (e.g. pydicom-data's ``bad_sequence.dcm``, a real neck CT with broken
    values) decode and return their parser warnings instead of failing.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, EOFError) as exc:
            raise DicomError(f"not a readable DICOM file ({exc})", path) from exc
        except Exception as exc:  # pydicom raises many kinds on a damaged header
            why = f"{type(exc).__name__}: {str(exc)[:200]}"
            raise DicomError(f"not a readable DICOM file ({why})", path) from exc
        try:
            for elem in ds.iterall():  # convert every value now, so broken ones are reported here
                try:
                    elem.value  # noqa: B018
                except Exception as exc:  # noqa: BLE001 - any parse failure becomes a warning
                    warnings.warn(f"element {elem.tag} cannot be parsed ({exc})", stacklevel=1)
        except Exception as exc:  # noqa: BLE001 - a damaged sequence stops the walk, not the read
            warnings.warn(f"the header cannot be walked to its end ({type(exc).__name__})", stacklevel=1)
        hu = decode_hu(ds, backend=backend, path=path)
    return hu, [f"{path}: {w.message}" for w in caught]
