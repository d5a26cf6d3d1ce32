"""Axes and shapes of a batch laid out as (N, C) or (N, C, *spatial): one statistic per channel (axis 1)."""

from __future__ import annotations

import math

import numpy as np


def reduction_axes(ndim: int) -> tuple[int, ...]:
    """Axes batch norm reduces over: all but the channel axis 1. ``reduction_axes(4) == (0, 2, 3)``."""
    return (0,) + tuple(range(2, ndim))


def values_per_channel(shape: tuple[int, ...]) -> int:
    """m, the number of values that share one channel's statistics: N * prod(spatial)."""
    return math.prod(shape) // shape[1]


def as_channel(vector: np.ndarray, ndim: int) -> np.ndarray:
    """View a (C,) vector as (1, C, 1, ..., 1) so it broadcasts against an ndim-D batch."""
    return np.reshape(vector, (1, -1) + (1,) * (ndim - 2))


def channel_sum(a: np.ndarray) -> np.ndarray:
    """Sum of ``a`` over every axis but 1, shape (C,)."""
    return a.sum(axis=reduction_axes(a.ndim))
