"""Running statistics: the one update rule behind every layer, and the conventions of other frameworks.

Every bnlab layer that keeps running statistics -- the numpy :class:`~bnlab.layers.BatchNorm`, the torch
modules of :mod:`bnlab.nn` and ghost batch norm -- updates them with :func:`updated_running_stats`, PyTorch's
rule:

    running_mean = (1 - w) * running_mean + w * batch_mean
    running_var  = (1 - w) * running_var  + w * batch_var * m / (m - 1)      (the *unbiased* batch variance)

with w = momentum (0.1 by default), or w = 1/k for the k-th batch when ``momentum=None`` (an equal-weight
average over all batches so far). The arithmetic works unchanged on floats, numpy arrays and torch tensors.

The paper's Algorithm 2 is *not* ``momentum=None`` during training: it trains first, freezes the weights, and
then averages the statistics of training batches with equal weights (E[mu_B], m/(m-1) E[var_B]).
``momentum=None`` during training averages the whole trajectory, the untrained network's batches included;
``momentum=None`` run *after* training on frozen weights is Algorithm 2, which is what precise BN
(:func:`bnlab.nn.recompute_batchnorm_statistics`, Wu & Johnson 2021) does.

Other codes use other conventions for the same idea; :data:`CONVENTIONS` describes four of them, each with the
place in its source where the rule is written, and :meth:`Convention.update` applies one step of each.

An exponential moving average started at r0 still gives r0 the weight (1 - w)^t after t batches
(:func:`initial_value_share`); :func:`bias_corrected` removes that share and rescales, as Adam does for its
moment estimates (Kingma & Ba 2015, Sec. 3). :func:`batch_weights` gives the weight of each batch in the running
value, and :func:`moving_average_trace` the running value after every batch of a recorded stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from bnlab._channels import reduction_axes, values_per_channel
from bnlab._validation import check_choice, check_float, check_int, check_momentum

__all__ = ["CONVENTIONS", "PAPER_SOURCE", "Convention", "batch_weights", "bias_corrected", "bias_corrected_trace",
           "convention", "initial_value_share", "moving_average", "moving_average_trace", "newest_batch_weight",
           "unbiased_variance", "updated_running_stats"]

Stat = TypeVar("Stat")  # a float, a numpy array or a torch tensor


def newest_batch_weight(momentum: float | None, num_batches_tracked: int) -> float:
    """The weight w of the newest batch: ``momentum``, or 1/k for the k-th batch when momentum is None.

    ``num_batches_tracked`` counts the batches including the newest one (k >= 1).
    """
    return 1.0 / num_batches_tracked if momentum is None else momentum


def unbiased_variance(biased_var: Stat, m: int) -> Stat:
    """biased_var * m / (m - 1): the unbiased estimate of the population variance from m values."""
    return biased_var * (m / (m - 1))


def moving_average(running: Stat, batch_stat: Stat, weight_of_new: float) -> Stat:
    """One exponential-moving-average step: ``(1 - w) * running + w * batch_stat`` (torch's order of terms)."""
    return weight_of_new * batch_stat + (1.0 - weight_of_new) * running


def updated_running_stats(running_mean: Stat, running_var: Stat, batch_mean: Stat, biased_var: Stat, m: int,
                          weight_of_new: float) -> tuple[Stat, Stat]:
    """PyTorch's update of (running_mean, running_var) by one batch; returns the new values.

    Args:
        running_mean, running_var: current running statistics, (C,).
        batch_mean, biased_var: this batch's per-channel mean and biased variance (what the forward used), (C,).
        m: values per channel in the batch (N, or N*H*W for images).
        weight_of_new: w from :func:`newest_batch_weight`.

    Returns:
        (new running_mean, new running_var); running_var moves towards the **unbiased** batch variance.
    """
    return (moving_average(running_mean, batch_mean, weight_of_new),
            moving_average(running_var, unbiased_variance(biased_var, m), weight_of_new))


def initial_value_share(momentum: float | None, num_batches: int) -> float:
    """(1 - momentum)^t: the weight a PyTorch-style running average still gives its initial value after t batches.

    After t updates ``r_t = (1 - w)^t * r_0 + sum_k w (1 - w)^(t - k) * s_k``: the batch statistics s_k share the
    weight 1 - (1 - w)^t and the initial value r_0 keeps the rest. ``momentum=None`` (equal weights, w = 1/k)
    forgets r_0 at the first batch: share 0. ``momentum`` is PyTorch's (the weight of the newest batch).
    """
    momentum = check_momentum(momentum)
    num_batches = check_int(num_batches, "num_batches", minimum=0)
    if momentum is None:
        return 0.0 if num_batches > 0 else 1.0
    return (1.0 - momentum) ** num_batches


def bias_corrected(running: Stat, initial: Stat | float, momentum: float | None, num_batches: int) -> Stat:
    """The running average with its initial value's share removed: ``(r_t - f r_0) / (1 - f)``, f = (1 - w)^t.

    What remains is the average of the t batch statistics alone, with weights ``w (1 - w)^(t - k) / (1 - f)``
    that sum to 1 (for a small w and t << 1/w these are nearly equal). Adam corrects its moment estimates the
    same way (there r_0 = 0, so only the division is left).

    Args:
        running: r_t, a running mean or variance (float, numpy array or torch tensor), after ``num_batches``
            updates with the same ``momentum`` (PyTorch's meaning).
        initial: r_0, the value before the first update (PyTorch: 0 for the mean, 1 for the variance).
        momentum: w in (0, 1], or None (equal weights: nothing to correct, ``running`` is returned).
        num_batches: t >= 1 (``num_batches_tracked`` of a PyTorch layer).
    """
    momentum = check_momentum(momentum)
    num_batches = check_int(num_batches, "num_batches", minimum=1)
    share = initial_value_share(momentum, num_batches)
    if share == 1.0:
        raise ValueError(f"bias_corrected needs a momentum whose batches left a trace: with momentum {momentum!r} "
                         f"the running average is still exactly its initial value after {num_batches} batch(es)")
    if share == 0.0:
        return running
    return (running - share * initial) / (1.0 - share)


def bias_corrected_trace(trace: Any, initial: float | np.ndarray, momentum: float | None) -> np.ndarray:
    """:func:`bias_corrected` at every step of a :func:`moving_average_trace` r_1 .. r_T: (T, ...) like ``trace``."""
    return np.array([bias_corrected(running, initial, momentum, t)
                     for t, running in enumerate(np.asarray(trace, dtype=np.float64), start=1)])


def batch_weights(momentum: float | None, num_batches: int) -> np.ndarray:
    """The weight of each batch statistic s_1 .. s_t in PyTorch's running average r_t after t batches: (t,).

    Batch k gets ``w * (1 - w)^(t - k)`` with momentum w, so ``r_t = initial_value_share(w, t) * r_0 +
    batch_weights(w, t) @ s`` and the weights sum to ``1 - (1 - w)^t``; with ``momentum=None`` every batch gets
    1/t (equal weights, summing to 1). Divided by their sum they are the weights of :func:`bias_corrected`.
    """
    momentum = check_momentum(momentum)
    num_batches = check_int(num_batches, "num_batches", minimum=1)
    if momentum is None:
        return np.full(num_batches, 1.0 / num_batches)
    age = np.arange(num_batches - 1, -1, -1)  # t - k for k = 1..t
    return momentum * (1.0 - momentum) ** age


def moving_average_trace(batch_stats: Any, momentum: float | None, initial: float | np.ndarray) -> np.ndarray:
    """PyTorch's running average after each batch of a recorded stream: r_1 .. r_T, shape of ``batch_stats``.

    Args:
        batch_stats: (T, ...) the statistic each batch fed (batch mean, or unbiased batch variance), in order.
        momentum: PyTorch's (weight of the newest batch), or None for equal weights (w = 1/k).
        initial: r_0, a float or an array of shape ``batch_stats.shape[1:]`` (PyTorch: 0 for the mean, 1 for
            the variance).

    Each step is :func:`moving_average` with :func:`newest_batch_weight`, the update every layer uses.
    """
    stats = np.asarray(batch_stats, dtype=np.float64)
    if stats.ndim < 1 or stats.shape[0] < 1:
        raise ValueError(f"batch_stats must hold at least one batch statistic along axis 0, got shape "
                         f"{stats.shape}")
    momentum = check_momentum(momentum)
    trace = np.empty_like(stats)
    running = np.broadcast_to(np.asarray(initial, dtype=np.float64), stats.shape[1:])
    for k, value in enumerate(stats, start=1):
        running = moving_average(running, value, newest_batch_weight(momentum, k))
        trace[k - 1] = running
    return trace


@dataclass(frozen=True)
class Convention:
    """How one code base updates its running statistics, and where that is written.

    Attributes:
        name: who uses it.
        momentum: its default momentum, in its own meaning.
        momentum_is: "new" (momentum weights the newest batch, PyTorch) or "old" (momentum weights the old
            average, Keras); Keras' k is PyTorch's 1 - k.
        variance: which batch variance feeds the running variance, "unbiased" (m - 1) or "biased" (m).
        eps: its default eps.
        initial_var: the running variance before any batch (1 in PyTorch and Keras; CS231n starts at 0).
        source: where the rule can be read.
    """

    name: str
    momentum: float
    momentum_is: str
    variance: str
    eps: float
    initial_var: float
    source: str

    def weight_of_new(self, momentum: float | None = None) -> float:
        """w, the weight of the newest batch, for ``momentum`` in this convention's meaning (default: its own)."""
        momentum = self.momentum if momentum is None else check_float(momentum, "momentum", 0.0, maximum=1.0)
        return momentum if self.momentum_is == "new" else 1.0 - momentum

    def update(self, running_mean: np.ndarray, running_var: np.ndarray, batch: np.ndarray,
               momentum: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One update by ``batch`` (N, C) or (N, C, *spatial); returns (new running mean, new running var)."""
        batch = np.asarray(batch, dtype=np.float64)
        axes, m = reduction_axes(batch.ndim), values_per_channel(batch.shape)
        mean, biased = batch.mean(axis=axes), batch.var(axis=axes)
        var = unbiased_variance(biased, m) if self.variance == "unbiased" else biased
        w = self.weight_of_new(momentum)
        return moving_average(np.asarray(running_mean, float), mean, w), moving_average(
            np.asarray(running_var, float), var, w)


CONVENTIONS: dict[str, Convention] = {
    "pytorch": Convention(
        "PyTorch nn.BatchNorm1d/2d", 0.1, "new", "unbiased", 1e-5, 1.0,
        "torch/nn/modules/batchnorm.py (_NormBase: momentum=0.1, running_var = ones); the rule as torch writes it "
        "in torch/_decomp/decompositions.py (native_batch_norm): new_running_var = momentum * unbiased_var + "
        "(1 - momentum) * running_var, unbiased_var = var * n / (n - 1)"),
    "keras": Convention(
        "Keras 3 BatchNormalization", 0.99, "old", "biased", 1e-3, 1.0,
        "keras/src/layers/normalization/batch_normalization.py, call(): moving = moving * momentum + "
        "stat * (1 - momentum), with mean and variance from ops.moments (biased); momentum=0.99, epsilon=1e-3"),
    "cs231n": Convention(
        "CS231n assignment 2 (layers.py)", 0.9, "old", "biased", 1e-5, 0.0,
        "cs231n/layers.py (assignment 2 skeleton), batchnorm_forward's docstring: \"the sample mean and "
        "(uncorrected) sample variance\", running_mean = momentum * running_mean + (1 - momentum) * sample_mean; "
        "bn_param.get('momentum', 0.9); running_var = bn_param.get('running_var', np.zeros(D))"),
    "d2l": Convention(
        "Dive into Deep Learning, 8.5 (PyTorch tab)", 0.1, "new", "biased", 1e-5, 1.0,
        "d2l-en, the multi-framework edition at d2l.ai, chapter_convolutional-modern/batch-norm.md, batch_norm(): "
        "moving_var = (1.0 - momentum) * moving_var + momentum * var with var = ((X - mean) ** 2).mean(...); "
        "BatchNorm passes momentum=0.1. Earlier editions (and zh.d2l.ai) write moving = momentum * moving + "
        "(1.0 - momentum) * new with momentum 0.9, the Keras convention: same numbers, other meaning"),
}


# The paper has no running average: Algorithm 2 averages after training (what bnlab.nn calls precise BN).
PAPER_SOURCE = (
    "Ioffe & Szegedy 2015, arXiv:1502.03167, Algorithm 2: step 6 trains the network; step 7 makes the inference "
    "network 'with frozen parameters'; step 10 then processes training mini-batches and averages their statistics "
    "with equal weights, E[x] <- E_B[mu_B], Var[x] <- m/(m-1) E_B[sigma_B^2]. Section 3.1 adds: 'Using moving "
    "averages instead, we can track the accuracy of a model as it trains.' Algorithm 1: eps is 'a constant added "
    "to the mini-batch variance for numerical stability', no value given. Section 3.2: for convolutions one mean "
    "and variance per feature map, over the mini-batch and all locations"
)


def convention(name: Any) -> Convention:
    """The convention called ``name`` (a key of :data:`CONVENTIONS`)."""
    return CONVENTIONS[check_choice(name, "convention", CONVENTIONS)]

