"""Time through the whole node: C-STORE in, SEG and SR out to a PACS.

Starts a node in this process (SQLite, spool in a temporary directory, CPU, one analysis
loop) and a pynetdicom storage SCP standing in as the PACS, then sends phantom DX films one
at a time with pynetdicom and measures, per film:

* store: from sending the C-STORE to its success answer (spool fsync and queue commit);
* result: from the success answer until the PACS holds both the SEG and the SR.

Each film goes once through the node before timing starts (model warm-up). Each timed send
carries a fresh SOP Instance UID so the node treats it as new. Films are phantoms at
detector resolution (about 2500-3000 px a side, 16-bit, uncompressed).
Usage: python benchmarks/node_latency.py [--films 20] [--out benchmarks/results/node_latency.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from pydicom import dcmread
from pydicom.uid import (
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    SegmentationStorage,
    generate_uid,
)
from pynetdicom import AE, evt

from pacsnode.config import load_settings
from pacsnode.node import Node
from pacsnode.training.phantom import make_phantom, write_phantom

SEED = 900_003  # a benchmark-only seed, used for nothing else


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=20)
    parser.add_argument("--distinct", type=int, default=4, help="phantoms rendered (reused)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/node_latency.json"))
    args = parser.parse_args()

    arrived: dict[str, set[str]] = {}
    arrived_at: dict[str, float] = {}
    lock = threading.Condition()

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        key = str(ds.StudyInstanceUID)  # every timed send is in a study of its own
        with lock:
            arrived.setdefault(key, set()).add(str(ds.SOPClassUID))
            if len(arrived[key]) == 2:
                arrived_at[key] = time.monotonic()
            lock.notify_all()
        return 0

    pacs_port = free_port()
    pacs = AE(ae_title="BENCHPACS")
    for sop_class in (SegmentationStorage, ComprehensiveSRStorage):
        pacs.add_supported_context(sop_class, ExplicitVRLittleEndian)
    server = pacs.start_server(
        ("127.0.0.1", pacs_port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        films = []
        for i in range(args.distinct):
            phantom = make_phantom(SEED, i, "mixed")
            paths = write_phantom(phantom, Path(tmp) / "films", preview=False)
            films.append(dcmread(paths["dicom"]))
        settings = load_settings(
            None,
            {
                "PACSNODE_STORAGE__DATA_DIR": str(Path(tmp) / "data"),
                "PACSNODE_STORAGE__MIN_FREE_MB": "1",
                "PACSNODE_NODE__HOST": "127.0.0.1",
                "PACSNODE_NODE__PORT": str(free_port()),
                "PACSNODE_DESTINATIONS__0__NAME": "pacs",
                "PACSNODE_DESTINATIONS__0__AE_TITLE": "BENCHPACS",
                "PACSNODE_DESTINATIONS__0__HOST": "127.0.0.1",
                "PACSNODE_DESTINATIONS__0__PORT": str(pacs_port),
            },
        )
        node = Node(settings)
        node.start()
        assert node.address is not None
        scu = AE(ae_title="BENCHSCU")
        for ds in films:
            scu.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        store_s: list[float] = []
        result_s: list[float] = []
        sizes = {f"{ds.Rows}x{ds.Columns}" for ds in films}
        try:
            for n in range(args.films + 1):
                ds = films[n % len(films)]
                # A new instance in a new study, so its results are told apart by study.
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.StudyInstanceUID = generate_uid()
                assoc = scu.associate("127.0.0.1", node.address[1], ae_title="PACSNODE")
                started = time.monotonic()
                status = assoc.send_c_store(ds)
                answered = time.monotonic()
                assoc.release()
                if status.Status != 0:
                    raise SystemExit(f"C-STORE failed: 0x{status.Status:04X}")
                key = str(ds.StudyInstanceUID)
                with lock:
                    if not lock.wait_for(lambda key=key: key in arrived_at, timeout=120):
                        raise SystemExit("results did not arrive within 120 s")
                if n == 0:
                    continue  # warm-up
                store_s.append(answered - started)
                result_s.append(arrived_at[key] - answered)
                print(
                    f"film {n}: store {store_s[-1] * 1000:.0f} ms, results {result_s[-1]:.2f} s",
                    flush=True,
                )
        finally:
            node.stop()
            server.shutdown()

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "p50": round(statistics.median(values), 4),
            "p95": round(percentile(values, 95), 4),
            "max": round(max(values), 4),
        }

    report = {
        "what": "C-STORE answer time, and time from the answer until the PACS holds SEG and SR",
        "films": args.films,
        "film_sizes": sorted(sizes),
        "store_seconds": summary(store_s),
        "result_seconds": summary(result_s),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "command": f"python benchmarks/node_latency.py --films {args.films}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
