"""``pacsnode serve``: run the node until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TextIO

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


def configure_logging(
    level: str, *, log_phi: bool = False, stream: TextIO | None = None
) -> logging.Handler:
    """Log to ``stream`` (stderr) at ``level``, patient values screened out.

    Every record passes the patient screen of the film being handled
    (:class:`~pacsnode.audit.screen.ScreeningFilter`). pynetdicom at DEBUG dumps whole
    datasets and PDUs, pydicom at DEBUG every element it reads, and highdicom narrates
    the modules it copies: they stay at WARNING, at INFO under ``--log-level DEBUG``, and
    only ``log_phi`` lets them (and unscreened messages) through at DEBUG.

    Returns
    -------
    logging.Handler
        The handler installed on the root logger.
    """
    from pynetdicom import _config

    from pacsnode.audit.screen import ScreeningFilter

    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(_ContextFormatter(LOG_FORMAT))
    if not log_phi:
        handler.addFilter(ScreeningFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # pydicom and highdicom also warn with values quoted: through the log, so screened.
    logging.captureWarnings(True)
    debug = level == "DEBUG"
    libraries = logging.DEBUG if debug and log_phi else logging.INFO if debug else logging.WARNING
    for library in ("pynetdicom", "pydicom", "highdicom"):
        logging.getLogger(library).setLevel(libraries)
    # pynetdicom logs C-FIND/C-GET/C-MOVE identifiers at INFO: never without log_phi.
    _config.LOG_REQUEST_IDENTIFIERS = log_phi
    _config.LOG_RESPONSE_IDENTIFIERS = log_phi
    return handler


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
        "--no-migrate",
        action="store_true",
        help="do not migrate the database at start; refuse to start unless it is already at "
        "the newest schema (run `pacsnode db upgrade` first)",
    )
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
    sv.add_argument(
        "--log-phi",
        action="store_true",
        help="let DEBUG logging show patient data: pynetdicom's and pydicom's dumps of "
        "datasets, and messages unscreened (for a test system only)",
    )
    sv.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from pacsnode.config import load_settings
    from pacsnode.node import Node, Role

    configure_logging(args.log_level, log_phi=args.log_phi)
    settings = load_settings(args.config)
    if settings.metrics.enabled:
        from pacsnode.metrics import use_multiprocess_dir

        # Before anything imports prometheus_client: every process of this node then
        # counts into files that the one endpoint adds up.
        use_multiprocess_dir(settings.storage.data_dir)
    stop = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        log.info("%s received: stopping", signal.Signals(number).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node = Node(settings, Role(args.role), migrate=not args.no_migrate)
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
    if node.metrics_address is not None:
        print("pacsnode: metrics on http://{}:{}/metrics".format(*node.metrics_address), flush=True)
    while not stop.wait(1.0):
        pass
    node.stop()
    print("pacsnode: stopped", flush=True)
    return 0
