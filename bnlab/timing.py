"""Wall-clock timing used by the benchmarks and by lectures 4 and 6: warm-up, then a median.

A time in milliseconds depends on the machine and on its load. Lectures 4 and 6 therefore measure a control in
the same run: the time of copying one array of the batch's size into a preallocated one, which reads it once and
writes it once, two passes over memory at the speed this machine streams data. Any other time divided by half
the copy's is its **pass-equivalents** (:func:`pass_equivalents`): how many such passes it would have taken,
comparable with the passes an implementation makes on paper.

* :func:`median_ms`, :func:`compare_ms`, :func:`fastest_ms`: a median; interleaved best-of-rounds medians of
  several functions; the fastest of many interleaved calls (what the copy control uses).
* :func:`bandwidth_from_copy`, :func:`pass_equivalents`: the arithmetic of the copy control.
* :func:`minor_page_faults`: page faults per call (the first write to freshly mapped memory), a second control.
* :func:`time_against_copy`: times functions and the copy together and returns a :class:`CopyControlled`.
* :func:`time_batchnorm_implementations`, :func:`time_torch_batch_norms`: the benchmarks' timings.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnlab._validation import check_float, check_int


def pin_threads(n: int = 1) -> None:
    """Pin BLAS/OpenMP pools; call before numpy or torch is imported (it sets environment variables)."""
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


def compare_ms(functions: dict[str, Callable[[], object]], repeats: int = 10, rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` median ms per function, the functions interleaved round by round.

    Interleaving exposes every function to the same background load, and the best median of a few rounds
    discards rounds that another process disturbed: ratios between the results are what this is for.
    """
    best = {name: float("inf") for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            best[name] = min(best[name], median_ms(fn, repeats, warmup=1))
    return best


def fastest_ms(functions: Mapping[str, Callable[[], object]], repeats: int = 5, rounds: int = 3) -> dict[str, float]:
    """The fastest of ``rounds * repeats`` timed calls of each function, in ms, the functions interleaved.

    Each round calls every function once untimed, then ``repeats`` times timed. Background load only ever adds
    time, so on a shared machine the fastest call is the least disturbed estimate of what the work itself costs
    (:func:`compare_ms` reports medians instead, which include typical disturbances).
    """
    repeats, rounds = check_int(repeats, "repeats"), check_int(rounds, "rounds")
    best = {name: math.inf for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            fn()
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: 1e3 * seconds for name, seconds in best.items()}


def bandwidth_from_copy(array_bytes: int, copy_ms: float) -> float:
    """Bytes per second a copy of ``array_bytes`` bytes moved in ``copy_ms`` ms: it reads and writes each byte.

    ``bandwidth_from_copy(16 * 2**20, 1.0)`` is 2 * 16 MiB per millisecond, about 33.6e9 B/s.
    """
    array_bytes = check_int(array_bytes, "array_bytes")
    copy_ms = check_float(copy_ms, "copy_ms", 0.0, inclusive=False)
    return 2 * array_bytes / (copy_ms * 1e-3)


def pass_equivalents(ms: float, copy_ms: float) -> float:
    """``ms`` in units of one pass over the array, where a copy of it (one read, one write) took ``copy_ms``.

    Equals ``ms * bandwidth / array_bytes`` with the bandwidth of :func:`bandwidth_from_copy`: a function that
    streams the array k times at the copy's speed scores k. The copy itself scores 2.
    """
    ms = check_float(ms, "ms", 0.0)
    copy_ms = check_float(copy_ms, "copy_ms", 0.0, inclusive=False)
    return 2 * ms / copy_ms


def minor_page_faults(fn: Callable[[], object], calls: int = 3) -> float:
    """Minor page faults per call of ``fn()`` (after one untimed call), from ``getrusage``; NaN where unavailable.

    A minor fault is the kernel mapping (and zeroing) a page the process touches for the first time: memory that
    an allocator has just obtained from the system, not memory it reused. The count is per process, so run
    nothing else meanwhile.
    """
    calls = check_int(calls, "calls")
    try:
        import resource
    except ImportError:  # not on Windows
        return math.nan
    fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


@dataclass(frozen=True)
class CopyControlled:
    """Times of several functions on one batch, with the copy of an array of that size measured alongside.

    Attributes:
        ms: the fastest call's milliseconds per function name (:func:`fastest_ms`).
        copy_ms: the same for copying the array into a preallocated one (two passes: read, write).
        array_bytes: bytes of that array.
        faults: minor page faults per call per function name (:func:`minor_page_faults`), copy included
            under ``"copy"``.
    """

    ms: Mapping[str, float]
    copy_ms: float
    array_bytes: int
    faults: Mapping[str, float]

    @property
    def bandwidth(self) -> float:
        """Bytes per second the copy moved (read + write): :func:`bandwidth_from_copy`."""
        return bandwidth_from_copy(self.array_bytes, self.copy_ms)

    def pass_equivalents(self, name: str) -> float:
        """The time of ``name`` in passes over the array at the copy's speed: :func:`pass_equivalents`."""
        return pass_equivalents(self.ms[name], self.copy_ms)


def _copy_into_buffer(array: Any) -> Callable[[], object]:
    """A function copying ``array`` (numpy array or torch tensor) into a buffer allocated once, here."""
    if hasattr(array, "copy_") and hasattr(array, "detach"):  # a torch tensor
        source = array.detach()
        buffer = source.clone()
        return lambda: buffer.copy_(source)
    source = np.asarray(array)
    buffer = np.empty_like(source)
    return lambda: np.copyto(buffer, source)


def time_against_copy(functions: Mapping[str, Callable[[], object]], array: Any, repeats: int = 5,
                      rounds: int = 3, fault_calls: int = 2) -> CopyControlled:
    """Time ``functions`` and a copy of ``array`` together, interleaved, and count their page faults.

    Args:
        functions: name -> a function of no arguments (the work to time). ``"copy"`` is reserved.
        array: a numpy array or torch tensor of the batch's size and dtype; the control copies it into a
            preallocated buffer of the same kind.
        repeats, rounds: as :func:`fastest_ms` (the copy takes part in every round).
        fault_calls: calls per function for :func:`minor_page_faults`, after the timing.

    Returns:
        A :class:`CopyControlled`; machine- and load-dependent: show it, never check it in a lecture.
    """
    if "copy" in functions:
        raise ValueError("time_against_copy reserves the name 'copy' for its control; rename that function")
    if not functions:
        raise ValueError("time_against_copy needs at least one function to time, got none")
    everything = {"copy": _copy_into_buffer(array), **functions}
    ms = fastest_ms(everything, repeats, rounds)
    faults = {name: minor_page_faults(fn, fault_calls) for name, fn in everything.items()}
    nbytes = array.numel() * array.element_size() if hasattr(array, "element_size") else np.asarray(array).nbytes
    copy_ms = ms.pop("copy")
    return CopyControlled(ms, copy_ms, int(nbytes), faults)


def time_batchnorm_implementations(
    shape: tuple[int, ...], repeats: int = 10, seed: int = 0, backward_only: bool = False, rounds: int = 3
) -> dict[str, float]:
    """Median ms of float32 training-mode batch norm: numpy staged, numpy fused, and torch's native kernel.

    With ``backward_only`` the forward runs once outside the timed region and only the backward is timed
    (torch's via ``autograd.grad`` on a retained graph); otherwise each timed call is forward + backward.
    Returns ``{"numpy staged": ms, "numpy fused": ms, "torch native": ms}``, torch at whatever thread count is
    set (``bnlab.notebook.setup`` pins it to 1).
    """
    import torch
    import torch.nn.functional as F

    from bnlab.functional import (
        batchnorm_backward,
        batchnorm_backward_fused,
        batchnorm_forward,
    )

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)
    xt, gt, bt = (torch.from_numpy(a.copy()).requires_grad_() for a in (x, gamma, beta))
    dt = torch.from_numpy(dout)
    _, cache = batchnorm_forward(x, gamma, beta)
    graph = F.batch_norm(xt, None, None, gt, bt, training=True)

    def numpy_step(backward):
        if backward_only:
            return lambda: backward(dout, cache)
        return lambda: backward(dout, batchnorm_forward(x, gamma, beta)[1])

    def torch_step():
        out = graph if backward_only else F.batch_norm(xt, None, None, gt, bt, training=True)
        return torch.autograd.grad(out, (xt, gt, bt), dt, retain_graph=backward_only)

    return compare_ms({
        "numpy staged": numpy_step(batchnorm_backward),
        "numpy fused": numpy_step(batchnorm_backward_fused),
        "torch native": torch_step,
    }, repeats, rounds)


def time_torch_batch_norms(shape: tuple[int, ...], repeats: int = 10, seed: int = 0,
                           rounds: int = 3) -> dict[str, float]:
    """Median ms of one float32 training-mode forward + backward: ``bnlab.nn.batch_norm`` vs torch's kernel.

    Returns ``{"bnlab.nn (Python, closed form)": ms, "torch native (C++)": ms}`` at the current thread count.
    """
    import torch
    import torch.nn.functional as F

    from bnlab.nn import batch_norm

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator).requires_grad_()
    weight = (torch.rand(shape[1], generator=generator) + 0.5).requires_grad_()
    bias = torch.randn(shape[1], generator=generator).requires_grad_()
    upstream = torch.randn(shape, generator=generator)

    def step(function):
        def run():
            out = function(x, None, None, weight, bias, training=True)
            return torch.autograd.grad(out, (x, weight, bias), upstream)
        return run

    return compare_ms({"bnlab.nn (Python, closed form)": step(batch_norm),
                       "torch native (C++)": step(F.batch_norm)}, repeats, rounds)
