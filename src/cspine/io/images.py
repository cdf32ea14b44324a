"""Read a radiograph (PNG, JPEG, TIFF or DICOM) as a float32 grayscale image in [0, 1].

Bright means dense (bone white, air black) whatever the file stores:

* DICOM: the pixel data are decoded by pydicom 3 (JPEG 2000, JPEG lossless, RLE through
  pylibjpeg or GDCM), the Modality LUT (RescaleSlope/Intercept) is applied, then the VOI
  transform the modality chose for display (a VOI LUT Sequence, else Window Center/Width with its
  VOI LUT Function); without one the image's own min..max is mapped onto [0, 1], as viewers do.
  Values outside the range BitsStored / PixelRepresentation allow are clipped first (old files keep
  overlays in the unused high bits). MONOCHROME1 (minimum = white) is inverted last.
* 8-bit files are divided by 255 and 16-bit files by 65535 (the range the file format allows,
  not the image's own min/max, so that a dark image stays dark); float TIFFs already in [0, 1]
  are kept, other float images are min/max scaled. Colour images are converted to luminance
  (ITU-R BT.601), JPEG EXIF orientation is applied.

Size limit: an image whose header claims more than ``max_pixels`` pixels (rows x columns x frames;
default :data:`DEFAULT_MAX_PIXELS`) is refused before its pixels are decoded, with an error naming the
file. A header claiming 60000 x 60000 pixels is a corrupt file or a decompression bomb, and decoding it
would take gigabytes; this limit replaces Pillow's own guard (``DecompressionBombError``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cspine.errors import ImageError

log = logging.getLogger(__name__)

#: File name endings read as images (case-insensitive). Files without an ending are tried as DICOM.
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom", ".bmp")
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
#: Largest image read by default, in pixels (100 megapixels: a 10,000 x 10,000 radiograph; real ones are
#: at most about 4,300 x 3,500). ``None`` or 0 = no limit.
DEFAULT_MAX_PIXELS = 100_000_000

_PIL_GUARD = threading.Lock()  # Pillow's limit is a module global: lifted by one thread at a time


def is_dicom(path: str | Path) -> bool:
    """True when the file has the DICOM preamble magic ``DICM`` at byte 128 or a DICOM suffix."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_image_file(path: str | Path) -> bool:
    """True for a file cspine reads as a radiograph (by suffix, or DICOM magic when there is none)."""
    path = Path(path)
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return path.suffix == "" and is_dicom(path)


def _check_file(path: Path) -> None:
    from cspine.io.archives import UNPACK_HINT, is_archive

    if not path.is_file():
        raise ImageError("image file not found", path)
    if is_archive(path):
        raise ImageError(f"{UNPACK_HINT} (images or folders of images)", path)


def check_pixel_count(path: str | Path, rows: int, cols: int, frames: int = 1,
                      max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Refuse an image whose header claims more than ``max_pixels`` pixels.

    Raises:
        ImageError: naming the file, the size its header claims and the limit.
    """
    n = int(rows) * int(cols) * max(int(frames), 1)
    if max_pixels and n > max_pixels:
        frames_txt = f" x {frames} frames" if frames > 1 else ""
        raise ImageError(
            f"its header claims {cols} x {rows} pixels{frames_txt} ({n / 1e6:,.0f} megapixels), more than "
            f"the limit of {max_pixels / 1e6:,.0f} megapixels (a corrupt header or a decompression bomb); "
            "raise --max-pixels if the image is genuine", path)


def image_shape(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(rows, columns)`` of an image from its header alone (no pixel is decoded), checked against
    ``max_pixels``: a cheap test of a whole dataset before any work starts.

    Raises:
        ImageError: the file is missing, its header cannot be read, or it claims too many pixels.
    """
    path = Path(path)
    _check_file(path)
    if is_dicom(path):
        ds = _dicom_header(path)
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ImageError(f"is a DICOM file without a usable Rows/Columns ({exc})", path) from exc
        check_pixel_count(path, rows, cols, frames, max_pixels)
        return rows, cols
    with _open_pil(path, max_pixels) as im:
        return int(im.size[1]), int(im.size[0])


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a radiograph as a float32 ``(H, W)`` array in [0, 1], bright = dense.

    Args:
        path: a PNG, JPEG, TIFF, BMP or DICOM file.
        max_pixels: refuse an image whose header claims more pixels (``None``/0: no limit).

    Returns:
        The grayscale image, float32, values in [0, 1].

    Raises:
        ImageError: the file is missing, cannot be decoded, holds no 2D image, or claims more than
            ``max_pixels`` pixels.
    """
    path = Path(path)
    _check_file(path)
    img = _read_dicom(path, max_pixels) if is_dicom(path) else _read_pil(path, max_pixels)
    if img.ndim != 2 or min(img.shape) < 2:
        raise ImageError(f"holds no 2D image (array shape {img.shape})", path)
    if not np.isfinite(img).all():
        raise ImageError("holds NaN or infinite pixel values", path)
    return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


# --- PNG / JPEG / TIFF ------------------------------------------------------------------------

_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


@contextlib.contextmanager
def _open_pil(path: Path, max_pixels: int | None) -> Iterator:  # noqa: ANN401 - yields a PIL image
    """``Image.open`` (header only) with cspine's pixel limit instead of Pillow's."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow checks the header's size in open() against its module-global limit; cspine's own limit
        # applies right after, so Pillow's is lifted while the header is read (one thread at a time).
        with _PIL_GUARD, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pil_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = pil_limit
    except (UnidentifiedImageError, *_PIL_ERRORS) as exc:
        raise ImageError(f"cannot be decoded as an image ({exc}); is it a PNG, JPEG, TIFF or DICOM "
                         "file, and complete?", path) from exc
    with im:
        check_pixel_count(path, im.size[1], im.size[0], 1, max_pixels)
        yield im


def _read_pil(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    from PIL import ImageOps

    with _open_pil(path, max_pixels) as im:
        try:
            im = ImageOps.exif_transpose(im)
            im.load()
            return _pil_to_unit(im, path)
        except (*_PIL_ERRORS, MemoryError) as exc:
            raise ImageError(f"cannot be decoded as an image ({exc or type(exc).__name__}); is it a PNG, "
                             "JPEG, TIFF or DICOM file, and complete?", path) from exc


def _pil_to_unit(im, path: Path) -> np.ndarray:  # noqa: ANN001 - PIL.Image.Image
    mode = im.mode
    if mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV"):
        im, mode = im.convert("RGB"), "RGB"
    if mode in ("LA", "RGBA", "RGBX"):  # the alpha channel is no part of the radiograph
        im, mode = im.convert("L" if mode == "LA" else "RGB"), ("L" if mode == "LA" else "RGB")
    if mode == "1":
        im, mode = im.convert("L"), "L"
    arr = np.asarray(im)
    if mode == "RGB":
        return (_luminance(arr) / 255.0).astype(np.float32)
    if mode == "L":
        return arr.astype(np.float32) / 255.0
    if mode.startswith("I;16") or arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if mode == "I":  # 16-bit PNGs open as 32-bit ints in some Pillow versions
        arr = arr.astype(np.float64)
        if arr.min() >= 0 and arr.max() <= 65535:
            return (arr / (255.0 if arr.max() <= 255 else 65535.0)).astype(np.float32)
        return _minmax(arr)
    if mode == "F":
        arr = arr.astype(np.float64)
        if np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 1:
            return arr.astype(np.float32)
        return _minmax(arr)
    raise ImageError(f"has the unsupported pixel mode {mode!r}", path)


def _minmax(arr: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if hi <= lo:
        return np.zeros(arr.shape, np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


# --- DICOM ------------------------------------------------------------------------------------

def _dicom_header(path: Path, stop_before_pixels: bool = True):  # noqa: ANN202 - pydicom Dataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise ImageError(f"cannot be read as DICOM ({exc})", path) from exc


def _read_dicom(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    ds = _dicom_header(path, stop_before_pixels=False)
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageError("is a DICOM file without pixel data", path)
    try:
        rows, cols, frames = int(ds.Rows), int(ds.Columns), int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ImageError(f"is a DICOM file without a usable Rows/Columns ({exc})", path) from exc
    check_pixel_count(path, rows, cols, frames, max_pixels)
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises RuntimeError/NotImplementedError/ValueError per plugin
        name = f"{syntax.name} ({syntax})" if syntax is not None else "unknown transfer syntax"
        raise ImageError(
            f"pixel data cannot be decoded ({name}): {exc}. JPEG 2000 / JPEG lossless need pylibjpeg "
            "with pylibjpeg-openjpeg / pylibjpeg-libjpeg, or python-gdcm", path) from exc
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1:
        log.warning("%s: multi-frame DICOM (%d frames); using the first frame", path, frames)
        arr = arr[0]
    if samples > 1 or arr.ndim == 3:
        # pydicom converts YBR to RGB when it decodes; colour radiographs are rare (screenshots).
        return (_luminance(arr) / (2 ** int(ds.get("BitsStored", 8)) - 1)).astype(np.float32)
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageError(f"has PhotometricInterpretation {photometric}, expected MONOCHROME1/2", path)
    unit = _dicom_to_unit(ds, arr, path)
    if photometric == "MONOCHROME1":
        # MONOCHROME1: the minimum value is displayed white; cspine's convention is bright = dense.
        unit = 1.0 - unit
    return unit


def _stored_range(ds, path: Path) -> tuple[float, float]:  # noqa: ANN001 - pydicom Dataset
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if not 1 <= bits <= 32:
        raise ImageError(f"has an impossible BitsStored {bits}", path)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _dicom_to_unit(ds, arr: np.ndarray, path: Path) -> np.ndarray:  # noqa: ANN001 - pydicom Dataset
    from pydicom.pixels import apply_modality_lut, apply_voi

    lo, hi = _stored_range(ds, path)
    # Bits above BitsStored may hold overlays or garbage in old files: keep only the stored range.
    arr = np.clip(arr, lo, hi) if arr.dtype.kind in "iu" else arr
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in ds:
        values = apply_modality_lut(arr, ds).astype(np.float64)
        lo, hi = float(values.min()), float(values.max())
    else:
        values = arr.astype(np.float64) * slope + intercept
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    if "VOILUTSequence" in ds:
        try:
            out = apply_voi(values, ds, index=0).astype(np.float64)
            bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            return np.clip(out / (2.0**bits - 1), 0, 1).astype(np.float32)
        except Exception as exc:  # a broken VOI LUT should not make the image unreadable
            log.warning("%s: VOI LUT Sequence not usable (%s); using the window or stored range", path, exc)
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return _window(values, center, width, function).astype(np.float32)
    # No VOI: the image's own value range (what viewers show by default). The range allowed by
    # BitsStored would leave e.g. 12-bit data in a 16-bit signed container a flat gray.
    return _minmax(values)


def _first(value) -> float | None:  # noqa: ANN001 - DS or MultiValue
    if value is None or value == "":
        return None
    try:
        return float(value[0]) if hasattr(value, "__len__") and not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 / C.11.2.1.3 VOI window mapped onto [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0, 1)
    if width <= 1:  # LINEAR needs width >= 1; width 1 is a threshold
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
