"""The viewer's HTTP API through FastAPI's TestClient: listing, study detail, view files, uploads."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import re
import time
import zipfile

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from _viewer_fixtures import STUDY_UID

from cspine.labels import LABEL_OF, TARGETS, VERTEBRAE
from cspine.viewer.uploads import UploadLimits

fastapi = pytest.importorskip("fastapi", reason="the viewer needs fastapi, uvicorn and httpx")
from fastapi.testclient import TestClient  # noqa: E402

from cspine.viewer.app import create_app  # noqa: E402

ZIP = {"Content-Type": "application/zip"}


def wait_job(client, job, timeout=120.0):
    t0 = time.monotonic()
    while job["state"] in ("queued", "running"):
        assert time.monotonic() - t0 < timeout, f"job still {job['state']}: {job['message']}"
        time.sleep(0.2)
        job = client.get(f"/api/jobs/{job['id']}").json()
    return job


def make_zip(members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def results_client(results_dir, tmp_path):
    with TestClient(create_app([results_dir], work_dir=tmp_path / "work")) as client:
        yield client


@pytest.fixture
def model_client(results_dir, tiny_model, tmp_path):
    limits = UploadLimits(max_upload_bytes=4 * 1024**2, max_members=200, max_total_bytes=8 * 1024**2,
                          max_ratio=50.0)
    app = create_app([results_dir], tiny_model, work_dir=tmp_path / "work", limits=limits)
    with TestClient(app) as client:
        yield client


def test_listing_and_detail_from_a_results_folder(results_client, results_dir, viewer_data):
    studies = results_client.get("/api/studies").json()
    assert [s["study_uid"] for s in studies] == [STUDY_UID]
    s = studies[0]
    doc = json.loads((results_dir / f"{STUDY_UID}.json").read_text())
    assert s["patient_overall"] == pytest.approx(doc["probabilities"]["patient_overall"])
    assert s["flagged"] == ["C3"]  # the only level stage 1 found, p ~ 1
    assert s["view_ready"] is False
    detail = results_client.get(f"/api/studies/{s['key']}").json()
    assert [r["name"] for r in detail["vertebrae"]] == list(VERTEBRAE)
    for row in detail["vertebrae"]:
        expected = doc["probabilities"][row["name"]]  # None: a level stage 1 did not find
        assert row["probability"] == (None if expected is None else pytest.approx(expected))
        assert row["label"] == LABEL_OF[row["name"]]
    assert [r["name"] for r in detail["vertebrae"] if r["probability"] is None] == ["C1", "C2", "C4", "C5",
                                                                                 "C6", "C7"]
    c3 = next(r for r in detail["vertebrae"] if r["name"] == "C3")
    assert c3["positive"] and c3["attention"]["weights"] == doc["vertebrae"]["C3"]["attention"]["weights"]
    op = detail["operating_point"]
    assert op["vertebra"] == 0.5 and "without an operating point" in op["note"]
    assert detail["seconds"]["total"] == doc["seconds"]["total"]
    assert detail["model"]["run"] == "run" and detail["model"]["cls_weights"] == \
        doc["versions"]["model"]["cls"]["weights_sha256_16"]
    # without a model the table is all there is, and the page says why
    assert detail["view"]["status"] == "unavailable" and "--model" in detail["view"]["note"]
    assert str(viewer_data.study) not in json.dumps(detail)  # the source path stays on the server
    r = results_client.post(f"/api/studies/{s['key']}/view")
    assert r.status_code == 409 and "--model" in r.json()["error"]
    r = results_client.post("/api/uploads", content=b"PK", headers=ZIP)
    assert r.status_code == 409 and "--model" in r.json()["error"]


def test_keys_hide_the_uid(results_client):
    studies = results_client.get("/api/studies").json()
    key = studies[0]["key"]
    assert re.fullmatch(r"[0-9a-f]{24}", key)
    assert key not in hashlib.sha256(STUDY_UID.encode()).hexdigest()  # keyed, not a plain hash of the UID
    assert results_client.get(f"/api/studies/{STUDY_UID}").status_code == 404
    r = results_client.get("/api/studies/0123456789abcdef01234567")
    assert r.status_code == 404 and "no study" in r.json()["error"]


def test_view_files_are_built_on_demand_and_served(model_client, viewer_data, tiny_model):
    from cspine.ct.seg.predict import segment
    from cspine.io.study import load_study

    key = model_client.get("/api/studies").json()[0]["key"]
    detail = model_client.get(f"/api/studies/{key}").json()
    assert detail["view"]["status"] == "absent"
    r = model_client.post(f"/api/studies/{key}/view")
    assert r.status_code == 202
    job = wait_job(model_client, r.json())
    assert job["state"] == "done", job["message"]
    view = model_client.get(f"/api/studies/{key}").json()["view"]
    assert view["status"] == "ready" and view["files"]["heat_vertebrae"] == ["C3"]
    urls = [view["files"][k] for k in ("ct", "labels", "heat")]
    assert all(u.startswith(f"/api/studies/{key}/files/") for u in urls)
    assert not any(STUDY_UID in u for u in urls)
    images = {}
    for name, url in zip(("ct", "labels", "heat"), urls, strict=True):
        r = model_client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        images[name] = nib.Nifti1Image.from_bytes(gzip.decompress(r.content))
    volume = load_study(viewer_data.study)
    ct = np.asarray(images["ct"].dataobj)
    np.testing.assert_array_equal(ct.T, volume.hu)  # NIfTI (x, y, z) = canonical (z, y, x) transposed
    labels = np.asarray(images["labels"].dataobj)
    np.testing.assert_array_equal(labels.T, segment(volume, tiny_model.seg).labels)
    heat = np.asarray(images["heat"].dataobj)
    assert heat.dtype == np.uint8 and heat.max() > 0
    assert model_client.get(f"/api/studies/{key}/files/evil.txt").status_code == 404
    assert model_client.get(f"/api/studies/{key}/files/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_upload_runs_the_model_and_lists_the_study(model_client, viewer_data, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    r = model_client.post("/api/uploads", content=viewer_data.zip_bytes, headers=ZIP)
    assert r.status_code == 202, r.text
    job = wait_job(model_client, r.json())
    assert job["state"] == "done", job["message"]
    (key,) = job["study_keys"]
    listed = {s["key"]: s for s in model_client.get("/api/studies").json()}
    assert listed[key]["origin"] == "upload" and listed[key]["view_ready"]
    detail = model_client.get(f"/api/studies/{key}").json()
    assert detail["study_uid"] == STUDY_UID and detail["view"]["status"] == "ready"
    # the table is what the pipeline wrote to predictions.csv
    (pred_csv,) = (tmp_path / "work").glob("*/result/predictions.csv")
    pred = pd.read_csv(pred_csv, dtype={"StudyInstanceUID": str}).set_index("StudyInstanceUID")
    for row in detail["vertebrae"]:
        expected = pred.loc[STUDY_UID, row["name"]]  # empty in the CSV for a level not found
        assert row["probability"] == (None if np.isnan(expected) else pytest.approx(expected, abs=1e-6))
    assert detail["patient"]["probability"] == pytest.approx(pred.loc[STUDY_UID, TARGETS[-1]], abs=1e-6)
    # the zip's folder name (a patient's name here) is not used on disk, and nothing logged names the study
    assert not list((tmp_path / "work").rglob("Doe*"))
    assert caplog.records and STUDY_UID not in caplog.text and "Doe" not in caplog.text


def _low_entropy(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 4, n, dtype=np.uint8).tobytes()  # deflates ~4:1


@pytest.mark.parametrize(("members", "status", "message"), [
    ({"../evil.dcm": b"x" * 100}, 400, "climbs out"),
    ({"a/../../evil.dcm": b"x" * 100}, 400, "climbs out"),
    ({"/etc/evil.dcm": b"x" * 100}, 400, "absolute path"),
    ({"C:\\evil.dcm": b"x" * 100}, 400, "absolute path"),
    ({f"{i}.dcm": b"x" for i in range(201)}, 413, "201 members"),
    ({"bomb.dcm": b"\0" * (8 * 1024**2)}, 413, "compressed more than 50:1"),
    ({f"{i}.dcm": _low_entropy(i, 1024**2) for i in range(9)}, 413, "inflates to more than 8 MiB"),
    ({"dir/": b""}, 400, "holds no files"),
])
def test_bad_zips_are_refused(model_client, tmp_path, members, status, message):
    body = make_zip(members)
    assert len(body) < 4 * 1024**2  # every case passes the body limit and fails on its own check
    r = model_client.post("/api/uploads", content=body, headers=ZIP)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert not list((tmp_path / "work").rglob("*.dcm")) and not list((tmp_path / "work").rglob("upload.zip"))


def test_symlink_member_is_refused(model_client):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    r = model_client.post("/api/uploads", content=buf.getvalue(), headers=ZIP)
    assert r.status_code == 400 and "symbolic link" in r.json()["error"]


def test_upload_size_type_and_format_errors(model_client):
    r = model_client.post("/api/uploads", content=b"\0" * (4 * 1024**2 + 1), headers=ZIP)
    assert r.status_code == 413 and "larger than the limit of 4 MiB" in r.json()["error"]
    r = model_client.post("/api/uploads", content=b"not a zip", headers=ZIP)
    assert r.status_code == 400 and "not a zip file" in r.json()["error"]
    r = model_client.post("/api/uploads", content=b"", headers=ZIP)
    assert r.status_code == 400 and "empty" in r.json()["error"]
    r = model_client.post("/api/uploads", content=b"PK", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/zip" in r.json()["error"]


def test_a_zip_without_a_ct_fails_its_job_with_a_clear_message(model_client):
    r = model_client.post("/api/uploads", content=make_zip({"readme.dcm": b"hello " * 50}), headers=ZIP)
    assert r.status_code == 202
    job = wait_job(model_client, r.json())
    assert job["state"] == "failed" and "could not be predicted" in job["message"]
    assert "<work>" not in job["message"] and "/tmp" not in job["message"]


def test_page_and_niivue_come_from_the_server(results_client):
    r = results_client.get("/")
    assert r.status_code == 200 and '<script src="/static/niivue.umd.js">' in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    js = results_client.get("/static/niivue.umd.js")
    assert js.status_code == 200 and "Niivue" in js.text[-5000:] and len(js.content) > 1_000_000
    assert results_client.get("/static/viewer.js").status_code == 200
    assert not re.search(r"https?://", r.text)


def test_a_results_operating_point_and_calls_are_shown():
    from cspine.viewer.store import flagged_vertebrae, operating_point

    doc = {"probabilities": {"C1": 0.2, "C2": 0.7, "C3": None, "C4": 0.1, "C5": 0.1, "C6": 0.35, "C7": 0.1,
                             "patient_overall": 0.8},
           "operating_point": {"name": "sens90", "patient_threshold": 0.4, "vertebra_threshold": 0.3,
                               "source": "stored"},
           "vertebrae": {"C1": {"positive": False}, "C2": {"positive": True}, "C6": {"positive": True}}}
    op = operating_point(doc)
    assert (op["name"], op["vertebra"], op["patient"], op["note"]) == ("sens90", 0.3, 0.4, None)
    assert flagged_vertebrae(doc) == ["C2", "C6"]  # the result's own calls; C3 has no probability
    del doc["operating_point"], doc["vertebrae"]
    assert operating_point(doc)["vertebra"] == 0.5 and flagged_vertebrae(doc) == ["C2"]
