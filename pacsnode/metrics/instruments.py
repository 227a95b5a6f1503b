"""The node's own Prometheus instruments: what each process counts and times as it works.

Names follow the Prometheus guide (``pacsnode_<noun>_<unit>``, ``_total`` for counters)
and every label has a bounded set of values: a status, a stage, a destination name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["NO_METRICS", "STAGE_BUCKETS", "Metrics", "NoMetrics"]

STAGE_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
"""Histogram bounds (seconds): a header check takes milliseconds, a stack stage on CPU
a second or so, a send to a slow PACS up to its 30 s timeout."""


class NoMetrics:
    """Instruments that record nothing: the node without ``[metrics]``.

    Also the interface :class:`Metrics` implements, so callers never test for None.
    """

    def store_answered(self, status: int, seconds: float) -> None:
        """A C-STORE was answered with DIMSE ``status`` after ``seconds`` in the handler."""

    def analysed(self, stages: Mapping[str, float]) -> None:
        """A film went through the analysis; ``stages`` maps each stage to its seconds."""

    def observe(self, stage: str, seconds: float) -> None:
        """One pass through ``stage`` took ``seconds``."""

    def delivery_ended(self, destination: str, outcome: str) -> None:
        """A send of a result to ``destination`` ended: ``outcome`` sent, failed or dead."""

    def models_loaded(self, versions: Mapping[str, str]) -> None:
        """This process now analyses with these networks (name -> version)."""


NO_METRICS: Final = NoMetrics()


class Metrics(NoMetrics):
    """The instruments of one node process.

    Parameters
    ----------
    registry
        Where they are collected from: the endpoint's registry in a single process, or
        None in multiprocess mode, where values go to the files of
        ``PROMETHEUS_MULTIPROC_DIR`` and the endpoint reads them all.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.cstore = Counter(
            "pacsnode_cstore_responses",
            "C-STORE requests answered by the listener, by DIMSE status.",
            ["status"],
            registry=registry,
        )
        self.stage = Histogram(
            "pacsnode_stage_seconds",
            "Time spent in each stage of a film's path: receive (the C-STORE handler), "
            "read, each stage of the model stack, build (SEG and SR), deliver (one send).",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.delivery = Counter(
            "pacsnode_delivery_attempts",
            "Result objects offered to a destination, by outcome (sent, failed, dead).",
            ["destination", "outcome"],
            registry=registry,
        )
        # Not an Info: those do not work in multiprocess mode. "max": a network's
        # version is the same in every analysis process of one node.
        self.model = Gauge(
            "pacsnode_model_info",
            "The networks this node analyses with, one series per network and version.",
            ["network", "version"],
            registry=registry,
            multiprocess_mode="max",
        )

    def store_answered(self, status: int, seconds: float) -> None:
        self.cstore.labels(status=f"0x{status:04X}").inc()
        self.stage.labels(stage="receive").observe(seconds)

    def analysed(self, stages: Mapping[str, float]) -> None:
        for stage, seconds in stages.items():
            self.stage.labels(stage=stage).observe(seconds)

    def observe(self, stage: str, seconds: float) -> None:
        self.stage.labels(stage=stage).observe(seconds)

    def delivery_ended(self, destination: str, outcome: str) -> None:
        self.delivery.labels(destination=destination, outcome=outcome).inc()

    def models_loaded(self, versions: Mapping[str, str]) -> None:
        for network, version in versions.items():
            self.model.labels(network=network, version=version).set(1)
