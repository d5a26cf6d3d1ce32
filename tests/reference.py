"""Test helpers: inputs whose channels differ, and PyTorch's results for the same computation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def channel_batch(rng: np.random.Generator, shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """A batch whose channels have clearly different means and scales, so a wrong reduction axis shows."""
    channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    x = rng.standard_normal(shape) * rng.uniform(0.3, 4.0, channel) + rng.uniform(-6.0, 6.0, channel)
    return x.astype(dtype)


def affine_params(rng: np.random.Generator, num_channels: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """gamma with mixed signs and magnitudes, beta non-zero."""
    gamma = rng.uniform(0.5, 2.0, num_channels) * rng.choice([-1.0, 1.0], num_channels)
    beta = rng.standard_normal(num_channels)
    return gamma.astype(dtype), beta.astype(dtype)


def torch_train_forward_backward(x, gamma, beta, dout, eps=1e-5):
    """torch's training-mode batch norm on the same numbers: (out, dx, dgamma, dbeta) as numpy arrays."""
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.tensor(gamma, requires_grad=True)
    bt = torch.tensor(beta, requires_grad=True)
    out = F.batch_norm(xt, None, None, gt, bt, training=True, eps=eps)
    dx, dgamma, dbeta = torch.autograd.grad(out, (xt, gt, bt), torch.tensor(dout))
    return out.detach().numpy(), dx.numpy(), dgamma.numpy(), dbeta.numpy()


def tolerances(dtype) -> dict:
    """assert_allclose tolerances that fit the dtype."""
    return {"rtol": 1e-10, "atol": 1e-11} if np.dtype(dtype) == np.float64 else {"rtol": 2e-5, "atol": 2e-5}
