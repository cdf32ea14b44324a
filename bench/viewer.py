"""Viewer benchmark: the study page's time to first render for a 512x512x300 study, in a real browser.

What is measured (*synthetic*): from the navigation to a study page (``/#/study/<key>``) to the moment
the page has drawn the CT (NiiVue's ``loadVolumes`` of ``ct.nii.gz`` done, the scene drawn, a pixel
read back so that the GPU has really finished, and two animation frames passed: the page's
``cspine-ct-rendered`` performance mark), then to the overlays (C1..C7 labels and Grad-CAM) drawn too;
the median of ``--repeats`` page loads, each in a fresh browser context (empty cache). Each load is
checked with a screenshot of the canvas (grey CT pixels, taken once the page is idle) so that a page
that marks itself rendered while showing nothing fails the run. Also timed: writing the view files
(:func:`cspine.viewer.volumes.write_view_volumes`), which a prediction would add.

The browser is Debian's chromium (``/usr/bin/chromium``) driven by Playwright, headless, with WebGL2
on SwiftShader: the GPU work runs on the CPU, so a desktop browser with a GPU renders faster.

The study is a phantom rendered at 256 px x 150 slices and upsampled x2 (nearest) to 512 x 512 x 300.
Its prediction comes from :func:`cspine.ct.predict` with random-weight ``fast`` models in which stage 1 is
replaced by the phantom's true labels (an oracle), so that the label map, the table and the Grad-CAM of
the flagged vertebrae look like a real study's; stage 2's calibration is set so that its (meaningless)
logits spread over 0..1 with two vertebrae flagged. The probabilities mean nothing.

Usage::

    .venv/bin/python bench/viewer.py [--repeats 5] [--size 512] [--slices 300] [--no-append]
    .venv/bin/python bench/viewer.py --size 256 --slices 150 --repeats 1 --no-append \\
        --screenshot docs/images/viewer.png
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "viewer"))
from _common import markdown_table, publish  # noqa: E402

STUDY_UID = "1.2.826.0.1.3680043.8.498.777"


def make_study(size: int, slices: int, seed: int) -> tuple[object, np.ndarray]:
    """A fractured phantom at half size, upsampled x2: (canonical Volume, its true label map)."""
    from cspine.io.volume import volume_from_arrays
    from cspine.synth.phantom import make_phantom

    p = make_phantom(seed, size=size // 2, n_slices=slices // 2, fracture=True)

    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(np.repeat(a, 2, 0), 2, 1), 2, 2)

    spacing = tuple(float(s) / 2 for s in p.spacing)
    return volume_from_arrays(up(p.hu), spacing, {"StudyInstanceUID": STUDY_UID}), up(p.labels)


def _spread_calibration(run: Path, logits: dict[str, float], flagged: int = 2) -> None:
    """Set stage 2's calibration so that the random model's seven logits spread over 0..1 with the
    ``flagged`` highest at p >= 0.5 (the page then draws a Grad-CAM layer, as for a positive study)."""
    from cspine.fileio import read_json, write_json

    ordered = sorted(logits.values())
    temperature = max((ordered[-1] - ordered[0]) / 6.0, 1e-6)
    cut = (ordered[-flagged] + ordered[-flagged - 1]) / 2.0
    doc = read_json(run / "cls" / "config.json")
    doc.setdefault("extra", {})["calibration"] = {"temperature": temperature, "bias": -cut / temperature}
    write_json(run / "cls" / "config.json", doc)


def predict_with_oracle(volume: object, labels: np.ndarray, run: Path, out: Path) -> tuple[dict, float]:
    """``<UID>.json`` of :func:`cspine.ct.predict` with stage 1 replaced by the true labels, and the view
    files (labels + Grad-CAM of the flagged vertebrae); returns (result document, seconds to write the
    view files)."""
    from cspine.ct import CtModel, predict
    from cspine.ct.seg.predict import Segmentation
    from cspine.fileio import write_json
    from cspine.labels import CERVICAL_LABELS, VERTEBRAE
    from cspine.viewer.volumes import gradcam_heat, view_dir_for, write_view_volumes

    cervical = np.where(np.isin(labels, CERVICAL_LABELS), labels, 0).astype(np.uint8)
    seg = Segmentation.from_labels(cervical)
    with mock.patch("cspine.ct.seg.predict.segment", lambda vol, m, **kw: seg):
        first = predict(volume, CtModel.load(run, device="cpu"))
        p = {v: min(max(first.probs[v], 1e-9), 1 - 1e-9) for v in VERTEBRAE}
        _spread_calibration(run, {v: float(np.log(x / (1 - x))) for v, x in p.items()})
        model = CtModel.load(run, device="cpu")
        doc = predict(volume, model).to_dict()
    write_json(out / f"{doc['study_uid']}.json", doc)
    flagged = [v for v in VERTEBRAE if doc["probabilities"][v] >= 0.5]
    attention = {v: (doc["vertebrae"][v]["attention"] or {}).get("weights") for v in flagged}
    heat, used = gradcam_heat(volume, seg, model.cls, flagged, attention) if flagged else (None, {})
    t0 = time.perf_counter()
    write_view_volumes(volume, labels, view_dir_for(out, doc["study_uid"]), heat,
                       {"label_map": "the phantom's true labels (oracle stage 1)", "heat_vertebrae": used})
    return doc, time.perf_counter() - t0


def _wait_for(page: object, state: str, timeout: float) -> None:
    """Poll the page's ``data-render`` (Playwright's own waiting runs on animation frames, which a busy
    software renderer holds back, and its expression form is refused by the page's CSP)."""
    t0 = time.monotonic()
    while page.evaluate("() => document.body.dataset.render") != state:  # type: ignore[attr-defined]
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"the page did not reach data-render={state} in {timeout:.0f} s")
        time.sleep(0.5)


def _mark(page: object, name: str) -> float:
    return page.evaluate(f"() => performance.getEntriesByName('{name}')[0].startTime") / 1000.0  # type: ignore


def load_page(base: str, key: str, shot: Path | None, timeout: float) -> dict[str, float]:
    """One cold page load: seconds from the navigation to the CT loaded, the CT drawn and the overlays
    drawn, and the canvas statistics of the result."""
    from _viewer_browser import CHROMIUM, CHROMIUM_ARGS, ct_shown, rgb_of
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.set_default_timeout(timeout * 1000)
            page.goto(f"{base}/#/study/{key}")
            _wait_for(page, "overlays", timeout)
            out = {"loaded": _mark(page, "cspine-ct-loaded"), "ct": _mark(page, "cspine-ct-rendered"),
                   "overlays": _mark(page, "cspine-overlays-rendered")}
            stats = ct_shown(rgb_of(page.locator("#gl").screenshot()))
            if shot is not None:
                page.screenshot(path=str(shot))
        finally:
            browser.close()
    if stats["grey_lit_fraction"] < 0.02 or stats["grey_levels"] < 20:
        raise RuntimeError(f"the page marked the CT as drawn but the canvas shows no CT: {stats}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--screenshot", type=Path, help="save a screenshot of the study page here")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one page load may take")
    ap.add_argument("--no-append", action="store_true", help="print only; do not append to BENCHMARKS.md")
    args = ap.parse_args()

    from _viewer_browser import missing_browser, running_server
    from pipeline import build_run

    from cspine.viewer.app import create_app
    from cspine.viewer.volumes import CT_FILE, view_dir_for

    why = missing_browser()
    if why:
        sys.exit(f"bench/viewer.py needs a browser: {why}")
    load_before = os.getloadavg()[1]
    with tempfile.TemporaryDirectory(prefix="cspine-bench-viewer-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        volume, labels = make_study(args.size, args.slices, args.seed)
        print(f"phantom {volume.shape} in {time.perf_counter() - t0:.1f} s (synthetic)")
        build_run(work / "run", "fast")
        doc, t_write = predict_with_oracle(volume, labels, work / "run", work / "results")
        ct_mib = (view_dir_for(work / "results", doc["study_uid"]) / CT_FILE).stat().st_size / 2**20
        app = create_app([work / "results"], work_dir=work / "serve")
        with running_server(app) as base:
            key = app.state.viewer.store.entries()[0].key
            runs = [load_page(base, key, args.screenshot if i == 0 else None, args.timeout)
                    for i in range(args.repeats)]

    def med(k: str) -> str:
        return f"{statistics.median(r[k] for r in runs):.1f}"

    shape = " x ".join(str(n) for n in reversed(volume.shape))
    table = markdown_table(
        ["study (synthetic)", "ct.nii.gz MiB", "write view files s", "CT fetched + decoded s",
         "first render: CT drawn s", "CT + labels + Grad-CAM drawn s", "runs (CT drawn s)"],
        [[f"{shape} int16", f"{ct_mib:.1f}", f"{t_write:.1f}", med("loaded"), med("ct"), med("overlays"),
          ", ".join(f"{r['ct']:.1f}" for r in runs)]])
    notes = (f"`bench/viewer.py --size {args.size} --slices {args.slices} --repeats {args.repeats}`: median "
             "seconds from navigating to the study page to the CT drawn in the canvas (the page's "
             "`cspine-ct-rendered` mark, set once a pixel read back shows the GPU has drawn it; checked by a "
             "screenshot), each load in a fresh browser context; "
             "headless Debian chromium with WebGL2 on SwiftShader (software: the GPU's work runs on these "
             "CPU cores), the server on the same machine; 5-minute load average "
             f"{load_before:.1f} before and {os.getloadavg()[1]:.1f} after the run. *Synthetic* phantom "
             "study.")
    publish("Viewer: time to first render of a study page (synthetic)", table, notes,
            append=not args.no_append)
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")


if __name__ == "__main__":
    main()
