"""``pacsnode serve``: run the node until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from pacsnode.errors import PacsnodeError

__all__ = ["add_serve_command"]

log = logging.getLogger("pacsnode.serve")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(threadName)s: %(message)s"


class _ContextFormatter(logging.Formatter):
    """Appends the structured context a record carries (``extra=``) as key=value pairs."""

    KEYS = ("job_id", "sop_instance_uid", "delivery_id", "destination")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in self.KEYS if hasattr(record, key)
        )
        return f"{text} [{context}]" if context else text


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    sv = sub.add_parser(
        "serve",
        help="run the DICOM node: listener, analysis and sending",
        description=(
            "Run the node: a C-STORE listener that spools and queues films, workers that "
            "analyse them, and a sender that returns the SEG and SR to every destination. "
            "Without --config it runs with the embedded defaults (those written out in "
            "config/pacsnode.toml): AE PACSNODE on port 11112, SQLite and spool under ./data, "
            "CPU. SIGTERM or Ctrl-C stops accepting, lets the current job finish and exits."
        ),
    )
    sv.add_argument("--config", type=Path, help="TOML settings file (default: embedded defaults)")
    sv.add_argument(
        "--role",
        choices=["all", "receiver", "worker"],
        default="all",
        help="run the listener and workers (all, default), or only one of them",
    )
    sv.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="application log level (default INFO; logs carry UIDs, never patient names)",
    )
    sv.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from pacsnode.config import load_settings
    from pacsnode.node import Node, Role

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_ContextFormatter(LOG_FORMAT))
    logging.basicConfig(level=args.log_level, handlers=[handler])
    # pynetdicom at DEBUG dumps whole datasets, names included, and highdicom narrates
    # every module it copies: keep both to warnings unless DEBUG was asked for.
    for library in ("pynetdicom", "highdicom"):
        logging.getLogger(library).setLevel(
            logging.DEBUG if args.log_level == "DEBUG" else logging.WARNING
        )
    settings = load_settings(args.config)
    stop = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node = Node(settings, Role(args.role))
    try:
        node.start()
    except OSError as exc:
        node.stop()
        raise PacsnodeError(f"cannot start: {exc}") from exc
    if node.address is not None:
        host, port = node.address
        print(
            f"pacsnode: {settings.node.ae_title} listening on {host}:{port} (role {args.role})",
            flush=True,
        )
    else:
        print(f"pacsnode: worker running (role {args.role})", flush=True)
    while not stop.wait(1.0):
        pass
    node.stop()
    print("pacsnode: stopped", flush=True)
    return 0
