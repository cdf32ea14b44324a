"""Driving the viewer in a real browser: Debian's chromium through Playwright (never a downloaded browser).

Used by the end-to-end test and by bench/viewer.py. WebGL2 runs headless on SwiftShader (software).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = Path(os.environ.get("CSPINE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--ignore-gpu-blocklist"]


def missing_browser() -> str | None:
    """Why the browser tests cannot run here (a message naming the missing program), or ``None``."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is missing (pip install playwright; never `playwright install`)"
    if not CHROMIUM.is_file() and shutil.which(str(CHROMIUM)) is None:
        return (f"chromium is missing ({CHROMIUM}; `apt-get install -y --no-install-recommends chromium`, "
                "or set CSPINE_CHROMIUM)")
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yield its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.monotonic()
    while not server.started:
        if not thread.is_alive() or time.monotonic() - t0 > 20:
            raise RuntimeError("the viewer server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def browser_page(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A headless chromium page (``/usr/bin/chromium``) with WebGL2 on SwiftShader."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def rgb_of(png: bytes) -> np.ndarray:
    """The pixels of a PNG screenshot as an ``(H, W, 3)`` int array."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)


def ct_shown(rgb: np.ndarray) -> dict[str, float]:
    """Statistics that say whether a canvas shows a grey CT: the share of non-black grey pixels and how
    many grey levels they take."""
    grey = (np.abs(rgb[..., 0] - rgb[..., 1]) < 12) & (np.abs(rgb[..., 1] - rgb[..., 2]) < 12)
    lit = rgb.max(axis=-1) > 30
    levels = np.unique(rgb[..., 1][grey & lit] // 4)
    return {"grey_lit_fraction": float((grey & lit).mean()), "grey_levels": float(len(levels))}


def colour_fraction(rgb: np.ndarray, colour: tuple[int, int, int], opacity: float,
                    tol: float = 30.0) -> float:
    """Share of pixels that look like ``colour`` blended at ``opacity`` over some grey (the overlay)."""
    c = np.asarray(colour, np.float64)
    # pixel = (1 - a) * g + a * c for a grey g: remove the colour's share and ask whether a grey is left
    under = (rgb - opacity * c) / (1.0 - opacity)
    spread = under.max(axis=-1) - under.min(axis=-1)
    inside = (under.min(axis=-1) > -tol) & (under.max(axis=-1) < 255 + tol)
    return float(((spread < tol) & inside & (np.abs(rgb - rgb.mean(-1, keepdims=True)).max(-1) > 25)).mean())
