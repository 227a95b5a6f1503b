"""Latency of the shipped localiser on a 2500 x 2000 film, decode excluded.

Times :meth:`Localiser.predict` end to end (pad, antialiased bicubic resize to 100 x 100,
network, largest region, map back onto the film, oriented box) on films already in memory,
with torch limited to the given number of threads (2 = the deployment machine).
Usage: python benchmarks/localiser_latency.py [--runs 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from pacsnode.analysis.localise import Localiser
from pacsnode.training.phantom import make_phantom

SEED = 900_002  # a benchmark-only seed, used for nothing else
ROWS, COLS = 2500, 2000


def film(index: int) -> np.ndarray:
    """A phantom rendered with its long side at 2500 px, cropped or zero-padded to 2500 x 2000
    (centred), so the film is exactly the size the bar names."""
    image = make_phantom(SEED, index, size_px=ROWS).radiograph.display.astype(np.float32)
    if image.shape[0] < image.shape[1]:
        image = image.T.copy()  # a lateral film stands upright
    out = np.zeros((ROWS, COLS), np.float32)
    r = min(ROWS, image.shape[0])
    c = min(COLS, image.shape[1])
    r0, c0 = (image.shape[0] - r) // 2, (image.shape[1] - c) // 2
    R0, C0 = (ROWS - r) // 2, (COLS - c) // 2
    out[R0 : R0 + r, C0 : C0 + c] = image[r0 : r0 + r, c0 : c0 + c]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models/localiser.safetensors"))
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--films", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/localiser_latency.json")
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    localiser = Localiser.load(args.model, device="cpu")
    films = [film(i) for i in range(args.films)]
    for f in films:  # warm-up: first calls allocate and pick kernels
        localiser.predict(f)
    times = []
    for i in range(args.runs):
        f = films[i % len(films)]
        t0 = time.perf_counter()
        localiser.predict(f)
        times.append(1000 * (time.perf_counter() - t0))
    ms = np.asarray(times)
    result = {
        "what": "Localiser.predict on a 2500 x 2000 float32 film in memory (decode excluded)",
        "model": str(args.model),
        "model_sha256": localiser.manifest.get("sha256"),
        "threads": args.threads,
        "runs": args.runs,
        "p50_ms": round(float(np.percentile(ms, 50)), 1),
        "p95_ms": round(float(np.percentile(ms, 95)), 1),
        "mean_ms": round(float(ms.mean()), 1),
        "max_ms": round(float(ms.max()), 1),
        "host": f"{platform.machine()}, {platform.python_version()}, torch {torch.__version__}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
