"""The viewer's HTTP API (JSON; errors are ``{"error": "..."}`` with a status that says why).

=====================================  ==========================================================
``GET  /api/info``                     model identity, whether uploads work, the upload limit
``GET  /api/studies``                  the study list
``GET  /api/studies/{key}``            a study: probabilities, operating point, attention, timing,
                                       model version, view status and file URLs
``POST /api/studies/{key}/view``       build the study's view files with the model (202 + job)
``GET  /api/studies/{key}/files/{f}``  ``ct.nii.gz``, ``labels.nii.gz``, ``heat.nii.gz``
``POST /api/uploads``                  body: a zip of one study's DICOM files (202 + job)
``GET  /api/jobs/{id}``                a job's state
=====================================  ==========================================================
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse

from cspine.viewer.jobs import UPLOAD_ZIP
from cspine.viewer.uploads import UPLOAD_TYPES, UploadError, check_zip, receive_to_file
from cspine.viewer.volumes import CT_FILE, HEAT_FILE, LABELS_FILE

router = APIRouter(prefix="/api")

_FILES = (CT_FILE, LABELS_FILE, HEAT_FILE)
_NO_MODEL = "this server has no model: start it with `cspine serve --model RUN` to analyse studies"


def _state(request: Request) -> Any:
    return request.app.state.viewer


def _entry(request: Request, key: str) -> Any:
    entry = _state(request).store.get(key)
    if entry is None:
        raise HTTPException(404, "no study with this key (keys change when the server restarts)")
    return entry


@router.get("/info")
def info(request: Request) -> dict[str, Any]:
    st = _state(request)
    return {"model": st.model_info, "uploads": st.jobs is not None,
            "max_upload_mb": round(st.limits.max_upload_bytes / 1024**2, 1)}


@router.get("/studies")
def studies(request: Request) -> list[dict[str, Any]]:
    store = _state(request).store
    return [store.summary(e) for e in store.entries()]


def _view_status(request: Request, entry: Any) -> dict[str, Any]:
    st = _state(request)
    files = st.store.view_files(entry)
    if files is not None:
        return {"status": "ready", "files": files, "note": None}
    if st.jobs is not None and st.jobs.building(entry.key):
        return {"status": "building", "files": None, "note": "building the view files"}
    source = entry.doc.get("source")
    if st.jobs is None:
        return {"status": "unavailable", "files": None,
                "note": "no CT view for this result: it has no view files, and this server has no model to "
                        "make them (start `cspine serve --model RUN`)"}
    if not source or not Path(source).exists():
        return {"status": "unavailable", "files": None,
                "note": "no CT view for this result: it has no view files, and the study's source recorded "
                        "in it is no longer there"}
    return {"status": "absent", "files": None, "note": "the view files can be made with the model"}


@router.get("/studies/{key}")
def study(request: Request, key: str) -> dict[str, Any]:
    entry = _entry(request, key)
    st = _state(request)
    doc = st.store.detail(entry)
    doc["view"] = _view_status(request, entry)
    return doc


@router.post("/studies/{key}/view", status_code=202)
def build_view(request: Request, key: str) -> dict[str, Any]:
    entry = _entry(request, key)
    jobs = _state(request).jobs
    if jobs is None:
        raise HTTPException(409, _NO_MODEL)
    status = _view_status(request, entry)
    if status["status"] == "unavailable":
        raise HTTPException(409, status["note"])
    return jobs.submit_view(entry).to_dict()


@router.get("/studies/{key}/files/{name}")
def study_file(request: Request, key: str, name: str) -> FileResponse:
    if name not in _FILES:
        raise HTTPException(404, f"no file {name!r}; the view files are {', '.join(_FILES)}")
    entry = _entry(request, key)
    files = _state(request).store.view_files(entry)
    path = entry.view_dir / name
    if files is None or not path.is_file():
        raise HTTPException(404, f"this study has no {name} yet")
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Cache-Control": "private, max-age=0, must-revalidate"})


@router.post("/uploads", status_code=202)
async def upload(request: Request) -> JSONResponse:
    st = _state(request)
    if st.jobs is None:
        raise HTTPException(409, _NO_MODEL)
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype not in UPLOAD_TYPES:
        raise UploadError(f"send the zip as the request body with Content-Type application/zip (got "
                          f"{ctype or 'none'!r})", 415)
    length = request.headers.get("content-length")
    job_id, folder = st.jobs.new_upload_dir()
    zip_path = folder / UPLOAD_ZIP
    try:
        await receive_to_file(request.stream(), zip_path, st.limits.max_upload_bytes,
                              int(length) if length and length.isdigit() else None)
        try:
            with zipfile.ZipFile(zip_path) as zf:
                check_zip(zf, st.limits)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UploadError(f"the upload is not a zip file ({exc})") from exc
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    job = st.jobs.submit_upload(job_id)
    return JSONResponse(job.to_dict(), status_code=202)


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: str) -> dict[str, Any]:
    jobs = _state(request).jobs
    found = None if jobs is None else jobs.get(job_id)
    if found is None:
        raise HTTPException(404, "no job with this id")
    return found.to_dict()
