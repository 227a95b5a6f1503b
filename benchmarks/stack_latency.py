"""Wall time of the whole analysis stack on one 2500 x 2000 film, decode included.

Per film: read_film on the DICOM bytes (decode, VOI, orientation), then the stack
(localiser, working image and region, detector, instance path, semantic path, ensemble,
identifier, measurement), each stage timed. The films are phantoms of a benchmark-only
seed rendered with their long side at 2500 px, cut or padded to exactly 2500 x 2000
(rows x columns) and stored as 16-bit uncompressed DX; each film is timed ``--repeats``
times after one warm-up run. Torch uses the CPU threads given (2 by default, as the node's
machine has). ``--device`` puts every network of the stack on that device ("cpu", "cuda",
"cuda:N" or "auto", as ``[analysis] device``); the record names the card.

Usage: python benchmarks/stack_latency.py [--films 6] [--repeats 5] [--threads 2]
           [--device cpu] [--out benchmarks/results/stack_latency.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from pydicom.uid import ExplicitVRLittleEndian

from pacsnode.analysis.stack import Stack
from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
from pacsnode.imaging.reader import read_film
from pacsnode.training.phantom import make_phantom
from pacsnode.training.phantom.dicom import build_dataset

SEED = 900_004  # a benchmark-only seed, used for nothing else
ROWS, COLS = 2500, 2000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def film_bytes(index: int) -> tuple[bytes, str]:
    """One phantom as the DICOM bytes of a 2500 x 2000 DX film, and its region."""
    phantom = make_phantom(SEED, index, size_px=max(ROWS, COLS))
    display = phantom.radiograph.display
    canvas = np.zeros((ROWS, COLS), np.float32)
    r, c = min(ROWS, display.shape[0]), min(COLS, display.shape[1])
    r0, c0 = (display.shape[0] - r) // 2, (display.shape[1] - c) // 2
    canvas[:r, :c] = display[r0 : r0 + r, c0 : c0 + c]
    acq = dataclasses.replace(
        phantom.acquisition,
        transfer_syntax=ExplicitVRLittleEndian,
        bits_stored=16,
        monochrome1=False,
    )
    dataset = build_dataset(
        canvas,
        case_id=phantom.case_id,
        seed=SEED,
        index=index,
        region=phantom.scene.region,
        facing=phantom.scene.facing,
        rotation_deg=phantom.scene.rotation_deg,
        burned_in=False,
        acq=acq,
    )
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), phantom.scene.region


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--out",
        type=Path,
        help="default: benchmarks/results/stack_latency.json, or stack_latency_<device>.json "
        "off the CPU",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stack = Stack.load(args.models, device=args.device)
    device = torch.device(stack.device)
    if args.out is None:
        suffix = "" if device.type == "cpu" else f"_{device.type}"
        args.out = Path(f"benchmarks/results/stack_latency{suffix}.json")
    films = [film_bytes(i) for i in range(args.films)]
    totals: list[float] = []
    stages: dict[str, list[float]] = {}
    for data, _ in films:
        for attempt in range(args.repeats + 1):
            started = time.perf_counter()
            film = read_film(data)
            decoded = time.perf_counter()
            result = stack.read(film.image)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            total = time.perf_counter() - started
            if attempt == 0:
                continue  # warm-up
            totals.append(total)
            stages.setdefault("decode", []).append(decoded - started)
            for stage, seconds in result.seconds.items():
                stages.setdefault(stage, []).append(seconds)
    report = {
        "what": "read_film + Stack.read on one 2500 x 2000 16-bit uncompressed DX film",
        "films": args.films,
        "regions": [region for _, region in films],
        "repeats_per_film": args.repeats,
        "torch_threads": args.threads,
        "device": str(device),
        "card": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "host": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "torch": torch.__version__,
        "models": stack.versions,
        "total_seconds": {
            "p50": statistics.median(totals),
            "p95": percentile(totals, 95),
            "max": max(totals),
            "n": len(totals),
        },
        "stage_seconds_p50": {k: statistics.median(v) for k, v in stages.items()},
        "stage_seconds_p95": {k: percentile(v, 95) for k, v in stages.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
