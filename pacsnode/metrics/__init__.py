"""Prometheus metrics: the node's instruments, the queue read at scrape time, and the
``/metrics`` endpoint (``[metrics]`` in the settings)."""

from pacsnode.metrics.instruments import NO_METRICS, Metrics, NoMetrics
from pacsnode.metrics.server import MetricsEndpoint, process_metrics, use_multiprocess_dir

__all__ = [
    "NO_METRICS",
    "Metrics",
    "MetricsEndpoint",
    "NoMetrics",
    "process_metrics",
    "use_multiprocess_dir",
]
