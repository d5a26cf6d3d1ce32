"""The Jacobian of training-mode batch norm for one channel, built from the backward pass."""

from __future__ import annotations

import numpy as np

from bnlab.functional import batchnorm_backward_fused, batchnorm_forward


def channel_jacobian(values: np.ndarray, gamma: float = 1.0, eps: float = 1e-5) -> np.ndarray:
    """d out_i / d x_j for a single channel holding ``values`` (m,), in float64; shape (m, m).

    Row i is the backward of a one-hot upstream gradient at output i. In closed form it equals
    ``gamma / (m * s) * (m * I - 1 1^T - xhat xhat^T)`` with s = sqrt(var + eps): symmetric, with the
    constant vector in its null space and xhat almost in it (exactly as eps -> 0).
    """
    column = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    m = column.shape[0]
    _, cache = batchnorm_forward(column, np.array([float(gamma)]), np.zeros(1), eps)
    jacobian = np.empty((m, m))
    for i in range(m):
        one_hot = np.zeros_like(column)
        one_hot[i] = 1.0
        jacobian[i] = batchnorm_backward_fused(one_hot, cache)[0][:, 0]
    return jacobian
