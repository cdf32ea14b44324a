"""Zip checks and extraction without the web layer: what is refused, and what extraction writes."""

from __future__ import annotations

import io
import zipfile

import pytest

from cspine.viewer.uploads import UploadError, UploadLimits, extract_zip


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_members_are_written_flat_under_numbered_names(tmp_path):
    members = {"Doe^Jane/series 1/IM0001": b"a" * 10, "Doe^Jane/IM0002.dcm": b"b"}
    (tmp_path / "in.zip").write_bytes(_zip(members))
    files = extract_zip(tmp_path / "in.zip", tmp_path / "out", UploadLimits())
    assert [p.name for p in files] == ["00000.dcm", "00001.dcm"]
    assert [p.read_bytes() for p in files] == [b"a" * 10, b"b"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000.dcm", "00001.dcm"]


def test_a_zip_that_lies_about_its_sizes_writes_no_more_than_it_declared(tmp_path):
    body = bytearray(_zip({"x.dcm": b"\0" * 100_000}))
    # shrink the declared uncompressed size (local header offset 22, central directory offset 24) to 1000
    local, central = body.find(b"PK\x03\x04"), body.find(b"PK\x01\x02")
    body[local + 22:local + 26] = (1000).to_bytes(4, "little")
    body[central + 24:central + 28] = (1000).to_bytes(4, "little")
    (tmp_path / "in.zip").write_bytes(bytes(body))
    with pytest.raises(UploadError) as info:
        extract_zip(tmp_path / "in.zip", tmp_path / "out", UploadLimits(max_ratio=1e6))
    assert info.value.status == 400 and "damaged" in str(info.value)  # zipfile stops at 1000 bytes: bad CRC
    assert all(p.stat().st_size <= 1000 for p in (tmp_path / "out").iterdir())


def test_not_a_zip_and_encrypted_members(tmp_path):
    (tmp_path / "in.zip").write_bytes(b"hello")
    with pytest.raises(UploadError, match="not a zip file"):
        extract_zip(tmp_path / "in.zip", tmp_path / "out", UploadLimits())
    body = bytearray(_zip({"x.dcm": b"data"}))
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set the "encrypted" flag bit
        at = body.find(sig) + off
        body[at] |= 0x1
    (tmp_path / "enc.zip").write_bytes(bytes(body))
    with pytest.raises(UploadError, match="encrypted") as info:
        extract_zip(tmp_path / "enc.zip", tmp_path / "out2", UploadLimits())
    assert info.value.status == 400
    assert not list(tmp_path.glob("out2/*"))  # refused before anything was written
