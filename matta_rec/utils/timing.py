"""The one latency timer: wall-clock (and process CPU) milliseconds per call.

Used by :func:`matta_rec.export.measure_latency` (the manifest's latency),
``ModelHandle.measure_latency`` in evaluation and ``bench/serving_latency.py``,
so that every latency the project prints is measured the same way.

Example:

>>> times = time_calls(lambda: signature(**feeds), repeats=30, warmup=5)
>>> latency_summary(times.wall_ms, rows=256)["median_ms"]
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable, Sequence

__all__ = ["CallTimes", "latency_summary", "time_calls"]


@dataclasses.dataclass
class CallTimes:
    """Per-call timings of :func:`time_calls`, in call order.

    Args:
        wall_ms: wall-clock milliseconds of each timed call.
        cpu_ms: CPU milliseconds of this process (all its threads) during
            each timed call.
    """

    wall_ms: list = dataclasses.field(default_factory=list)
    cpu_ms: list = dataclasses.field(default_factory=list)

    @property
    def median_ms(self) -> float:
        """Median wall-clock milliseconds per call."""
        return float(statistics.median(self.wall_ms))


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 0) -> CallTimes:
    """Time ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    ``fn`` must finish its work before returning (fetch tensors to NumPy),
    else the asynchronous part is not timed.

    Args:
        fn: the call to time, without arguments.
        repeats: timed calls (>= 1).
        warmup: untimed calls first (tracing, caches).

    Returns:
        A :class:`CallTimes`.

    Raises:
        ValueError: ``repeats`` < 1 or ``warmup`` < 0.

    Example:

    >>> time_calls(lambda: sum(range(1000)), repeats=5).median_ms
    """
    if isinstance(repeats, bool) or int(repeats) != repeats or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    for _ in range(int(warmup)):
        fn()
    out = CallTimes()
    for _ in range(int(repeats)):
        cpu = time.process_time()
        start = time.perf_counter()
        fn()
        out.wall_ms.append((time.perf_counter() - start) * 1e3)
        out.cpu_ms.append((time.process_time() - cpu) * 1e3)
    return out


def latency_summary(times_ms: Sequence[float], rows: int = 1) -> dict:
    """Median, 10th / 90th percentile and per-row cost of call timings.

    Args:
        times_ms: milliseconds per call (e.g. ``CallTimes.wall_ms``).
        rows: rows per call (for ``per_example_us``).

    Returns:
        ``{"median_ms", "p10_ms", "p90_ms", "per_example_us", "repeats"}``;
        the percentiles are order statistics (no interpolation).

    Example:

    >>> latency_summary([1.0, 2.0, 3.0], rows=2)["per_example_us"]
    1000.0
    """
    if not len(times_ms):
        raise ValueError("no timings to summarise")
    ordered = sorted(float(t) for t in times_ms)
    median = statistics.median(ordered)
    return {
        "median_ms": median,
        "p10_ms": ordered[int(0.1 * (len(ordered) - 1))],
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
        "per_example_us": median * 1e3 / rows,
        "repeats": len(ordered),
    }
