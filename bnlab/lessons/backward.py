"""Lectures 3 and 4's computations (lecture 4 also has bnlab.lessons.closed_form): numbers behind figures and checks.

* :func:`torch_gradients`: PyTorch's (dx, dgamma, dbeta) for ``F.batch_norm``, the reference both lectures
  compare with.
* :func:`node_gradients`: dL/d(node) at every node of the forward's graph (mu, var, xc, ...), from torch
  autograd on the same steps as :func:`bnlab.functional.batchnorm_forward`: an independent check of a staged
  backward's intermediate values.
* :func:`finite_difference_study`: the error of a centred-difference dx against the step h, in float64 and
  float32, with the truncation-versus-rounding model that predicts the best step and the error floor, for the
  right backward and for eps left out of the backward (the catalogued mistake ``eps_missing_in_backward``), a
  slip only a float64 check can see.
* :func:`all_ones_trap` and :func:`catalogue_gradient_checks`: which catalogued backward mistakes an all-ones
  upstream gradient lets through, and what a proper gradient check says about each;
  :func:`unbiased_in_both`: what no gradient check can catch (a forward and backward on the same wrong
  convention).

Everything runs :mod:`bnlab.functional` (or torch) on plain arrays; nothing here re-implements a backward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlab._channels import reduction_axes
from bnlab._validation import (
    check_batch_input,
    check_eps,
    check_float,
    check_int,
    check_seed,
)
from bnlab.functional import batchnorm_backward, batchnorm_forward
from bnlab.gradcheck import numerical_gradient, rel_error
from bnlab.mistakes import BACKWARD_DX_MISTAKES, backward_with

__all__ = ["NODES", "FiniteDifferenceStudy", "all_ones_trap", "catalogue_gradient_checks",
           "finite_difference_study", "node_gradients", "step_tradeoff", "torch_gradients", "unbiased_in_both"]

NODES = ("x", "mu", "xc", "var", "std", "inv", "xhat", "gamma", "beta")  # bnlab.functional's names


def _as_float64_inputs(x, gamma, beta, dout) -> tuple[np.ndarray, ...]:
    """x, dout (N, C, ...) and gamma, beta (C,) as float64 arrays, checked through the forward's own checks."""
    x = check_batch_input(x).astype(np.float64)
    dout = check_batch_input(dout, "dout").astype(np.float64)
    if dout.shape != x.shape:
        raise ValueError(f"dout must have the shape of x {x.shape}, got {dout.shape}")
    batchnorm_forward(x, gamma, beta)  # the forward's checks of gamma, beta and the batch size
    return x, np.asarray(gamma, dtype=np.float64), np.asarray(beta, dtype=np.float64), dout


def torch_gradients(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dout: np.ndarray,
                    eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dgamma, dbeta) of ``torch.nn.functional.batch_norm`` in training mode, float64, as numpy arrays.

    x, dout: (N, C) or (N, C, *spatial); gamma, beta: (C,). dx has x's shape, dgamma and dbeta (C,).
    """
    import torch
    import torch.nn.functional as F

    x, gamma, beta, dout = _as_float64_inputs(x, gamma, beta, dout)
    eps = check_eps(eps)
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, gamma, beta)]
    out = F.batch_norm(tensors[0], None, None, tensors[1], tensors[2], training=True, eps=eps)
    grads = torch.autograd.grad(out, tensors, torch.tensor(dout))
    return tuple(g.numpy() for g in grads)  # type: ignore[return-value]


def node_gradients(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dout: np.ndarray,
                   eps: float = 1e-5) -> dict[str, np.ndarray]:
    """dL/d(node) for every node of batch norm's graph, by torch autograd on the forward's own steps.

    The forward is :func:`bnlab.functional.batchnorm_forward`'s seven steps written in torch (mu, xc, var,
    std, inv, xhat, out), with ``retain_grad`` on every intermediate, and ``L = sum(out * dout)``. Returns
    ``{name: gradient}`` for the names in :data:`NODES`, float64 numpy arrays: x, xc, xhat shaped like x;
    mu, var, std, inv in broadcast shape (1, C, 1, ...) -- a per-channel node gets one gradient per channel,
    summed over the batch by autograd -- and gamma, beta (C,).
    """
    import torch

    x, gamma, beta, dout = _as_float64_inputs(x, gamma, beta, dout)
    eps = check_eps(eps)
    axes = reduction_axes(x.ndim)
    channel = (1, -1) + (1,) * (x.ndim - 2)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    mu = xt.mean(dim=axes, keepdim=True)
    xc = xt - mu
    var = (xc * xc).mean(dim=axes, keepdim=True)
    std = torch.sqrt(var + eps)
    inv = 1 / std
    xhat = xc * inv
    out = gt.reshape(channel) * xhat + bt.reshape(channel)
    nodes = {"x": xt, "mu": mu, "xc": xc, "var": var, "std": std, "inv": inv, "xhat": xhat, "gamma": gt,
             "beta": bt}
    for tensor in nodes.values():
        tensor.retain_grad()
    out.backward(torch.tensor(dout))
    return {name: tensor.grad.numpy() for name, tensor in nodes.items()}


# ------------------------------------------------------------------------------------- finite differences


def step_tradeoff(curvature: float, machine_eps: float) -> tuple[float, float]:
    r"""Best step and smallest error of the model ``error(h) = K h**2 + eps / h``.

    ``K h**2`` is the centred difference's truncation error (K grows with the third derivative) and
    ``eps / h`` its rounding error (function values and steps rounded to machine precision eps, then divided
    by h). Setting the derivative ``2 K h - eps / h**2`` to zero gives :math:`h^* = (\epsilon / 2K)^{1/3}`, and
    there the error is :math:`3 K h^{*2}`, of order :math:`\epsilon^{2/3}`.

    Returns:
        (h_star, error_at_h_star).
    """
    curvature = check_float(curvature, "curvature", 0.0, inclusive=False)
    machine_eps = check_float(machine_eps, "machine_eps", 0.0, inclusive=False)
    h_star = (machine_eps / (2 * curvature)) ** (1 / 3)
    return h_star, 3 * curvature * h_star**2


@dataclass(frozen=True)
class FiniteDifferenceStudy:
    """Relative error of a centred-difference dx against the exact dx, for each step and dtype.

    ``errors[dtype_name]`` has one :func:`bnlab.gradcheck.rel_error` per entry of ``steps``. ``curvature`` is
    the truncation constant K fitted where truncation dominates (float64, h >= 1e-3), and for each dtype name
    ``predicted[name] = (h_star, floor)`` is :func:`step_tradeoff` with that dtype's machine epsilon.
    ``zero_fraction[dtype_name]`` is, per step, the fraction of entries of the numerical dx that are exactly
    0: where h is below half the spacing of the input's numbers, ``x + h`` and ``x - h`` round back to ``x``.
    ``input_spacing[dtype_name]`` is that spacing at the input's largest magnitude ``max |x|``.
    ``eps_missing_errors[dtype_name]`` is, per step, the relative error of the eps-missing-in-backward dx
    against the same numerical dx: what a gradient check at that step says about this slip.
    """

    steps: np.ndarray
    errors: dict[str, np.ndarray]
    curvature: float
    machine_eps: dict[str, float]
    predicted: dict[str, tuple[float, float]]
    zero_fraction: dict[str, np.ndarray]
    input_spacing: dict[str, float]
    eps_missing_errors: dict[str, np.ndarray]

    def smallest(self, dtype_name: str) -> tuple[float, float]:
        """(step, error) of the smallest measured error of the right backward for ``dtype_name``."""
        errors = self.errors[dtype_name]
        i = int(np.argmin(errors))
        return float(self.steps[i]), float(errors[i])

    def eps_missing_at_best_step(self, dtype_name: str) -> float:
        """The eps-missing backward's error at the step where the right backward's error is smallest."""
        return float(self.eps_missing_errors[dtype_name][int(np.argmin(self.errors[dtype_name]))])


def finite_difference_study(steps: np.ndarray | None = None, shape: tuple[int, int] = (5, 3),
                            seed: int = 0) -> FiniteDifferenceStudy:
    """Centred differences of batch norm's loss ``sum(out * dout)`` in float64 and float32, against h.

    A random (N, C) = ``shape`` batch (mean 1, std 2), gamma, beta and upstream gradient; the exact dx comes
    from :func:`bnlab.functional.batchnorm_backward` in float64. For each dtype the input and parameters are
    cast to it, so the forward computes (and the finite difference nudges) in that precision.

    Args:
        steps: the steps h, default 33 values from 1e-9 to 1e-1 (four per decade). At least one must be >= 1e-3
            (the truncation fit uses those).
        shape: (N, C), N >= 2.
        seed: for the batch, parameters and upstream gradient.
    """
    steps = np.logspace(-9, -1, 33) if steps is None else np.asarray(steps, dtype=np.float64).ravel()
    if steps.size == 0 or np.any(~np.isfinite(steps)) or np.any(steps <= 0):
        raise ValueError(f"steps must be positive finite numbers, got {steps!r}")
    if not np.any(steps >= 1e-3):
        raise ValueError("steps needs at least one h >= 1e-3, where truncation dominates and K is fitted")
    if len(shape) != 2:
        raise ValueError(f"shape must be (N, C), got {shape!r}")
    check_int(shape[0], "N", 2)
    check_int(shape[1], "C", 1)
    rng = np.random.default_rng(check_seed(seed))
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1])
    dout = rng.standard_normal(shape)
    cache = batchnorm_forward(x, gamma, beta)[1]
    exact, slipped = batchnorm_backward(dout, cache)[0], backward_with("eps_missing_in_backward")(dout, cache)[0]

    errors, machine_eps, zero_fraction, input_spacing, eps_missing_errors = {}, {}, {}, {}, {}
    for dtype in (np.float64, np.float32):
        g, b = gamma.astype(dtype), beta.astype(dtype)
        def forward(v, g=g, b=b):
            return batchnorm_forward(v, g, b)[0]

        numerical = [numerical_gradient(forward, x.astype(dtype), dout, h) for h in steps]
        errors[dtype.__name__] = np.array([rel_error(exact, grad) for grad in numerical])
        eps_missing_errors[dtype.__name__] = np.array([rel_error(slipped, grad) for grad in numerical])
        zero_fraction[dtype.__name__] = np.array([float(np.mean(grad == 0)) for grad in numerical])
        machine_eps[dtype.__name__] = float(np.finfo(dtype).eps)
        input_spacing[dtype.__name__] = float(np.spacing(np.abs(x.astype(dtype)).max()))
    large = steps >= 1e-3
    curvature = float(np.median(errors["float64"][large] / steps[large] ** 2))
    predicted = {name: step_tradeoff(curvature, eps) for name, eps in machine_eps.items()}
    return FiniteDifferenceStudy(steps, errors, curvature, machine_eps, predicted, zero_fraction, input_spacing,
                                 eps_missing_errors)


# ------------------------------------------------------------------------------------- fooling a check


def all_ones_trap(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5) -> dict[str, float]:
    """max |dx| for an all-ones upstream gradient, where the true dx is exactly zero.

    x: (N, C) or (N, C, *spatial), float64; gamma, beta: (C,). Returns ``{"staged backward": ..., <label>: ...}``
    with one entry per mistake in :data:`bnlab.mistakes.BACKWARD_DX_MISTAKES`: any backward whose entry is at
    rounding level passes a gradient check that uses ``dout = 1``.
    """

    x, gamma, beta, ones = _as_float64_inputs(x, gamma, beta, np.ones_like(x, dtype=np.float64))
    _, cache = batchnorm_forward(x, gamma, beta, eps)
    result = {"staged backward": float(np.abs(batchnorm_backward(ones, cache)[0]).max())}
    for label in BACKWARD_DX_MISTAKES:
        result[label] = float(np.abs(backward_with(label)(ones, cache)[0]).max())
    return result


def catalogue_gradient_checks(shape: tuple[int, ...] = (6, 4), seed: int = 0) -> dict[str, float]:
    """dx's relative error in :func:`bnlab.gradcheck.check_forward_backward` (random upstream gradient, float64).

    Returns ``{"staged backward": error, <label>: error}`` for the right staged backward and every mistake in
    :data:`bnlab.mistakes.BACKWARD_DX_MISTAKES`, all checked on the same input of the given shape.
    """
    from bnlab.gradcheck import check_forward_backward

    backwards = {"staged backward": batchnorm_backward}
    backwards.update({label: backward_with(label) for label in BACKWARD_DX_MISTAKES})
    return {name: check_forward_backward(batchnorm_forward, backward, shape, seed=seed).errors["dx"]
            for name, backward in backwards.items()}


def unbiased_in_both(shape: tuple[int, ...] = (6, 4), seed: int = 0, eps: float = 1e-5) -> dict[str, float]:
    """A forward and a backward that agree on a wrong convention: the unbiased variance in both.

    The forward is the catalogued mistake ``unbiased_variance`` (:func:`bnlab.mistakes.forward_with`: divide by
    m - 1); the backward is that forward's exact derivative, computed by torch autograd on the same formula (a
    staged backward with 2 / (m - 1) in step 3 gives the same numbers). Returns

    * ``"check dx"``, ``"check dgamma"``, ``"check dbeta"``: the relative errors of
      :func:`bnlab.gradcheck.check_forward_backward` on this pair (input ``shape``): it passes;
    * ``"output vs reference"`` and ``"dx vs reference"``: :func:`bnlab.gradcheck.rel_error` of its xhat
      (gamma = 1, beta = 0) against :func:`bnlab.functional.batchnorm_forward`'s and of its dx against
      PyTorch's, on a random batch of ``shape`` (seed ``seed``): only these catch it;
    * ``"predicted output error"``: 1 - sqrt((m - 1)/m), what the output error must be.
    """
    import torch

    from bnlab.gradcheck import check_forward_backward
    from bnlab.mistakes import forward_with

    if len(shape) < 2:
        raise ValueError(f"shape must be (N, C) or (N, C, *spatial), got {shape!r}")
    shape = tuple(check_int(n, "shape entry", 1) for n in shape)
    eps = check_eps(eps)
    axes = reduction_axes(len(shape))
    m = int(np.prod([shape[a] for a in axes]))
    if m < 2:
        raise ValueError(f"shape needs at least 2 values per channel, got {shape!r}")
    channel = (1, -1) + (1,) * (len(shape) - 2)

    def forward(x, gamma, beta):
        return forward_with("unbiased_variance", x, gamma, beta, eps), (x, gamma, beta)

    def backward(dout, cache):
        x, gamma, beta = (torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in cache)
        xc = x - x.mean(dim=axes, keepdim=True)
        var = (xc * xc).sum(dim=axes, keepdim=True) / (m - 1)  # the unbiased variance, as in the forward
        out = gamma.reshape(channel) * xc / torch.sqrt(var + eps) + beta.reshape(channel)
        return tuple(g.numpy() for g in torch.autograd.grad(out, (x, gamma, beta), torch.tensor(dout)))

    report = check_forward_backward(forward, backward, shape, seed=seed)
    result = {f"check {name}": error for name, error in report.errors.items()}
    rng = np.random.default_rng(check_seed(seed))
    x = rng.standard_normal(shape) * 2 + 1
    gamma, beta = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1])
    dout = rng.standard_normal(shape)
    ones, zeros = np.ones(shape[1]), np.zeros(shape[1])  # compare xhat itself: beta would dilute the error
    result["output vs reference"] = rel_error(forward(x, ones, zeros)[0], batchnorm_forward(x, ones, zeros, eps)[0])
    result["dx vs reference"] = rel_error(backward(dout, (x, gamma, beta))[0],
                                          torch_gradients(x, gamma, beta, dout, eps)[0])
    result["predicted output error"] = 1 - float(np.sqrt((m - 1) / m))
    return result
