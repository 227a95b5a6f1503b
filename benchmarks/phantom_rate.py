"""Measure how fast the phantom generator makes training films on this machine.

Reports films/s at training resolutions (longest side 256 and 512 px) with one process and
with one process per core, and seconds per full-resolution DICOM case (render + encode).
Usage: python benchmarks/phantom_rate.py [--n 40] [--out benchmarks/results/phantom_rate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from pacsnode.training.phantom import make_phantom, write_phantom

SEED = 900_001  # a benchmark-only seed, used for nothing else


def _one(args: tuple[int, int]) -> int:
    index, size = args
    make_phantom(SEED, index, "mixed", size_px=size)
    return index


def rate(size: int, n: int, workers: int) -> float:
    jobs = [(i, size) for i in range(n)]
    start = time.perf_counter()
    if workers == 1:
        for job in jobs:
            _one(job)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_one, jobs, chunksize=4))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="films per measurement")
    parser.add_argument("--full", type=int, default=6, help="full-resolution cases to time")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/phantom_rate.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    results: dict[str, object] = {
        "machine": {
            "cpu_count": cores,
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "films": args.n,
        "training_rate_films_per_s": {},
    }
    for size in (256, 512):
        for workers in sorted({1, cores}):
            r = rate(size, args.n, workers)
            results["training_rate_films_per_s"][f"{size}px_{workers}proc"] = round(r, 2)
            print(f"{size:4d} px, {workers} process(es): {r:6.2f} films/s")
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for i in range(args.full):
            start = time.perf_counter()
            write_phantom(make_phantom(SEED, 10_000 + i, "mixed"), Path(tmp), preview=False)
            times.append(time.perf_counter() - start)
    results["full_resolution_dicom_s_per_case"] = {
        "mean": round(sum(times) / len(times), 2),
        "max": round(max(times), 2),
        "cases": args.full,
    }
    print(
        f"full-resolution DICOM case: {sum(times) / len(times):.2f} s mean, {max(times):.2f} s max"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
