"""Lecture 4's computations: passes over memory counted line by line, and times measured against a copy.

* :data:`TALLY`: for the numpy forward and the two numpy backwards of :mod:`bnlab.functional`, every line that
  touches a batch-sized array, with the batch-sized arrays it reads and writes (numpy evaluates each operator
  into a new batch-sized array; per-channel values are too small to count). ``tests/test_lesson_closed_form.py``
  checks each line against the current source and recounts it operation by operation.
* :data:`FLOORS`: the least any implementation can read and write, in passes.
* :func:`passes`: the total of a tally.
* :data:`OPERATION_PASSES` and :func:`time_single_operations`: the control for the counting itself, four kinds
  of single numpy operation the implementations are made of, timed the same way.
* :func:`time_closed_form`: the numpy forward, both numpy backwards and PyTorch's native backward, timed with a
  copy of the batch in the same run (:func:`bnlab.timing.time_against_copy`), so that each time can be read in
  pass-equivalents beside its counted passes.
"""

from __future__ import annotations

import numpy as np

from bnlab._channels import as_channel, reduction_axes
from bnlab._validation import check_choice, check_int
from bnlab.functional import (
    batchnorm_backward,
    batchnorm_backward_fused,
    batchnorm_forward,
)
from bnlab.timing import CopyControlled, time_against_copy

__all__ = ["FLOORS", "OPERATION_PASSES", "TALLY", "passes", "time_closed_form", "time_single_operations"]

# (source line, batch-sized arrays read, batch-sized arrays written). An array read twice by one operation
# (xc * xc) is one read: the second load of each element comes from the cache.
TALLY: dict[str, tuple[tuple[str, int, int], ...]] = {
    "numpy forward": (  # bnlab.functional._train_forward
        ("mu = x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)", 1, 0),
        ("xc = x - mu", 1, 1),
        ("var = (xc * xc).mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)", 2, 1),
        ("xhat = xc * inv", 1, 1),
        ("out = gamma * xhat + beta", 2, 2),
    ),
    "numpy staged backward": (  # bnlab.functional.batchnorm_backward
        ("dbeta = dout.sum(axis=axes)", 1, 0),
        ("dgamma = (dout * xhat).sum(axis=axes)", 3, 1),
        ("dxhat = dout * gamma", 1, 1),
        ("dinv = (dxhat * xc).sum(axis=axes, keepdims=True)", 3, 1),
        ("dxc = dxhat * inv  # first of the two branches into xc", 1, 1),
        ("dxc = dxc + (2 / m) * xc * dvar", 4, 3),
        ("dmu = -dxc.sum(axis=axes, keepdims=True)", 1, 0),
        ("dx = dx + dmu / m", 1, 1),
    ),
    "numpy fused backward": (  # bnlab.functional.batchnorm_backward_fused
        ("dbeta = channel_sum(dout)", 1, 0),
        ("dgamma = channel_sum(dout * xhat)", 3, 1),
        ("dx = (gamma * inv / m) * (m * dout - as_channel(dbeta, x.ndim) - xhat * as_channel(dgamma, x.ndim))",
         6, 5),
    ),
}

# The least traffic, in passes over an array of the batch's size. Forward: read x once for both statistics
# (one pass with Welford's update), read it again to normalize, write y. Backward: read dy and x (or xhat) for
# the two sums, read them again for dx, write dx.
FLOORS: dict[str, int] = {"forward": 3, "backward": 5}


def passes(name: str) -> int:
    """Reads + writes of batch-sized arrays in :data:`TALLY` ``[name]``: 12, 23 and 16 passes."""
    name = check_choice(name, "name", TALLY)
    return sum(reads + writes for _, reads, writes in TALLY[name])


def _checked_shape(shape) -> tuple[int, ...]:
    """A batch shape (N, C) or (N, C, *spatial) of positive integers."""
    shape = tuple(check_int(n, "shape entry") for n in shape)
    if len(shape) < 2:
        raise ValueError(f"each shape must be (N, C) or (N, C, *spatial), got {shape!r}")
    return shape


def _implementations(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, dict]:
    """The float32 batch of ``shape`` and the four timed functions of :func:`time_closed_form` on it."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    dout = rng.standard_normal(shape).astype(np.float32)
    gamma = rng.uniform(0.5, 2.0, shape[1]).astype(np.float32)
    beta = rng.standard_normal(shape[1]).astype(np.float32)
    _, cache = batchnorm_forward(x, gamma, beta)
    leaves = [torch.from_numpy(a.copy()).requires_grad_() for a in (x, gamma, beta)]
    graph = F.batch_norm(leaves[0], None, None, leaves[1], leaves[2], training=True)
    upstream = torch.from_numpy(dout)
    return x, {
        "numpy forward": lambda: batchnorm_forward(x, gamma, beta),
        "numpy staged backward": lambda: batchnorm_backward(dout, cache),
        "numpy fused backward": lambda: batchnorm_backward_fused(dout, cache),
        "torch native backward": lambda: torch.autograd.grad(graph, leaves, upstream, retain_graph=True),
    }


def time_closed_form(shapes: tuple[tuple[int, ...], ...] = ((256, 1024), (64, 64, 32, 32)), repeats: int = 5,
                     rounds: int = 3, seed: int = 0) -> dict[tuple[int, ...], CopyControlled]:
    """Time the numpy forward, both numpy backwards and torch's native backward, against a copy, per shape.

    float32 inputs (x, dout random normal; gamma, beta per channel), torch at its current thread count
    (``bnlab.notebook.setup`` pins it to 1). The backwards run on one cached forward; torch's backward is
    ``autograd.grad`` on a retained graph of ``F.batch_norm``.

    Returns:
        ``{shape: CopyControlled}`` (:class:`bnlab.timing.CopyControlled`) with the names ``"numpy forward"``,
        ``"numpy staged backward"``, ``"numpy fused backward"`` and ``"torch native backward"``. Machine- and
        load-dependent: show it in a figure, never check it.
    """
    repeats, rounds = check_int(repeats, "repeats"), check_int(rounds, "rounds")
    results = {}
    for shape in shapes:
        shape = _checked_shape(shape)
        x, functions = _implementations(shape, seed)
        results[shape] = time_against_copy(functions, x, repeats, rounds)
    return results


# The kinds of operation the tallied lines are made of, each with its passes (reads + writes).
OPERATION_PASSES: dict[str, int] = {
    "x * y (same shape)": 3,
    "x * gamma (gamma per channel)": 2,
    "x.sum(axis=axes)": 1,
    "x.mean(axis=axes, dtype=np.float64)": 1,
}


def _operations(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, dict]:
    """The float32 batch of ``shape`` and one function per entry of :data:`OPERATION_PASSES` on it."""
    rng = np.random.default_rng(seed)
    x, y = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    gamma = as_channel(rng.uniform(0.5, 2.0, shape[1]).astype(np.float32), len(shape))
    axes = reduction_axes(len(shape))
    operations = [lambda: x * y, lambda: x * gamma, lambda: x.sum(axis=axes),
                  lambda: x.mean(axis=axes, dtype=np.float64)]
    return x, dict(zip(OPERATION_PASSES, operations))


def time_single_operations(shapes: tuple[tuple[int, ...], ...] = ((256, 1024), (64, 64, 32, 32)),
                           repeats: int = 5, rounds: int = 3,
                           seed: int = 0) -> dict[tuple[int, ...], CopyControlled]:
    """Time each operation of :data:`OPERATION_PASSES` on a float32 batch, against a copy, per shape.

    ``axes`` are the batch norm reduction axes (all but 1) and gamma has shape (1, C, 1, ...), as in
    :mod:`bnlab.functional`. Returns ``{shape: CopyControlled}`` with the names of :data:`OPERATION_PASSES`.
    """
    repeats, rounds = check_int(repeats, "repeats"), check_int(rounds, "rounds")
    results = {}
    for shape in shapes:
        shape = _checked_shape(shape)
        x, functions = _operations(shape, seed)
        results[shape] = time_against_copy(functions, x, repeats, rounds)
    return results
