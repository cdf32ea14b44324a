"""The viewer's FastAPI application: the page, its static files (NiiVue included) and the API.

Everything the page loads comes from this server: the Content-Security-Policy allows no other origin,
so the page cannot reach a CDN even by mistake.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cspine import __version__
from cspine.viewer.jobs import JobRunner
from cspine.viewer.routes import router
from cspine.viewer.store import StudyStore
from cspine.viewer.uploads import UploadError, UploadLimits

log = logging.getLogger(__name__)

__all__ = ["STATIC_DIR", "ViewerState", "create_app"]

STATIC_DIR = Path(str(resources.files("cspine.viewer") / "static"))
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'")


@dataclass
class ViewerState:
    """What the routes share: the study list, the job runner (``None`` without a model), limits."""

    store: StudyStore
    jobs: JobRunner | None
    limits: UploadLimits
    model_info: dict[str, Any] | None
    work_dir: Path
    own_work_dir: bool


def _model_info(model: Any) -> dict[str, Any] | None:
    if model is None:
        return None
    info = getattr(model, "info", {}) or {}
    run = info.get("run_dir")
    return {"run": Path(run).name if run else None, "device": getattr(model, "device", None),
            "seg_weights": (info.get("seg") or {}).get("weights_sha256_16"),
            "cls_weights": (info.get("cls") or {}).get("weights_sha256_16"),
            "trained_with": (info.get("cls") or {}).get("trained_with")}


def create_app(results: Sequence[str | Path] = (), model: Any = None, *, work_dir: str | Path | None = None,
               limits: UploadLimits | None = None) -> FastAPI:
    """Build the viewer application.

    Args:
        results: results folders of ``cspine ct predict`` to list.
        model: a loaded ``cspine.ct.CtModel``; without one, uploads are refused and studies without
            view files show their table only.
        work_dir: where uploads and their results are kept (default: a temporary folder removed
            when the application shuts down).
        limits: upload limits (default :class:`UploadLimits`).

    Returns:
        The FastAPI app (serve it with uvicorn; ``cspine serve`` does).

    Example:
        >>> from fastapi.testclient import TestClient  # doctest: +SKIP
        >>> TestClient(create_app(["out/pred"])).get("/api/studies").json()  # doctest: +SKIP
    """
    own = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="cspine-serve-")) if own else Path(work_dir)  # type: ignore[arg-type]
    work.mkdir(parents=True, exist_ok=True)
    limits = limits or UploadLimits()
    store = StudyStore([Path(r) for r in results])
    jobs = JobRunner(store, model, work, limits) if model is not None else None
    state = ViewerState(store=store, jobs=jobs, limits=limits, model_info=_model_info(model), work_dir=work,
                        own_work_dir=own)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if jobs is not None:
            jobs.stop()
        if own:
            shutil.rmtree(work, ignore_errors=True)

    app = FastAPI(title="cspine viewer", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.viewer = state
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path.startswith("/api/") and "cache-control" not in response.headers:
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(UploadError)
    async def upload_error(request: Request, exc: UploadError) -> JSONResponse:
        log.info("upload refused (%d): %s", exc.status, exc)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "bad request: " + "; ".join(str(e.get("msg")) for e in exc.errors())},
                            status_code=422)

    return app
