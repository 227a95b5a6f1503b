"""A burst through the whole node: N films over C parallel associations, until every SEG
and SR is in the PACS, against the offline ``pacsnode analyze`` rate on the same films.

Starts ``pacsnode serve`` as its own process (SQLite and spool in a temporary directory,
the default ``[worker] processes``, or ``--processes``) and a pynetdicom storage SCP in
this process standing in for the PACS. Phantom DX films at detector resolution (16-bit,
uncompressed, about 2500-3000 px a side), each sent with a fresh SOP Instance UID in a
study of its own, so results are told apart by study.

1. Idle: ``--idle`` films sent one at a time, each after the previous one's results
   arrived (the first is a warm-up): the C-STORE answer time of an idle node.
2. Burst: N films over C associations at once, each association sending its share back
   to back: answer times, and results per minute from the first send until the PACS holds
   the last SEG and SR. Nothing lost means every film answered Success has both.
3. Peak memory: the resident set of the node's process and all its descendants (analysis
   and decode-check processes), summed, sampled every 0.2 s through phases 1 and 2.
4. Offline: ``pacsnode analyze`` (model loading and PNG overlays included, as an operator
   runs it) on the first ``--offline`` films of the burst, after the node has stopped.

Bars (issue 14): nothing lost, peak memory <= 2 GB, results/minute >= 1.6 x the offline
rate, burst answer p95 <= 2 x idle answer p95.

Usage: python benchmarks/burst.py [--films 40] [--associations 4] [--idle 8]
           [--offline 12] [--processes N] [--out benchmarks/results/burst.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import (
    UID,
    ComprehensiveSRStorage,
    ExplicitVRLittleEndian,
    SegmentationStorage,
    generate_uid,
)
from pynetdicom import AE, evt

from pacsnode.config.settings import usable_cores
from pacsnode.training.phantom import make_phantom, write_phantom

SEED = 900_005  # a benchmark-only seed, used for nothing else
PACSNODE = [sys.executable, "-m", "pacsnode"]
MEMORY_BAR_BYTES = 2 * 1000**3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(statistics.median(values), 4),
        "p95": round(percentile(values, 95), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


class Pacs:
    """The PACS stand-in: a storage SCP noting when each study holds both SEG and SR."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, set[str]] = {}
        self.complete_at: dict[str, float] = {}
        self.lock = threading.Condition()
        ae = AE(ae_title="BENCHPACS")
        for sop_class in (SegmentationStorage, ComprehensiveSRStorage):
            ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on)]
        )

    def _on(self, event: evt.Event) -> int:
        ds = event.dataset
        key = str(ds.StudyInstanceUID)
        with self.lock:
            kinds = self.arrived.setdefault(key, set())
            kinds.add(str(ds.SOPClassUID))
            if len(kinds) == 2 and key not in self.complete_at:
                self.complete_at[key] = time.monotonic()
            self.lock.notify_all()
        return 0

    def wait(self, keys: list[str], timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(
                lambda: all(k in self.complete_at for k in keys), timeout=timeout
            )


class MemorySampler(threading.Thread):
    """The summed resident set of a process and its descendants, at its peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.peak_processes = 0
        self.breakdown: list[str] = []
        self.largest: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            sizes = {pid: rss(pid) for pid in tree(self.pid)}
            total = sum(sizes.values())
            if total > self.peak:
                self.peak, self.peak_processes = total, len(sizes)
                self.breakdown = sorted(
                    (f"{name(pid)} {size / 1e6:.0f} MB" for pid, size in sizes.items()),
                    key=lambda text: -float(text.split()[-2]),
                )
            for pid, size in sizes.items():
                if size == 0:  # gone meanwhile
                    continue
                self.largest[name(pid)] = max(self.largest.get(name(pid), 0), size)


def tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


def name(pid: int) -> str:
    """A process's title as multiprocessing and the node set it, else its command."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    text = " ".join(part.decode(errors="replace") for part in command if part)
    if "multiprocessing" in text and "resource_tracker" in text:
        return "resource-tracker"
    if "multiprocessing" in text:
        return f"child-{pid}"
    return "node" if " serve " in f" {text} " else text[:40]


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def make_films(folder: Path, count: int, distinct: int) -> list[tuple[Path, str]]:
    """``count`` film files, copies of ``distinct`` phantoms, each a new instance in a new
    study: (path, Study Instance UID)."""
    sources = []
    for i in range(distinct):
        paths = write_phantom(make_phantom(SEED, i, "mixed"), folder / "src", preview=False)
        sources.append(dcmread(paths["dicom"]))
    films = []
    for n in range(count):
        ds = sources[n % distinct]
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        path = folder / f"film-{n:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        films.append((path, str(ds.StudyInstanceUID)))
    return films


def start_node(tmp: Path, pacs_port: int, processes: int | None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    worker = f"processes = {processes}\n" if processes is not None else ""
    config = tmp / "pacsnode.toml"
    config.write_text(
        f"""[node]
ae_title = "PACSNODE"
host = "127.0.0.1"
port = {port}
[storage]
data_dir = "{tmp / "data"}"
min_free_mb = 1
[worker]
{worker}[[destinations]]
name = "pacs"
ae_title = "BENCHPACS"
host = "127.0.0.1"
port = {pacs_port}
"""
    )
    log = (tmp / "node.log").open("wb")
    node = subprocess.Popen(
        [*PACSNODE, "serve", "--config", str(config), "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=log,
    )
    assert node.stdout is not None
    line = node.stdout.readline().decode()
    if "listening" not in line:
        node.kill()
        raise SystemExit(f"the node did not start: {line!r}; see {tmp / 'node.log'}")
    return node, port


def syntax_of(path: Path) -> tuple[str, str]:
    """(SOP Class UID, Transfer Syntax UID) of a film file."""
    ds = dcmread(path, stop_before_pixels=True)
    return str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)


def send(port: int, films: list[tuple[Path, str]]) -> list[tuple[float, float, int]]:
    """Send films over one association: (start, answer time, status) for each."""
    ae = AE(ae_title="BENCHSCU")
    for pair in sorted({syntax_of(path) for path, _ in films}):
        ae.add_requested_context(*pair)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
    if not assoc.is_established:
        raise SystemExit("association refused")
    out = []
    try:
        for path, _ in films:
            started = time.monotonic()
            status = assoc.send_c_store(path)
            out.append((started, time.monotonic() - started, int(status.Status)))
    finally:
        assoc.release()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=40)
    parser.add_argument("--associations", type=int, default=4)
    parser.add_argument("--idle", type=int, default=8, help="idle films, the first a warm-up")
    parser.add_argument("--offline", type=int, default=12, help="films for pacsnode analyze")
    parser.add_argument("--distinct", type=int, default=4, help="phantoms rendered (reused)")
    parser.add_argument("--processes", type=int, help="[worker] processes (default: cores)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/burst.json"))
    args = parser.parse_args()
    load_before = [round(x, 2) for x in os.getloadavg()]

    pacs = Pacs()
    tmp = Path(tempfile.mkdtemp(prefix="pacsnode-burst-"))
    try:
        films = make_films(tmp / "films", args.idle + args.films, args.distinct)
        syntaxes = sorted({UID(syntax_of(p)[1]).name for p, _ in films})
        idle_films, burst_films = films[: args.idle], films[args.idle :]
        size_mb = statistics.mean(p.stat().st_size for p, _ in films) / 1e6
        node, port = start_node(tmp, pacs.port, args.processes)
        memory = MemorySampler(node.pid)
        memory.start()
        try:
            idle: list[float] = []
            for n, film in enumerate(idle_films):
                ((_, answered, status),) = send(port, [film])
                if status != 0:
                    raise SystemExit(f"idle C-STORE failed: 0x{status:04X}")
                if not pacs.wait([film[1]], 300):
                    raise SystemExit("idle results did not arrive within 300 s")
                if n > 0:  # the first warms the models up
                    idle.append(answered)
            print(f"idle answer p95 {percentile(idle, 95) * 1000:.0f} ms", flush=True)

            shares = [burst_films[i :: args.associations] for i in range(args.associations)]
            answers: list[tuple[float, float, int]] = []
            lock = threading.Lock()

            def run(share: list[tuple[Path, str]]) -> None:
                got = send(port, share)
                with lock:
                    answers.extend(got)

            started = time.monotonic()
            threads = [threading.Thread(target=run, args=(s,)) for s in shares if s]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            acknowledged = time.monotonic() - started
            accepted = [study for (_, study) in burst_films]
            ok = sum(1 for _, _, status in answers if status == 0)
            print(f"{ok}/{len(burst_films)} answered Success in {acknowledged:.1f} s", flush=True)
            pacs.wait(accepted, args.timeout)
            with pacs.lock:
                done = [pacs.complete_at[k] for k in accepted if k in pacs.complete_at]
            finished = (max(done) if done else time.monotonic()) - started
        finally:
            node.terminate()
            try:
                node.wait(120)
            except subprocess.TimeoutExpired:
                node.kill()
            memory.done.set()
            memory.join()
        lost = len(accepted) - len(done)
        per_minute = len(done) / finished * 60 if done else 0.0
        print(f"{len(done)} results in {finished:.1f} s: {per_minute:.1f}/min", flush=True)

        offline_films = [str(p) for p, _ in burst_films[: args.offline]]
        began = time.monotonic()
        subprocess.run(
            [*PACSNODE, "analyze", *offline_films, "--out", str(tmp / "offline")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        offline_seconds = time.monotonic() - began
        offline_rate = len(offline_films) / offline_seconds * 60
        print(f"offline analyze {offline_rate:.1f} films/min", flush=True)
    finally:
        pacs.server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    burst = [answered for _, answered, _ in answers]
    ratio = per_minute / offline_rate
    idle_p95, burst_p95 = percentile(idle, 95), percentile(burst, 95)
    report = {
        "what": (
            "N films over C parallel associations into `pacsnode serve` until SEG and SR "
            "of each are in a PACS stand-in (pynetdicom SCP), against offline `pacsnode "
            "analyze` on the same films in the same run"
        ),
        "films": args.films,
        "associations": args.associations,
        "film_mb": round(size_mb, 1),
        "transfer_syntaxes": syntaxes,
        "processes": args.processes if args.processes is not None else usable_cores(),
        "answer_seconds": {"idle": summary(idle), "burst": summary(burst)},
        "all_acknowledged_seconds": round(acknowledged, 2),
        "answered_success": ok,
        "results_complete": len(done),
        "lost": lost,
        "last_result_seconds": round(finished, 2),
        "results_per_minute": round(per_minute, 2),
        "offline_films": len(offline_films),
        "offline_seconds": round(offline_seconds, 2),
        "offline_films_per_minute": round(offline_rate, 2),
        "speedup_over_offline": round(ratio, 3),
        "peak_memory_mb": round(memory.peak / 1e6, 1),
        "peak_memory_processes": memory.peak_processes,
        "peak_memory_breakdown": memory.breakdown,
        "largest_rss_mb_per_process": {k: round(v / 1e6) for k, v in memory.largest.items()},
        "bars": {
            "nothing_lost": lost == 0 and ok == len(burst_films),
            "peak_memory_under_2gb": memory.peak <= MEMORY_BAR_BYTES,
            "results_per_minute_1_6x_offline": ratio >= 1.6,
            "burst_answer_p95_within_2x_idle": burst_p95 <= 2 * idle_p95,
        },
        "machine": {
            "cores": usable_cores(),
            "load_average_before": load_before,
            "python": platform.python_version(),
            "cpu": platform.processor() or platform.machine(),
        },
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
