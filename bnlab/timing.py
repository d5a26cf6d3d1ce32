"""Timing helpers shared by the benchmark scripts: warm-up, then the median of repeated runs."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable


def pin_threads(n: int = 1) -> None:
    """Pin BLAS/OpenMP pools before numpy or torch is imported (call first thing in a script)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)


def median_ms(fn: Callable[[], object], repeats: int = 20, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)
