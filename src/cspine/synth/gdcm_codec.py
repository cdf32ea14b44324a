"""What GDCM does for the phantom writer: JPEG lossless (process 14 SV1) encoding, and the way GDCM's
writer spells decimal strings (DS), so that files written without GDCM's writer match those written
through it byte for byte (pydicom cannot encode JPEG lossless).

The DS port follows GDCM 3.2.x; an upgrade that changes GDCM's spelling fails
``tests/synth/test_synth_writer.py``, which compares both.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cspine.errors import CspineError

__all__ = ["encode_jpeg_lossless", "encode_jpeg_lossless_file", "format_ds"]


def encode_jpeg_lossless_file(src: Path, dst: Path) -> None:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    if not reader.Read():
        raise CspineError("GDCM could not read the uncompressed slice it was given", src)
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    if not change.Change():
        raise CspineError("GDCM could not encode the slice as JPEG lossless", src)
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    if not writer.Write():
        raise CspineError("GDCM could not write the JPEG lossless slice", dst)


def encode_jpeg_lossless(stored: np.ndarray, bits_stored: int, signed: bool) -> list[bytes]:
    """JPEG lossless (process 14 SV1) fragments of one slice, encoded by GDCM in memory."""
    import gdcm

    image = gdcm.Image()
    image.SetNumberOfDimensions(2)
    image.SetDimension(0, stored.shape[1])
    image.SetDimension(1, stored.shape[0])
    # PixelFormat(samples per pixel, bits allocated, bits stored, high bit, pixel representation)
    image.SetPixelFormat(gdcm.PixelFormat(1, 16, bits_stored, bits_stored - 1, int(signed)))
    image.SetPhotometricInterpretation(
        gdcm.PhotometricInterpretation(gdcm.PhotometricInterpretation.MONOCHROME2)
    )
    image.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.ExplicitVRLittleEndian))
    pixels = gdcm.DataElement(gdcm.Tag(0x7FE0, 0x0010))
    pixels.SetByteStringValue(stored.tobytes())
    pixels.SetVR(gdcm.VR(gdcm.VR.OW))
    image.SetDataElement(pixels)
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(image)
    # GDCM images are reference counted: the filter's smart pointer now holds (and will delete) the
    # image, so Python must not delete it too (a double free that corrupts the heap).
    image.thisown = False
    if not change.Change():
        raise CspineError("GDCM could not encode the slice as JPEG lossless", "(in memory)")
    fragments = change.GetOutput().GetDataElement().GetSequenceOfFragments()
    # The fragments belong to the filter's output (alive until return). The SWIG binding returns their
    # bytes as a str decoded with surrogateescape, which pydicom's GDCM pixel handler also relies on.
    return [
        fragments.GetFragment(i).GetByteValue().GetBuffer().encode("utf-8", "surrogateescape")
        for i in range(fragments.GetNumberOfFragments())
    ]


def _round_at(mant: str, i: int, iexp: int) -> tuple[str, bool]:
    """GDCM's roundat(): cut the digit string at ``i``, rounding half up; on overflow a special string."""
    if i >= len(mant):
        return mant, False
    c, digits = mant[i], list(mant[:i])
    if c < "5":
        return "".join(digits), False
    n = i - 1
    while n >= 0 and digits[n] == "9":
        digits[n] = "0"
        n -= 1
    if n >= 0:
        digits[n] = chr(ord(digits[n]) + 1)
        return "".join(digits), False
    iexp += 1
    special = {-2: ".01", -1: ".1", 0: "1.", 1: "10", 2: "100"}
    return special.get(iexp, f"1e{iexp}"), True


def _clean(buf: str) -> str:
    """GDCM's clean(): strip trailing zeros (keeping the first character), then a trailing point."""
    end = len(buf)
    while end > 1 and buf[end - 1] == "0":
        end -= 1
    if buf[end - 1] == ".":
        end -= 1
    return buf[:end]


def format_ds(value: str | float, size: int = 16) -> str:
    """A DS value the way GDCM's writer re-encodes it (a port of ``x16printf`` in gdcmElement.h, 3.2.x).

    GDCM's ImageWriter rewrites RescaleIntercept/Slope, PixelSpacing, ImageOrientationPatient and
    ImagePositionPatient from their numbers: at most 16 characters, no trailing zeros, no leading
    zero (``0.5`` -> ``.5``). The JPEG lossless files keep that spelling byte for byte.
    """
    f = float(value)
    sign = ""
    if f < 0:
        f, size, sign = -f, size - 1, "-"
    line = f"{f:1.16e}"
    if line[0] == "-":  # -0.0
        f, size, sign = -f, size - 1, "-"
        line = f"{f:1.16e}"
    e = line.index("e")
    mant, iexp = line[0] + line[2:e], int(line[e + 1 :])
    lexp = len(f"e{iexp}")
    if iexp >= size or iexp < -3:
        mant, over = _round_at(mant, size - 1 - lexp, iexp)
        if over:
            return sign + mant
        return sign + _clean(mant[0] + "." + mant[1 : size - 1 - lexp]) + f"e{iexp}"
    if iexp >= size - 2:
        return sign + _round_at(mant, iexp + 1, iexp)[0]
    if iexp >= 0:
        mant, over = _round_at(mant, size - 1, iexp)
        if over:
            return sign + mant
        return sign + _clean((mant[: iexp + 1] + "." + mant[iexp + 1 :])[:size])
    mant, over = _round_at(mant, size + 1 + iexp, iexp)
    if over:
        return sign + mant
    return sign + _clean(("." + "0" * (-1 - iexp) + mant)[:size])
