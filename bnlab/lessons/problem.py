"""Lecture 1's computations: what a network's hidden layers see, and what batch norm does and does not fix.

* :func:`preactivation_spread`: per hidden layer, how much a unit's input changes from one example to the next
  (within a unit) against how different the units are from one another (between units). Pooled percentiles,
  like :attr:`bnlab.train.TrainResult.percentiles`, mix the two; one unit's percentiles show only the first.
* :func:`batchnorm_moments`: per batch-norm layer and feature, on one training batch, the mean and variance of
  the normalized value x̂ (0 and 1 up to eps) and of the layer's output γx̂ + β (β and γ², which are learned).
* :func:`default_init_std`: the standard deviation of PyTorch's default Linear initialization.
* :func:`accuracy_at` and :func:`first_step_reaching`: read test accuracies of runs (seeds) at a recorded step,
  and how soon a run reaches a given accuracy.
* :func:`percentile_range`: the width of a recorded 15th-85th percentile band, pooled or of one unit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bnlab._validation import check_float, check_int
from bnlab.models import Network
from bnlab.recording import hidden_activations
from bnlab.train import TrainResult

__all__ = ["BatchNormMoments", "accuracy_at", "batchnorm_moments", "default_init_std", "first_step_reaching",
           "percentile_range", "preactivation_spread"]


def default_init_std(fan_in: int) -> float:
    """Std of PyTorch's default ``nn.Linear`` weight, U(-1/sqrt(fan_in), 1/sqrt(fan_in)): 1/sqrt(3 fan_in).

    (A uniform distribution on [-a, a] has variance a²/3.)
    """
    fan_in = check_int(fan_in, "fan_in", minimum=1)
    return 1.0 / math.sqrt(3.0 * fan_in)


def _check_network(model: nn.Module, x: torch.Tensor) -> None:
    if not isinstance(model, Network) or model.spec.kind != "mlp":
        raise TypeError(f"model must be an MLP built by bnlab.models.build_mlp, got {type(model).__name__}")
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != model.spec.input_shape[0]:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a torch tensor of shape (N, {model.spec.input_shape[0]}), got {shape}")
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 examples (statistics over examples), got {x.shape[0]}")


def preactivation_spread(model: Network, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """How the inputs z of each hidden layer's nonlinearity spread, over examples and over units.

    Runs ``model`` in eval mode (its mode is restored) without gradients on ``x`` of shape (N, D). For hidden
    layer l the nonlinearity's input z has shape (N, C) (C units).

    Returns:
        ``(within, between)``, each of shape (L,) for the L hidden layers, float64:
        ``within[l]``: root mean square over the C units of each unit's std over the N examples, i.e. how much
        one unit's input depends on which example came in;
        ``between[l]``: std over the C units of each unit's mean over the N examples, i.e. how different the
        units are from each other. The std of all N·C values pooled is sqrt(within² + between²).
    """
    _check_network(model, x)
    captured: list[torch.Tensor] = []
    handles = [act.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].detach()))
               for act in hidden_activations(model)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    within, between = [], []
    for z in captured:
        z = z.double()
        within.append(float(z.var(dim=0, unbiased=False).mean().sqrt()))
        between.append(float(z.mean(dim=0).std(unbiased=False)))
    return np.array(within), np.array(between)


@dataclass(frozen=True)
class BatchNormMoments:
    """One batch-norm layer on one training batch; every field has shape (C,), one value per feature.

    Attributes:
        xhat_mean, xhat_var: batch mean and (biased) variance of the normalized value x̂ = (u - μ)/sqrt(σ² + ε):
            0 and σ²/(σ² + ε) ≈ 1.
        out_mean, out_std: batch mean and (biased) std of the layer's output y = γx̂ + β, the nonlinearity's
            input: β and |γ|·sqrt(σ²/(σ² + ε)).
        gamma, beta: the layer's learned scale and shift.
        batch_var: σ², the batch variance of the layer's input u.
    """

    xhat_mean: np.ndarray
    xhat_var: np.ndarray
    out_mean: np.ndarray
    out_std: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    batch_var: np.ndarray


def batchnorm_moments(model: Network, x: torch.Tensor) -> list[BatchNormMoments]:
    """Per-feature moments of x̂ and of γx̂ + β in each ``nn.BatchNorm1d`` of ``model``, on the batch ``x``.

    A copy of ``model`` runs in training mode (batch statistics, as during a training step) on ``x`` of shape
    (N, D), so the model's own running statistics are left untouched. x̂ is recomputed in float64 from the
    layer's input with the layer's eps; the output moments are those of the layer's actual (float32) output.

    Returns:
        One :class:`BatchNormMoments` per batch-norm layer, input side first ([] for a model without one).
    """
    _check_network(model, x)
    probe = copy.deepcopy(model).train()
    layers = [module for module in probe.modules() if isinstance(module, nn.BatchNorm1d)]
    captured: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [layer.register_forward_hook(lambda module, inputs, out: captured.append((inputs[0], out)))
               for layer in layers]
    try:
        with torch.no_grad():
            probe(x)
    finally:
        for handle in handles:
            handle.remove()
    moments = []
    for layer, (u, out) in zip(layers, captured):
        u, out = u.double(), out.double()
        var = u.var(dim=0, unbiased=False)
        xhat = (u - u.mean(dim=0)) / torch.sqrt(var + layer.eps)
        moments.append(BatchNormMoments(
            xhat_mean=xhat.mean(dim=0).numpy(), xhat_var=xhat.var(dim=0, unbiased=False).numpy(),
            out_mean=out.mean(dim=0).numpy(), out_std=out.std(dim=0, unbiased=False).numpy(),
            gamma=layer.weight.detach().double().numpy().copy(), beta=layer.bias.detach().double().numpy().copy(),
            batch_var=var.numpy()))
    return moments


def _record_index(result: TrainResult, step: int) -> int:
    step = check_int(step, "step", minimum=0)
    recorded = result.steps.tolist()
    if step not in recorded:
        raise ValueError(f"step {step} was not recorded; recorded steps are {recorded}")
    return recorded.index(step)


def percentile_range(result: TrainResult, step: int, layer: int, *, one_unit: bool = False) -> float:
    """Width (85th minus 15th percentile) of hidden layer ``layer``'s nonlinearity inputs at a recorded ``step``.

    Pooled over the layer's units (``result.percentiles``), or, with ``one_unit=True``, of the tracked unit only
    (``result.unit_percentiles``, as the paper's figure 1 plots). ``layer`` indexes the hidden layers, 0 first
    (negative counts from the last).
    """
    values = result.unit_percentiles if one_unit else result.percentiles  # (K, L, 3)
    layers = values.shape[1]
    if not isinstance(layer, int) or isinstance(layer, bool) or not -layers <= layer < layers:
        raise ValueError(f"layer must be an integer in [-{layers}, {layers - 1}] (the run has {layers} hidden "
                         f"layers), got {layer!r}")
    low, _, high = values[_record_index(result, step), layer]
    return float(high - low)


def accuracy_at(runs: Sequence[TrainResult], step: int) -> np.ndarray:
    """Test accuracy of each run (e.g. one per seed) at a recorded ``step``, shape (len(runs),)."""
    if isinstance(runs, TrainResult) or not runs:
        raise ValueError("runs must be a non-empty sequence of TrainResult (one per seed)")
    return np.array([float(run.test_accuracy[_record_index(run, step)]) for run in runs])


def first_step_reaching(result: TrainResult, accuracy: float) -> int | None:
    """The first recorded step at which the test accuracy is at least ``accuracy`` (None if it never is).

    Only recorded steps count, so the answer is exact to the recording interval.
    """
    accuracy = check_float(accuracy, "accuracy", 0.0, maximum=1.0)
    reached = np.flatnonzero(result.test_accuracy >= accuracy)
    return int(result.steps[reached[0]]) if reached.size else None
