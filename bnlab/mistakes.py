"""The classic batch norm mistakes, in one catalogue that the lectures and the grader share.

Every mistake has a label, an explanation (:data:`EXPLANATIONS`: what a learner who made it is told) and a
model of what an implementation making it computes. The models are written from the same plain steps as
:mod:`bnlab.functional`, with one step wrong:

* :func:`forward_candidates`, :func:`inference_candidates`, :func:`backward_dx_candidates` and
  :func:`backward_param_candidates` return ``{label: what that mistake outputs}`` on given inputs. The grader
  compares a learner's wrong result with each and names the one that reproduces it exactly; a lecture picks one
  with :func:`forward_with` or :func:`backward_with` to show what the mistake does.
* :class:`LayerModel` is a numpy batch norm layer with running statistics that can make one of
  :data:`LAYER_MISTAKES`.

bn-facts' list of classic learner mistakes is the source of this catalogue; ``tests/test_mistakes.py`` makes
each model differ from the right answer where the mistake shows, and agree with it where it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bnlab._channels import as_channel, reduction_axes
from bnlab.running_stats import moving_average, unbiased_variance

__all__ = ["BACKWARD_DX_MISTAKES", "EXPLANATIONS", "LAYER_MISTAKES", "LayerModel", "backward_dx_candidates",
           "backward_param_candidates", "backward_with", "eval_backward_candidates", "explain", "forward_candidates",
           "forward_with", "inference_candidates"]

EXPLANATIONS: dict[str, str] = {
    # forward (training mode)
    "unbiased_variance": "unbiased variance in the training forward: you divided by m - 1 (np.var(..., ddof=1) "
        "or torch.var's default). Algorithm 1 normalizes with the biased variance, dividing by m (np.var's "
        "default, ddof=0); the m - 1 version belongs only in running_var. It shows most at small batches.",
    "eps_outside_sqrt": "epsilon outside the square root: you computed (x - mu) / (sqrt(var) + eps). It belongs "
        "inside, (x - mu) / sqrt(var + eps): for a nearly constant feature (values 1, 1 + 1e-4, 1 - 1e-4) the "
        "right output is about +-0.03, yours about +-1.09.",
    "eps_missing": "epsilon is missing: you divided by sqrt(var). Add eps inside the square root, "
        "sqrt(var + eps); without it a nearly constant feature is blown up to +-1 and a constant one gives NaN.",
    "sqrt_missing": "the square root is missing: you divided by the variance (plus eps) instead of the standard "
        "deviation sqrt(var + eps).",
    "one_pass_variance": "single-pass variance: you computed E[x^2] - E[x]^2. When a channel's mean is large "
        "compared with its spread, both terms are huge and nearly equal, and in float32 their difference keeps "
        "only rounding error (it can even come out negative). Centre first: var = mean((x - mu)**2).",
    "no_affine": "gamma and beta are not applied: return gamma * xhat + beta, not xhat.",
    "gamma_beta_swapped": "gamma and beta are swapped: the output is gamma * xhat + beta (gamma scales, beta "
        "shifts).",
    "per_example_statistics": "statistics over the wrong axis: you took the mean and variance of each example "
        "(over its features, axis 1 -- that is layer norm). Batch norm takes them per feature, over the batch: "
        "axis 0 for (N, C), axes (0, 2, 3) for (N, C, H, W).",
    "batch_axis_only": "statistics over axis 0 only: for (N, C, H, W) input every channel shares one mean and "
        "variance over the batch *and* all positions, so reduce over axes (0, 2, 3) (m = N*H*W), not just 0.",
    "reshape_without_moving_channels": "reshaped (N, C, H, W) to (-1, C) without moving C last first: "
        "x.reshape(-1, C) mixes channels in each column. Move the channel axis last first, "
        "x.transpose(0, 2, 3, 1).reshape(-1, C) (and back afterwards), or reduce over axes (0, 2, 3) with "
        "keepdims=True.",
    "reshape_rows_without_transpose": "reshaped (N, C, H, W) to (C, -1) without moving C first: reshape reads "
        "the values in memory order, so each of your C rows holds a slice of the whole batch (several channels, "
        "often several examples), not one channel. Move the channel axis first, "
        "x.transpose(1, 0, 2, 3).reshape(C, -1) (and transpose back afterwards), or reduce over axes (0, 2, 3) "
        "with keepdims=True.",
    "missing_keepdims": "per-channel statistics of shape (C,) broadcast against the *last* axis of "
        "(N, C, H, W), not the channel axis. Keep the reduced axes (keepdims=True) so mu has shape (1, C, 1, 1), "
        "and reshape gamma and beta to (1, C, 1, 1) too.",
    # inference
    "batch_statistics_in_eval": "batch statistics in inference: batchnorm_inference must normalize with "
        "running_mean and running_var, never with the statistics of the batch it is given -- one example's "
        "output must not depend on the other examples.",
    "running_mean_and_var_swapped": "running_mean and running_var are swapped: subtract running_mean, divide "
        "by sqrt(running_var + eps).",
    # backward
    "constant_statistics": "the batch mean and variance are treated as constants: dx = dout * gamma / "
        "sqrt(var + eps) is only the direct path. mu and var depend on every x, so dx needs the two branches "
        "through them (dx = gamma / std * (dout - mean(dout) - xhat * mean(dout * xhat)) in closed form).",
    "variance_branch_missing": "the branch through the variance is missing: xc feeds both xhat and var, so its "
        "gradient is the sum of both branches; add dxc += 2 * xc / m * dvar.",
    "mean_branch_missing": "the branch through the mean is missing: x feeds both xc and mu, so add "
        "dx += dmu / m with dmu = -sum(dxc) per channel.",
    "mean_gradient_not_summed": "dmu is not summed over the batch: mu is one number per channel, used by every "
        "example, so dmu = -sum(dxc, over every axis but 1) before it flows back as dmu / m.",
    "variance_gradient_not_summed": "dvar (or dinv/dstd) is not summed over the batch: the variance is one "
        "number per channel, so dinv = sum(dxhat * xc) over every axis but 1, with the reduced axes kept.",
    "variance_branch_missing_1_over_m": "the factor 1/m is missing in the variance branch: d var / d xc = "
        "2 * xc / m.",
    "mean_branch_missing_1_over_m": "the factor 1/m is missing in the mean branch: d mu / d x = 1 / m, so "
        "dx += dmu / m.",
    "eps_missing_in_backward": "epsilon is missing in the backward only: the forward divides by sqrt(var + eps), "
        "so the backward must use the same std = sqrt(var + eps) (and xhat from it). Without eps the gradient is "
        "off by a relative error of about eps / var: invisible for ordinary channels, large for a nearly "
        "constant one.",
    "gamma_missing": "gamma is missing from dx: the gradient reaching xhat is dxhat = dout * gamma.",
    "m_is_batch_size_in_backward": "m in the backward is the batch size N, but for (N, C, H, W) each channel's "
        "statistics average over m = N * H * W values (x.size // x.shape[1]); the forward's count and the "
        "backward's must be the same.",
    "sign_flipped": "dx has the opposite sign of the right gradient: check the signs of dstd = -dinv / std**2 "
        "and dmu = -sum(dxc).",
    "zeros": "dx is zero everywhere. A gradient check with an all-ones upstream gradient would let this pass "
        "(the true dx is then exactly zero, because xhat sums to zero per channel), which is why the grader "
        "uses a random upstream gradient.",
    "dgamma_dbeta_swapped": "dgamma and dbeta are swapped: dgamma = sum(dout * xhat), dbeta = sum(dout).",
    "dgamma_uses_x": "dgamma uses x instead of xhat: out = gamma * xhat + beta, so dgamma = sum(dout * xhat).",
    "param_gradient_wrong_axes": "dgamma or dbeta is summed over the wrong axes: gamma and beta hold one number "
        "per channel, shared by every example and every position, so sum over every axis but the channel axis 1 "
        "(axes (0, 2, 3) for (N, C, H, W), (0, 2) for (N, C, L), 0 for (N, C)).",
    "training_backward_in_eval": "the backward after an eval-mode forward uses the training formula. In eval mode "
        "the running statistics are constants, so the layer is a fixed affine map per channel and "
        "dx = dout * gamma / sqrt(running_var + eps); the mean and variance branches exist only when the batch's "
        "own statistics were used (training mode).",
    # layers and running statistics
    "momentum_swapped": "the momentum convention is swapped: PyTorch's is running = (1 - momentum) * running + "
        "momentum * batch_stat (momentum=0.1 weights the newest batch by 0.1). Yours weights the old value by "
        "momentum, which is Keras's convention.",
    "first_batch_copied": "the first training batch's statistics are copied into the running statistics. PyTorch "
        "applies the momentum rule from the very first batch, starting from running_mean = 0 and running_var = 1.",
    "running_var_biased": "running_var stores the biased batch variance. PyTorch (and Algorithm 2 of the paper) "
        "stores the unbiased one, var * m / (m - 1), with m = N for (N, C) and N*H*W for (N, C, H, W).",
    "running_var_batch_size_only": "the unbiased correction uses N / (N - 1), but for (N, C, H, W) a channel "
        "pools m = N*H*W values: use m / (m - 1).",
    "running_var_init_zero": "running_var starts at 0; PyTorch starts it at 1 (and running_mean at 0), so that "
        "an untrained layer in eval mode is the identity map (up to eps).",
    "no_update": "the running statistics never change in training mode: compute the new values and store them "
        "back on the layer (self.running_mean = ...), updating once per training forward.",
    "update_twice": "the running statistics are updated twice per training forward: apply the momentum rule "
        "exactly once per call.",
    "update_in_eval": "the running statistics change in eval mode: only a training-mode forward updates them.",
    "mode_from_grad": "the mode follows torch.is_grad_enabled() (or similar) instead of self.training: a "
        "training-mode forward under torch.no_grad() must still use and update batch statistics, and an "
        "eval-mode forward with gradients enabled must use the running statistics.",
    "eval_ignored": "eval() does not switch the layer to inference: after layer.eval(), forward must normalize "
        "with the running statistics (a common cause: assigning self.train = False, which replaces the train "
        "method instead of setting self.training).",
    "momentum_ignored": "the momentum argument is ignored: use the momentum given to the constructor.",
    "eps_ignored": "the eps argument is ignored: use the eps given to the constructor.",
}


def explain(label: str) -> str:
    """The message for a mistake label: ``"Likely mistake -- <explanation>"``.

    A label may carry a ``#variant`` suffix (two ways of making the same mistake); it is ignored here.
    """
    return f"Likely mistake -- {EXPLANATIONS[label.split('#')[0]]}"


def _affine(xhat: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    return xhat * as_channel(gamma, xhat.ndim) + as_channel(beta, xhat.ndim)


def _normalized(x: np.ndarray, axes: tuple[int, ...], eps: float, *, ddof: int = 0, mode: str = "inside",
                one_pass: bool = False) -> np.ndarray:
    """(x - mean) / scale with statistics over ``axes`` (kept), in x's dtype.

    ``mode`` places eps and the square root; ``one_pass`` computes the variance as E[x^2] - E[x]^2.
    """
    m = int(np.prod([x.shape[a] for a in axes]))
    mu = x.mean(axis=axes, keepdims=True)
    if one_pass:
        var = ((x * x).mean(axis=axes, keepdims=True) - mu * mu) * x.dtype.type(m / (m - ddof))
    else:
        var = ((x - mu) ** 2).sum(axis=axes, keepdims=True) / x.dtype.type(m - ddof)
    scale = {"inside": np.sqrt(var + eps), "outside": np.sqrt(var) + eps, "missing": np.sqrt(var),
             "no_sqrt": var + eps}[mode]
    return (x - mu) / scale


def forward_candidates(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> dict[str, Any]:
    """What each classic forward mistake outputs on (x, gamma, beta, eps): ``{label: out}``, in x's dtype.

    x: (N, C) or (N, C, *spatial); gamma, beta: (C,). Mistakes that only exist for 4-D input (reduction axes,
    reshapes, keepdims) appear only for such input.
    """
    axes = reduction_axes(x.ndim)
    num_channels = x.shape[1]
    with np.errstate(all="ignore"):
        out: dict[str, Any] = {
            "unbiased_variance": _affine(_normalized(x, axes, eps, ddof=1), gamma, beta),
            "eps_outside_sqrt": _affine(_normalized(x, axes, eps, mode="outside"), gamma, beta),
            "eps_missing": _affine(_normalized(x, axes, eps, mode="missing"), gamma, beta),
            "sqrt_missing": _affine(_normalized(x, axes, eps, mode="no_sqrt"), gamma, beta),
            "one_pass_variance": _affine(_normalized(x, axes, eps, one_pass=True), gamma, beta),
            "no_affine": _normalized(x, axes, eps),
            "gamma_beta_swapped": _affine(_normalized(x, axes, eps), beta, gamma),
            "per_example_statistics": _affine(_normalized(x, tuple(range(1, x.ndim)), eps), gamma, beta),
        }
        if x.ndim > 2:
            out["batch_axis_only"] = _affine(_normalized(x, (0,), eps), gamma, beta)
            flat = x.reshape(-1, num_channels)
            out["reshape_without_moving_channels"] = (
                _normalized(flat, (0,), eps) * gamma + beta).reshape(x.shape)
            rows = x.reshape(num_channels, -1)
            out["reshape_rows_without_transpose"] = (
                _normalized(rows, (1,), eps) * gamma[:, None] + beta[:, None]).reshape(x.shape)
            if x.shape[-1] == num_channels:  # a (C,) statistic then broadcasts silently over the last axis
                mu = x.mean(axis=axes)
                out["missing_keepdims"] = gamma * (x - mu) / np.sqrt(x.var(axis=axes) + eps) + beta
                var = ((x - mu) ** 2).mean(axis=axes)
                out["missing_keepdims#centred"] = gamma * (x - mu) / np.sqrt(var + eps) + beta
    return out


def inference_candidates(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                         running_var: np.ndarray, eps: float) -> dict[str, Any]:
    """What each classic inference mistake outputs."""
    mean, var = as_channel(running_mean, x.ndim), as_channel(running_var, x.ndim)
    with np.errstate(all="ignore"):
        return {
            "batch_statistics_in_eval": _affine(_normalized(x, reduction_axes(x.ndim), eps), gamma, beta),
            "eps_outside_sqrt": _affine((x - mean) / (np.sqrt(var) + eps), gamma, beta),
            "eps_missing": _affine((x - mean) / np.sqrt(var), gamma, beta),
            "sqrt_missing": _affine((x - mean) / (var + eps), gamma, beta),
            "no_affine": (x - mean) / np.sqrt(var + eps),
            "gamma_beta_swapped": _affine((x - mean) / np.sqrt(var + eps), beta, gamma),
            "running_mean_and_var_swapped": _affine((x - var) / np.sqrt(mean + eps), gamma, beta),
        }


BACKWARD_DX_MISTAKES = ("constant_statistics", "variance_branch_missing", "mean_branch_missing",
                        "mean_gradient_not_summed", "variance_gradient_not_summed",
                        "variance_branch_missing_1_over_m", "mean_branch_missing_1_over_m", "gamma_missing",
                        "eps_missing_in_backward", "sign_flipped", "zeros")


def backward_dx_candidates(x: np.ndarray, gamma: np.ndarray, dout: np.ndarray, eps: float) -> dict[str, Any]:
    """dx of each classic backward mistake, written as the staged backward with one step wrong."""
    axes = reduction_axes(x.ndim)
    m = x.size // x.shape[1]

    def csum(a: np.ndarray) -> np.ndarray:
        return a.sum(axis=axes, keepdims=True)

    def staged(g: np.ndarray, *, var_branch: float | None = 2.0 / m, mean_branch: float | None = 1.0 / m,
               sum_dinv: bool = True, sum_dmu: bool = True, backward_eps: float = eps) -> np.ndarray:
        mu = x.mean(axis=axes, keepdims=True)
        xc = x - mu
        var = csum(xc * xc) / m
        std = np.sqrt(var + backward_eps)
        dxhat = dout * as_channel(g, x.ndim)
        dinv = csum(dxhat * xc) if sum_dinv else dxhat * xc
        dxc = dxhat / std
        if var_branch is not None:
            dvar = -dinv / std**2 / (2.0 * std)
            dxc = dxc + var_branch * xc * dvar
        dmu = -csum(dxc) if sum_dmu else -dxc
        return dxc + dmu * mean_branch if mean_branch is not None else dxc

    right = staged(gamma)
    std = np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    candidates = {
        "constant_statistics": dout * as_channel(gamma, x.ndim) / std,
        "variance_branch_missing": staged(gamma, var_branch=None),
        "mean_branch_missing": staged(gamma, mean_branch=None),
        "mean_gradient_not_summed": staged(gamma, sum_dmu=False),
        "variance_gradient_not_summed": staged(gamma, sum_dinv=False),
        "variance_branch_missing_1_over_m": staged(gamma, var_branch=2.0),
        "mean_branch_missing_1_over_m": staged(gamma, mean_branch=1.0),
        "gamma_missing": staged(np.ones_like(gamma)),
        "eps_missing_in_backward": staged(gamma, backward_eps=0.0),
        "sign_flipped": -right,
        "zeros": np.zeros_like(x),
    }
    if x.ndim > 2:  # only there can the count of averaged values differ from the batch size
        n = x.shape[0]
        xhat = (x - x.mean(axis=axes, keepdims=True)) / std
        candidates["m_is_batch_size_in_backward"] = (as_channel(gamma, x.ndim) / std / n
                                                     * (n * dout - csum(dout) - xhat * csum(dout * xhat)))
        # (C, -1) rows of a (N, C, H, W) array mix channels: the whole pair computed on such rows, or a right
        # forward whose backward reshapes the cached xhat and dout that way
        c = x.shape[1]
        rows = x.reshape(c, -1)
        row_std = np.sqrt(rows.var(axis=1, keepdims=True) + eps)
        row_xhat = (rows - rows.mean(axis=1, keepdims=True)) / row_std
        candidates["reshape_rows_without_transpose"] = _closed_form_rows(
            row_xhat, dout.reshape(c, -1), gamma[:, None] / row_std).reshape(x.shape)
        candidates["reshape_rows_without_transpose#cached"] = _closed_form_rows(
            xhat.reshape(c, -1), dout.reshape(c, -1), (gamma / std.reshape(-1))[:, None]).reshape(x.shape)
    return candidates


def _closed_form_rows(xhat: np.ndarray, dout: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The closed-form training dx on (C, M) rows, each row taken as one channel of M values; scale: (C, 1),
    gamma / std per row."""
    m = xhat.shape[1]
    return scale / m * (m * dout - dout.sum(axis=1, keepdims=True)
                        - xhat * (dout * xhat).sum(axis=1, keepdims=True))


def backward_param_candidates(x: np.ndarray, dout: np.ndarray, eps: float) -> dict[str, dict[str, Any]]:
    """(dgamma, dbeta) of the classic parameter-gradient mistakes, as {label: {"dgamma": .., "dbeta": ..}}."""
    axes = reduction_axes(x.ndim)
    xhat = _normalized(x, axes, eps)
    dgamma, dbeta = (dout * xhat).sum(axis=axes), dout.sum(axis=axes)
    out = {
        "dgamma_dbeta_swapped": {"dgamma": dbeta, "dbeta": dgamma},
        "dgamma_uses_x": {"dgamma": (dout * x).sum(axis=axes), "dbeta": dbeta},
    }
    if x.ndim > 2:
        c = x.shape[1]
        rows = x.reshape(c, -1)
        row_xhat = (rows - rows.mean(axis=1, keepdims=True)) / np.sqrt(rows.var(axis=1, keepdims=True) + eps)
        row_dout = dout.reshape(c, -1)
        out["reshape_rows_without_transpose"] = {"dgamma": (row_dout * row_xhat).sum(axis=1),
                                                 "dbeta": row_dout.sum(axis=1)}
        out["reshape_rows_without_transpose#cached"] = {"dgamma": (dout * xhat).reshape(c, -1).sum(axis=1),
                                                        "dbeta": row_dout.sum(axis=1)}
    return out


def eval_backward_candidates(x: np.ndarray, gamma: np.ndarray, dout: np.ndarray, running_mean: np.ndarray,
                             running_var: np.ndarray, eps: float) -> dict[str, Any]:
    """dx of an eval-mode backward that uses the training formula: with the running statistics in the closed
    form (a cache of the eval forward fed to the training backward), or with the batch's own statistics.
    x, dout: (N, C, ...); the rest (C,)."""
    from bnlab.functional import batchnorm_backward_fused, batchnorm_forward

    c = x.shape[1]
    move = np.moveaxis(x, 1, 0).reshape(c, -1), np.moveaxis(dout, 1, 0).reshape(c, -1)
    inv_std = 1.0 / np.sqrt(running_var + eps)
    xhat = (move[0] - running_mean[:, None]) * inv_std[:, None]
    with_running = _closed_form_rows(xhat, move[1], (gamma * inv_std)[:, None])
    _, cache = batchnorm_forward(x, gamma, np.zeros_like(gamma), eps)
    return {
        "training_backward_in_eval": np.moveaxis(with_running.reshape(c, x.shape[0], *x.shape[2:]), 0, 1),
        "training_backward_in_eval#batch": batchnorm_backward_fused(dout, cache)[0],
    }


# ---------------------------------------------------------------------------------------- running statistics

LAYER_MISTAKES = ("momentum_swapped", "running_var_biased", "running_var_batch_size_only",
                  "running_var_init_zero", "first_batch_copied", "no_update", "update_twice", "update_in_eval",
                  "batch_statistics_in_eval", "mode_from_grad", "eval_ignored", "momentum_ignored", "eps_ignored",
                  "training_backward_in_eval")


class LayerModel:
    """A batch norm layer with running statistics, optionally making one classic mistake (``mistake``).

    Plays a scripted sequence of steps (the grader's :mod:`bnlab.grading.layer_script`) and records what a layer making
    that mistake would show, so that a learner's records can be matched against each mistake in turn. Built on
    :mod:`bnlab.functional`; with ``mistake=None`` it agrees with ``bnlab.layers.BatchNorm`` and
    ``torch.nn.BatchNorm2d`` (tests check this).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *,
                 mistake: str | None = None) -> None:
        if mistake is not None and mistake not in LAYER_MISTAKES:
            raise ValueError(f"unknown mistake {mistake!r}")
        self.mistake = mistake
        self.eps = 1e-5 if mistake == "eps_ignored" else float(eps)
        self.momentum = 0.1 if mistake == "momentum_ignored" else float(momentum)
        self.weight = np.ones(num_features)
        self.bias = np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = np.zeros(num_features) if mistake == "running_var_init_zero" else np.ones(num_features)
        self.num_batches_tracked = 0
        self.training = True
        self._last: tuple[str, Any] | None = None

    def train(self, mode: bool = True) -> None:
        self.training = bool(mode) if self.mistake != "eval_ignored" else True

    def eval(self) -> None:
        self.train(False)

    def _update(self, x: np.ndarray, mean: np.ndarray, biased_var: np.ndarray) -> None:
        if self.mistake == "no_update":
            return
        m = x.size // x.shape[1]
        if self.mistake == "running_var_biased":
            var = biased_var
        elif self.mistake == "running_var_batch_size_only":
            var = biased_var * x.shape[0] / max(x.shape[0] - 1, 1)
        else:
            var = unbiased_variance(biased_var, m)
        if self.mistake == "first_batch_copied" and self.num_batches_tracked == 0:
            self.running_mean, self.running_var = mean.copy(), var.copy()
            self.num_batches_tracked += 1
            return
        rate = 1.0 - self.momentum if self.mistake == "momentum_swapped" else self.momentum
        for _ in range(2 if self.mistake == "update_twice" else 1):
            self.running_mean = moving_average(self.running_mean, mean, rate)
            self.running_var = moving_average(self.running_var, var, rate)
        self.num_batches_tracked += 1

    def forward(self, x: np.ndarray, grad_enabled: bool = True) -> np.ndarray:
        """Normalize x; ``grad_enabled`` only matters for the ``mode_from_grad`` mistake."""
        from bnlab.functional import batchnorm_forward, batchnorm_inference

        training = grad_enabled if self.mistake == "mode_from_grad" else self.training
        use_batch = training or self.mistake == "batch_statistics_in_eval"
        if use_batch:
            out, cache = batchnorm_forward(x, self.weight, self.bias, self.eps)
            if training or self.mistake == "update_in_eval":
                self._update(x, cache.batch_mean, cache.batch_var)
            self._last = ("batch", cache)
        else:
            out = batchnorm_inference(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps)
            if self.mistake == "update_in_eval":
                mean = x.mean(axis=reduction_axes(x.ndim))
                self._update(x, mean, x.var(axis=reduction_axes(x.ndim)))
            self._last = ("running", x)
        return out

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dx, dweight, dbias) through the last forward."""
        from bnlab.functional import batchnorm_backward_fused

        assert self._last is not None, "backward before forward"
        kind, saved = self._last
        if kind == "batch":
            return batchnorm_backward_fused(dout, saved)
        x, axes = saved, reduction_axes(saved.ndim)
        inv = 1.0 / np.sqrt(as_channel(self.running_var, x.ndim) + self.eps)
        xhat = (x - as_channel(self.running_mean, x.ndim)) * inv
        dx = dout * as_channel(self.weight, x.ndim) * inv
        if self.mistake == "training_backward_in_eval":
            dx = eval_backward_candidates(x, self.weight, dout, self.running_mean, self.running_var,
                                          self.eps)["training_backward_in_eval"]
        return dx, (dout * xhat).sum(axis=axes), dout.sum(axis=axes)


# ------------------------------------------------------------------------------------ for the lectures


def forward_with(mistake: str, x: np.ndarray, gamma: np.ndarray | None = None, beta: np.ndarray | None = None,
                 eps: float = 1e-5) -> np.ndarray:
    """The training forward's output, (N, C, ...) like x, when it makes ``mistake`` (a forward label).

    gamma, beta: (C,), default ones and zeros (then the output is the mistaken xhat). The computation runs in
    x's dtype, so float32 mistakes show as they would in a float32 implementation.
    """
    x = np.asarray(x)
    num_channels = x.shape[1]
    gamma = np.ones(num_channels, x.dtype) if gamma is None else np.asarray(gamma, x.dtype)
    beta = np.zeros(num_channels, x.dtype) if beta is None else np.asarray(beta, x.dtype)
    candidates = forward_candidates(x, gamma, beta, eps)
    if mistake not in candidates:
        raise ValueError(f"mistake must be one of the forward mistakes for {x.ndim}-D input "
                         f"{sorted(candidates)}, got {mistake!r}")
    return candidates[mistake]


def backward_with(mistake: str) -> Callable[[np.ndarray, Any], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """A backward ``(dout, cache) -> (dx, dgamma, dbeta)`` whose dx makes ``mistake`` (a backward label).

    It takes the cache of :func:`bnlab.functional.batchnorm_forward`, so it drops into anything that checks
    a backward, such as :func:`bnlab.gradcheck.check_forward_backward`; dgamma and dbeta are right.
    """
    if mistake not in BACKWARD_DX_MISTAKES:
        raise ValueError(f"mistake must be one of the backward mistakes {list(BACKWARD_DX_MISTAKES)}, "
                         f"got {mistake!r}")

    def backward(dout: np.ndarray, cache: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        axes = reduction_axes(cache.x.ndim)
        dx = backward_dx_candidates(cache.x, cache.gamma.reshape(-1), dout, cache.eps)[mistake]
        return dx, (dout * cache.xhat).sum(axis=axes), dout.sum(axis=axes)

    backward.__name__ = f"backward_with_{mistake}"
    return backward
