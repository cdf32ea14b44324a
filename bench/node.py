"""DICOM node benchmark: seconds from the first C-STORE of a study into ``cspine node`` to its SEG and SR
stored in a PACS (Orthanc), split into receive, idle wait, pipeline, DICOM encoding and send.

What is measured (*synthetic*): a phantom neck CT (rendered at half size and upsampled x2 to ``--size`` x
``--size`` x ``--slices``, uncompressed) is first stored in a private Orthanc (Debian's ``orthanc``, a
plain process with a temporary configuration); the clock starts when Orthanc, asked through its REST API
(``/modalities/cspine/store``), sends the first instance to the node, and stops when Orthanc's REST API
lists the SEG and SR series in the study. The parts come from the node's own records (``done.json``):

* receive: first to last instance written into the spool (Orthanc's C-STOREs, one association);
* idle wait: the node's ``--idle-seconds`` (the time it waits for more instances; set here with
  ``--idle-seconds``, 10 s by default in ``cspine node``);
* pipeline: decoding, stage 1, crops, stage 2 (:func:`cspine.ct.inference.predict`), split too;
* DICOM encoding: building and writing the SEG and the SR;
* send: the C-STORE of SEG and SR to Orthanc;
* rest: what the other parts leave (the worker's poll, Orthanc indexing, this script's poll).

The node runs in this process (the same code as ``cspine node``); with ``--model RUN`` (e.g. the demo's
``/tmp/demo_final/run``) on that model, else on the tests' tiny random-weight model.

Usage::

    .venv/bin/python bench/node.py [--model RUN] [--size 512] [--slices 300] [--idle-seconds 2] [--no-append]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "node"))
from _common import markdown_table, publish  # noqa: E402

STUDY_UID = "1.2.826.0.1.3680043.8.498.9090"


def write_study(folder: Path, size: int, slices: int, seed: int) -> int:
    """The phantom at half size and slice count, upsampled x2, written as a classic CT series."""
    import numpy as np

    from cspine.io.volume import volume_from_arrays
    from cspine.synth.ct_writer import write_ct_series
    from cspine.synth.phantom import make_phantom

    p = make_phantom(seed, size=size // 2, n_slices=slices // 2, fracture=True)
    hu = np.repeat(np.repeat(np.repeat(p.hu, 2, 0), 2, 1), 2, 2)
    volume = volume_from_arrays(hu, tuple(float(s) / 2 for s in p.spacing), {"StudyInstanceUID": STUDY_UID})
    write_ct_series(volume, folder, study_uid=STUDY_UID, uid_seed=seed, verify=False)
    return len(list(folder.glob("*.dcm")))


def load_model(run: Path | None, work: Path):
    from cspine.ct.cls.operating_points import resolve_requested_point
    from cspine.ct.model import CtModel

    if run is None:
        from _tiny_ct_run import make_run

        run = work / "tiny_run"
        make_run(run, operating_points={"patient": {"sens90": 0.2}, "vertebra": {"sens90": 0.3}})
    model = CtModel.load(run, device="cpu")
    op = resolve_requested_point(None, model.operating_points()) or resolve_requested_point("0.5", None)
    return model, op, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="RUN folder (default: the tiny test model)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--idle-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--orthanc", default="/usr/sbin/Orthanc")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    from _orthanc import free_port, orthanc_server

    from cspine.node.config import Destination, NodeConfig
    from cspine.node.service import DicomNode

    with tempfile.TemporaryDirectory(prefix="cspine-bench-node-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        n = write_study(work / "study", args.size, args.slices, args.seed)
        print(f"phantom study: {n} slices of {args.size}x{args.size} in {time.perf_counter() - t:.0f} s")
        model, op, run = load_model(args.model, work)
        orthanc_port = free_port()
        cfg = NodeConfig("CSPINE", spool=work / "spool", port=0, idle_seconds=args.idle_seconds,
                         send_to=Destination("127.0.0.1", orthanc_port, "ORTHANC"), allow_ae=("ORTHANC",))
        with DicomNode(cfg, model, op, poll_seconds=0.05) as node, \
                orthanc_server(work / "orthanc", orthanc_port, {"cspine": ["CSPINE", "127.0.0.1", node.port]},
                               program=args.orthanc) as rest:
            for f in sorted((work / "study").glob("*.dcm")):
                rest.post("/instances", content=f.read_bytes()).raise_for_status()
            (study_id,) = rest.get("/studies").json()
            rest.post("/modalities/cspine/store", json={"Resources": [study_id], "Asynchronous": True}
                      ).raise_for_status()
            deadline = time.time() + 3600
            while len(rest.get(f"/studies/{study_id}/series").json()) < 3:
                if list((work / "spool").glob("*/*/failed.json")) or time.time() > deadline:
                    failed = [p.read_text() for p in (work / "spool").glob("*/*/failed.json")]
                    raise SystemExit(f"the node did not deliver: {failed or 'timed out'}")
                time.sleep(0.05)
            t_end = time.time()
        (done_path,) = (work / "spool").glob("*/*/done.json")
        done = json.loads(done_path.read_text())
        (series_json,) = (work / "spool").glob("*/*/series.json")
        t_first = float(json.loads(series_json.read_text())["first_received"])
        result = json.loads((done_path.parent / "results" / "result.json").read_text())

    total = t_end - t_first
    s = done["seconds"]
    parts = {"receive": s["receive"], "idle wait": s["idle_wait"], "pipeline": s["pipeline"],
             "DICOM encoding (SEG + SR)": s["dicom"], "send (C-STORE SEG + SR)": s["send"]}
    parts["rest (polls, Orthanc indexing)"] = total - sum(parts.values())
    stages = result["seconds"]
    rows = [[k, f"{v:.2f}", f"{100 * v / total:.0f}%"] for k, v in parts.items()]
    rows.append(["**first C-STORE to SEG + SR in Orthanc**", f"**{total:.2f}**", "100%"])
    table = markdown_table(["part", "seconds", "share"], rows)
    model_name = (f"`{args.model}`" if args.model
                  else "the tests' tiny random-weight model (`tests/_tiny_ct_run.py`)")
    stage_text = ", ".join(f"{k} {float(stages[k]):.1f} s" for k in ("decode", "seg", "crops", "cls")
                           if k in stages)
    notes = (f"`bench/node.py --size {args.size} --slices {args.slices} --idle-seconds {args.idle_seconds:g}"
             f"{' --model ' + str(args.model) if args.model else ''}`: {n} uncompressed CT instances "
             f"({args.size}x{args.size}) sent by Orthanc 1.10 to the node on loopback, model {model_name} "
             f"(operating point {op.name}), study status `{result['status']}`. Pipeline stages: "
             + stage_text + f"; torch threads {os.environ.get('OMP_NUM_THREADS', 'default')}. "
             "*Synthetic* (phantom data): the times depend on the study's size and the model, not on what "
             "the phantom shows.")
    publish(f"DICOM node: first C-STORE to SEG + SR in Orthanc, {n} slices (synthetic)", table, notes,
            append=not args.no_append)


if __name__ == "__main__":
    main()
