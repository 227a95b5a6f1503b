"""A long run of the listener fuzzer against the real node: ``pacsnode serve`` in its own
process, one damaged film per association, then a clean film whose SEG and SR must come
back.

The inputs are those of :mod:`tests.fuzz` (deterministic for a seed). Recorded: inputs
sent, the node's answers counted by status (and by mutation), 0000 answers to films the
project's reader cannot decode (must be 0), node restarts (must be 0: a node that died is
restarted and counted), the node's largest resident memory (``VmHWM`` of its process;
its resident memory right after start, models loaded, for comparison), and what became
of the clean film.

Usage: python benchmarks/fuzz.py [--inputs 1000] [--seed 1] [--out benchmarks/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, SegmentationStorage
from pynetdicom import AE, evt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fuzzer lives with the tests

from pacsnode.training.phantom import make_phantom, write_phantom  # noqa: E402
from tests.fuzz import Fuzzer, Mutant, decodable, echo, send  # noqa: E402

PHANTOM_SEED = 900_017  # a benchmark-only seed, used for nothing else


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pacs:
    """A pynetdicom storage SCP standing in for the PACS; counts what arrives by study."""

    def __init__(self) -> None:
        self.port = free_port()
        self.studies: Counter[str] = Counter()
        self._lock = threading.Lock()
        ae = AE(ae_title="FAKEPACS")
        for sop_class in (SegmentationStorage, ComprehensiveSRStorage):
            ae.add_supported_context(sop_class, ExplicitVRLittleEndian)
        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event: evt.Event) -> int:
        with self._lock:
            self.studies[str(event.dataset.StudyInstanceUID)] += 1
        return 0x0000

    def stop(self) -> None:
        self._server.shutdown()


class NodeProcess:
    """``pacsnode serve`` with a configuration of its own, restarted if it dies."""

    def __init__(self, work: Path, pacs_port: int) -> None:
        self.port = free_port()
        self.config = work / "pacsnode.toml"
        self.log = work / "node.log"
        self.config.write_text(
            f"""
[node]
host = "127.0.0.1"
port = {self.port}

[storage]
data_dir = "{work / "data"}"
min_free_mb = 1

[worker]
backoff_base_seconds = 1.0
backoff_max_seconds = 2.0

[[destinations]]
name = "pacs"
ae_title = "FAKEPACS"
host = "127.0.0.1"
port = {pacs_port}
""",
            encoding="utf-8",
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.peak_rss_kib = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pacsnode", "serve", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        deadline = time.monotonic() + 180
        while not echo(self.port, timeout=2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the node did not start; see {self.log}")
            time.sleep(0.5)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def sample(self) -> int:
        """Keep the process's largest resident set (VmHWM, KiB) seen so far; return its
        resident set now (VmRSS, KiB), 0 when unknown."""
        if not self.alive():
            return 0
        assert self.process is not None
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return 0
        now = 0
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))
            elif line.startswith("VmRSS:"):
                now = int(line.split()[1])
        return now

    def ensure(self) -> None:
        if not self.alive():
            self.restarts += 1
            print(
                f"\nnode died (exit {self.process and self.process.poll()}); restarting",
                file=sys.stderr,
            )
            self.start()

    def stop(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1000, help="damaged films to send")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fuzz.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()
    from tqdm import tqdm

    started = time.monotonic()
    statuses: Counter[str] = Counter()
    by_mutation: dict[str, Counter[str]] = defaultdict(Counter)
    violations: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="pacsnode-fuzz-") as tmp:
        work = Path(tmp)
        pacs = Pacs()
        node = NodeProcess(work, pacs.port)
        node.start()
        idle_rss_kib = node.sample()  # models loaded, nothing received yet
        try:
            fuzzer = Fuzzer(args.seed)
            bar = tqdm(total=args.inputs, unit="film", disable=args.quiet, file=sys.stderr)
            for mutant in fuzzer.mutants(args.inputs):
                node.ensure()
                sent = send(node.port, mutant, work)
                statuses[sent.label] += 1
                by_mutation[mutant.mutation][sent.label] += 1
                if sent.status == 0 and not decodable(mutant.data):
                    violations.append({"index": mutant.index, "mutation": mutant.mutation})
                if mutant.index % 25 == 0:
                    node.sample()
                bar.update(1)
                bar.set_postfix(
                    restarts=node.restarts,
                    refused=sum(
                        n
                        for label, n in statuses.items()
                        if label.startswith("0x") and label != "0x0000"
                    ),
                )
            bar.close()
            node.ensure()
            node.sample()
            fuzz_peak_kib = node.peak_rss_kib  # before the full-size clean film
            clean = _clean_film(work)
            t0 = time.monotonic()
            clean_status = send(node.port, clean, work)
            study = str(
                dcmread(work / "clean" / "film.dcm", stop_before_pixels=True).StudyInstanceUID
            )
            deadline = time.monotonic() + 600
            while pacs.studies[study] < 2 and time.monotonic() < deadline and node.alive():
                node.sample()
                time.sleep(0.5)
            clean_seconds = time.monotonic() - t0
            node.sample()
            alive_at_end = node.alive()
        finally:
            node.stop()
            pacs.stop()
    elapsed = time.monotonic() - started
    answered = sum(n for label, n in statuses.items() if label.startswith("0x"))
    record = {
        "what": "listener fuzzer against `pacsnode serve` (own process), one damaged film "
        "per association, then a clean film",
        "seed": args.seed,
        "inputs": args.inputs,
        "answered_by_node": answered,
        "statuses": dict(sorted(statuses.items())),
        "statuses_by_mutation": {
            m: dict(sorted(c.items())) for m, c in sorted(by_mutation.items())
        },
        "zero_status_for_undecodable": len(violations),
        "violations": violations[:20],
        "node_restarts": node.restarts,
        "node_alive_at_end": alive_at_end,
        "node_peak_rss_mib": round(node.peak_rss_kib / 1024, 1),
        "node_rss_after_start_mib": round(idle_rss_kib / 1024, 1),
        "node_peak_rss_before_clean_film_mib": round(fuzz_peak_kib / 1024, 1),
        "clean_film_after": {
            "status": clean_status.label,
            "seg_and_sr_received": pacs.studies[study] >= 2,
            "seconds_to_results": round(clean_seconds, 1),
        },
        "seconds": round(elapsed, 1),
        "machine": {
            "cpu": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "command": "python benchmarks/fuzz.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=1))


def _clean_film(work: Path) -> Mutant:
    out = work / "clean"
    out.mkdir()
    path = write_phantom(make_phantom(PHANTOM_SEED, 0, "lumbar"), out, preview=False)["dicom"]
    path = path.rename(out / "film.dcm")
    ds = dcmread(path, stop_before_pixels=True)
    return Mutant(-1, "none", "", path.read_bytes(), str(ds.SOPClassUID), str(ds.SOPInstanceUID))


if __name__ == "__main__":
    main()
