"""Ingest of 12 MB DX films: ``pacsnode serve --role receiver`` against dcmtk ``storescp``.

The same N films (phantoms from the project's generator, padded or cropped to ``--size``
px a side: 16-bit, uncompressed Explicit VR Little Endian, DX For Presentation, about
12 MB each at 2450 px) are sent by dcmtk ``storescu`` (one association per process, all
its files; ``--parallel C`` runs C processes at once, each with every C-th film) to:

* storescp: ``storescp -aet STORESCP -od DIR PORT``, single process, every other option
  at dcmtk's default (16 KiB maximum receive PDU, ``--normal`` writing, no fsync);
  ``--storescp-options`` adds options, e.g. ``-pdu 131072`` (its largest) or ``+B``;
* pacsnode: ``python -m pacsnode serve --role receiver`` with the embedded defaults but
  for address, data directory and ``[security] allowed_calling_aets = ["BENCHSCU"]``:
  SQLite, each film fsynced, renamed into the spool (directory fsynced) and its job row
  committed before the Success answer; default INFO logging to a file.

Each server starts fresh in a fresh directory on the same filesystem before its run and
stops after it; the time counted is from starting the storescu processes until the last
exits (every answer received); every film is checked to have arrived whole (and, for
pacsnode, to have its job row in the database). Rounds
alternate which server goes first; before each run the received files of the previous one
are deleted and ``sync`` is run, so no run pays for another's write-back.

Bar (issue 14): the median over rounds of pacsnode's MB/s over storescp's, in the same
round, >= 0.9.

Usage: python benchmarks/ingest.py [--films 40] [--rounds 5] [--parallel 1]
           [--size 2450] [--storescp-options OPTS] [--out benchmarks/results/ingest.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacsnode.config.settings import usable_cores
from pacsnode.training.phantom import make_phantom, write_phantom

SEED = 900_014  # a benchmark-only seed, used for nothing else
PACSNODE = [sys.executable, "-m", "pacsnode"]
SCU_AE, STORESCP_AE, NODE_AE = "BENCHSCU", "STORESCP", "PACSNODE"
BAR = 0.9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fit(pixels: np.ndarray, size: int) -> np.ndarray:
    """``pixels`` centred in a ``size`` x ``size`` frame: cropped where larger, padded with
    its edge values where smaller (pixel spacing unchanged)."""
    out = pixels
    for axis in (0, 1):
        extent = out.shape[axis]
        if extent > size:
            start = (extent - size) // 2
            out = np.take(out, range(start, start + size), axis=axis)
        elif extent < size:
            before = (size - extent) // 2
            widths = [(0, 0), (0, 0)]
            widths[axis] = (before, size - extent - before)
            out = np.pad(out, widths, mode="edge")
    return np.ascontiguousarray(out)


def make_films(folder: Path, count: int, distinct: int, size: int) -> list[Path]:
    """``count`` film files, copies of ``distinct`` phantoms at ``size`` px a side, each a
    new instance in a new study."""
    sources = []
    for i in range(distinct):
        paths = write_phantom(make_phantom(SEED, i, "mixed"), folder / "src", preview=False)
        ds = dcmread(paths["dicom"])
        # Some phantoms are written compressed: every film here goes uncompressed.
        dtype = np.int16 if ds.PixelRepresentation else np.uint16
        pixels = fit(ds.pixel_array, size).astype(dtype)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = pixels.tobytes()
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = 16
        sources.append(ds)
        print(f"  phantom {i + 1}/{distinct} rendered", flush=True)
    films = []
    for n in range(count):
        ds = sources[n % distinct]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        path = folder / f"film-{n:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        films.append(path)
    shutil.rmtree(folder / "src", ignore_errors=True)
    return films


def dcm_files(root: Path) -> list[Path]:
    """Received files under ``root``, not counting data sets still arriving."""
    return [p for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts]


def wait_for_echo(port: int, ae: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        echo = ["echoscu", "-aet", SCU_AE, "-aec", ae, "127.0.0.1", str(port)]
        if subprocess.run(echo, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise SystemExit(f"no C-ECHO answer from {ae} on port {port} within {timeout:.0f} s")


class StoreSCP:
    """dcmtk storescp in a fresh directory."""

    name = "storescp"

    def __init__(self, work: Path, options: list[str]) -> None:
        self.dir = work / "storescp"
        self.dir.mkdir()
        self.port = free_port()
        self.ae = STORESCP_AE
        self.command = [
            "storescp",
            "-aet",
            STORESCP_AE,
            *options,
            "-od",
            str(self.dir),
            str(self.port),
        ]
        self.log = (work / "storescp.log").open("wb")
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_echo(self.port, self.ae)

    def received(self) -> list[Path]:
        return dcm_files(self.dir)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


class Receiver:
    """``pacsnode serve --role receiver`` on SQLite in a fresh data directory."""

    name = "pacsnode"

    def __init__(self, work: Path) -> None:
        self.dir = work / "pacsnode"
        self.port = free_port()
        self.ae = NODE_AE
        self.config = work / "pacsnode.toml"
        self.config_text = f"""[node]
ae_title = "{NODE_AE}"
host = "127.0.0.1"
port = {self.port}
[storage]
data_dir = "{self.dir}"
[security]
allowed_calling_aets = ["{SCU_AE}"]
"""
        self.config.write_text(self.config_text)
        self.command = [*PACSNODE, "serve", "--config", str(self.config), "--role", "receiver"]
        self.log = (work / "pacsnode.log").open("wb")
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self.log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if "listening" not in line:
            self.process.kill()
            raise SystemExit(f"the node did not start: {line!r}; see {work / 'pacsnode.log'}")

    def received(self) -> list[Path]:
        return dcm_files(self.dir / "spool")

    def jobs(self) -> int:
        """Job rows committed."""
        with sqlite3.connect(self.dir / "pacsnode.db") as db:
            return int(db.execute("SELECT count(*) FROM jobs").fetchone()[0])

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def send(port: int, ae: str, films: list[Path], parallel: int) -> tuple[float, list[list[str]]]:
    """Seconds from starting ``parallel`` storescu processes until the last exits."""
    shares = [films[i::parallel] for i in range(parallel)]
    commands = [
        ["storescu", "-aet", SCU_AE, "-aec", ae, "127.0.0.1", str(port), *map(str, share)]
        for share in shares
        if share
    ]
    started = time.perf_counter()
    processes = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for c in commands
    ]
    outputs = [p.communicate()[0] for p in processes]
    seconds = time.perf_counter() - started
    for p, out in zip(processes, outputs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"storescu exited {p.returncode}: {out.decode(errors='replace')}")
    return seconds, commands


def run_once(
    kind: str, work: Path, films: list[Path], parallel: int, storescp_options: list[str]
) -> dict[str, object]:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.sync()  # write back what earlier runs left dirty before the clock starts
    server = StoreSCP(work, storescp_options) if kind == "storescp" else Receiver(work)
    try:
        seconds, commands = send(server.port, server.ae, films, parallel)
        received = server.received()
        jobs = server.jobs() if isinstance(server, Receiver) else len(films)
    finally:
        server.stop()
    sent = sum(p.stat().st_size for p in films)
    got = sum(p.stat().st_size for p in received)
    # storescp rewrites each file (--normal), so sizes may differ by a few header bytes.
    if len(received) != len(films) or got < 0.99 * sent or jobs != len(films):
        raise SystemExit(
            f"{kind}: {len(received)} of {len(films)} films, {got} of {sent} bytes, "
            f"{jobs} jobs arrived"
        )
    result = {
        "seconds": round(seconds, 3),
        "mb_per_s": round(sent / 1e6 / seconds, 1),
        "films_per_s": round(len(films) / seconds, 2),
        "received_mb": round(got / 1e6, 1),
        "server_command": " ".join(map(shlex.quote, server.command)).replace(str(work), "$RUN"),
        "storescu_command": " ".join(commands[0][:7]) + f" <{len(commands[0]) - 7} files>",
    }
    if isinstance(server, Receiver):
        result["config"] = server.config_text.replace(str(work), "$RUN")
    shutil.rmtree(work, ignore_errors=True)
    return result


def wait_for_quiet(max_load: float, wait: float) -> list[float]:
    """The load average once the 1-minute figure is under ``max_load``, or after
    ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        print(f"  load {os.getloadavg()[0]:.2f} >= {max_load}; waiting", flush=True)
        time.sleep(10)
    return [round(x, 2) for x in os.getloadavg()]


def dcmtk_version() -> str:
    out = subprocess.run(["storescp", "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=40)
    parser.add_argument("--distinct", type=int, default=4, help="phantoms rendered (reused)")
    parser.add_argument("--size", type=int, default=2450, help="film side, px (2450: ~12 MB)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=1, help="storescu processes at once")
    parser.add_argument(
        "--storescp-options",
        default="",
        help="more storescp options, e.g. '-pdu 131072' or '+B' (default: none)",
    )
    parser.add_argument("--max-load", type=float, default=1.5, help="wait for a lower load first")
    parser.add_argument("--wait", type=float, default=180.0, help="longest wait for it, s")
    parser.add_argument("--tmp", type=Path, help="working directory's parent (default: TMPDIR)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    args = parser.parse_args()
    storescp_options = shlex.split(args.storescp_options)
    # pynetdicom installs apps named storescp, storescu and echoscu in the virtual
    # environment's bin folder; an activated environment would run those, not dcmtk's.
    venv_bin = Path(sys.executable).parent
    os.environ["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", os.defpath).split(os.pathsep) if Path(p) != venv_bin
    )
    for tool in ("storescp", "storescu", "echoscu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} (dcmtk) is not on PATH")

    tmp = Path(tempfile.mkdtemp(prefix="pacsnode-ingest-", dir=args.tmp))
    try:
        print(f"making {args.films} films of {args.size} px in {tmp}", flush=True)
        films = make_films(tmp / "films", args.films, args.distinct, args.size)
        sent = sum(p.stat().st_size for p in films)
        header = dcmread(films[0], stop_before_pixels=True)
        print(f"{len(films)} films, {sent / 1e6:.0f} MB in all", flush=True)
        rounds = []
        for r in range(args.rounds):
            load = wait_for_quiet(args.max_load, args.wait)
            order = ["storescp", "pacsnode"] if r % 2 == 0 else ["pacsnode", "storescp"]
            runs = {}
            for kind in order:
                runs[kind] = run_once(kind, tmp / "run", films, args.parallel, storescp_options)
                print(
                    f"round {r + 1}/{args.rounds} {kind:8s} {runs[kind]['seconds']:6.2f} s "
                    f"{runs[kind]['mb_per_s']:6.1f} MB/s {runs[kind]['films_per_s']:5.2f} films/s",
                    flush=True,
                )
            ratio = float(runs["pacsnode"]["mb_per_s"]) / float(runs["storescp"]["mb_per_s"])
            print(f"round {r + 1}: pacsnode / storescp = {ratio:.3f}", flush=True)
            rounds.append(
                {"order": order, "load_average_before": load, "ratio": round(ratio, 3), **runs}
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ratios = [float(r["ratio"]) for r in rounds]
    median_ratio = statistics.median(ratios)

    def median_of(kind: str, key: str) -> float:
        return round(statistics.median(float(r[kind][key]) for r in rounds), 2)

    report = {
        "what": (
            "the same films sent by dcmtk storescu to dcmtk storescp (no fsync) and to "
            "`pacsnode serve --role receiver` (SQLite, fsync and commit before Success), "
            "alternating, fresh server and directory each run"
        ),
        "films": len(films),
        "film_mb": round(sent / len(films) / 1e6, 2),
        "film": {
            "rows": int(header.Rows),
            "columns": int(header.Columns),
            "bits_allocated": int(header.BitsAllocated),
            "sop_class": header.SOPClassUID.name,
            "transfer_syntax": header.file_meta.TransferSyntaxUID.name,
        },
        "total_mb": round(sent / 1e6, 1),
        "storescu_processes": args.parallel,
        "storescp_options": storescp_options or "dcmtk defaults (max PDU 16384, --normal)",
        "associations": "one per storescu process, carrying all of its films",
        "rounds": rounds,
        "median": {
            kind: {
                "mb_per_s": median_of(kind, "mb_per_s"),
                "films_per_s": median_of(kind, "films_per_s"),
            }
            for kind in ("storescp", "pacsnode")
        },
        "ratios": ratios,
        "median_ratio": round(median_ratio, 3),
        "bar": {"pacsnode_over_storescp_at_least": BAR, "met": median_ratio >= BAR},
        "machine": {
            "cores": usable_cores(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
            "dcmtk": dcmtk_version(),
        },
        "command": "python " + shlex.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"median: storescp {report['median']['storescp']['mb_per_s']} MB/s, pacsnode "
        f"{report['median']['pacsnode']['mb_per_s']} MB/s; ratio {median_ratio:.3f} "
        f"(bar {BAR}: {'met' if median_ratio >= BAR else 'not met'})",
        flush=True,
    )


if __name__ == "__main__":
    main()
