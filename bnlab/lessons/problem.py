"""Lecture 1's computations: what a network's hidden layers see, and what batch norm does and does not fix.

* :func:`preactivation_spread`: per hidden layer, how much a unit's input changes from one example to the next
  (within a unit) against how different the units are from one another (between units). Pooled percentiles,
  like :attr:`bnlab.train.TrainResult.percentiles`, mix the two; one unit's percentiles show only the first.
* :func:`batchnorm_moments`: per batch-norm layer and feature, on one training batch, the mean and standard
  deviation of the layer's output γx̂ + β: β and |γ| (up to eps), which are learned.
* :func:`default_init_std`: the standard deviation of PyTorch's default Linear initialization.
* :func:`accuracy_at`: the test accuracies of runs (seeds) at a recorded step.
* :func:`percentile_range`: the width of a recorded, pooled 15th-85th percentile band.
* :func:`train_recording_units`: train with :func:`bnlab.train.train` and record, at its recorded steps, the
  percentiles of **every** hidden unit's nonlinearity input (a :class:`UnitRecord`), with batch norm using the
  batch statistics of the test digits as well as its running statistics: the running statistics start at
  mean 0 and variance 1 and need some dozens of steps to forget that start (lecture 5), so early records made
  with them show distributions the sigmoids never saw during training. :meth:`UnitRecord.typical_unit` picks
  the unit whose range grows by the median factor, the paper's "typical" unit. ``unit_steps`` keeps every
  unit's record at a few of the recorded steps only (a growth needs two), which saves most of the cost.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bnlab._validation import check_index, check_int
from bnlab.data import Dataset
from bnlab.models import Network, build_model
from bnlab.recording import PERCENTILE_LEVELS, hidden_activations, nonlinearity_inputs
from bnlab.train import TrainConfig, TrainResult, train

__all__ = ["BatchNormMoments", "UnitRecord", "accuracy_at", "batchnorm_moments", "default_init_std",
           "percentile_range", "preactivation_spread", "train_recording_units"]


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
    was_training = model.training
    try:
        captured = nonlinearity_inputs(model.eval(), x)
    finally:
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
        out_mean, out_std: batch mean and (biased) std of the layer's output y = γx̂ + β, the nonlinearity's
            input: β and |γ|·sqrt(σ²/(σ² + ε)), since x̂ = (u - μ)/sqrt(σ² + ε) has batch mean 0 and
            variance σ²/(σ² + ε).
        gamma, beta: the layer's learned scale and shift.
        batch_var: σ², the batch variance of the layer's input u.
    """

    out_mean: np.ndarray
    out_std: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    batch_var: np.ndarray


def batchnorm_moments(model: Network, x: torch.Tensor) -> list[BatchNormMoments]:
    """Per-feature moments of the output γx̂ + β of each ``nn.BatchNorm1d`` of ``model``, on the batch ``x``.

    A copy of ``model`` runs in training mode (batch statistics, as during a training step) on ``x`` of shape
    (N, D), so the model's own running statistics are left untouched. The moments are those of the layer's
    actual (float32) output, computed in float64.

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
        moments.append(BatchNormMoments(
            out_mean=out.mean(dim=0).numpy(), out_std=out.std(dim=0, unbiased=False).numpy(),
            gamma=layer.weight.detach().double().numpy().copy(), beta=layer.bias.detach().double().numpy().copy(),
            batch_var=u.var(dim=0, unbiased=False).numpy()))
    return moments


@dataclass(frozen=True, eq=False)
class UnitRecord:
    """Percentiles of every hidden unit's nonlinearity input over the N test examples, at recorded steps of a run.

    K steps, L hidden layers of C units each, percentile levels (15, 50, 85).

    Attributes:
        steps: (K,) int64, the steps recorded here: those of the run's :class:`~bnlab.train.TrainResult`, or
            the ``unit_steps`` among them that :func:`train_recording_units` was asked to keep.
        per_unit: (K, L, C, 3) each unit's 15th/50th/85th percentile over the N test examples, the network run
            in training mode on them as one batch: every batch norm uses the mean and variance of the N
            examples under the current weights, as it does on a training batch. (Figure 1(b, c) of the paper
            plots this training network, N_BN^tr of its Algorithm 2.)
        per_unit_running: (K, L, C, 3) the same in eval mode, every batch norm using its running statistics
            (what ``TrainResult.unit_percentiles`` holds for its one tracked unit). Without batch norm the two
            are equal.
        percentiles: (K, L, 3) ``per_unit``'s setting, pooled over the layer's C units and the N examples (the
            training-mode counterpart of ``TrainResult.percentiles``).
    """

    steps: np.ndarray
    per_unit: np.ndarray
    per_unit_running: np.ndarray
    percentiles: np.ndarray

    def ranges(self, layer: int = -1, *, running: bool = False) -> np.ndarray:
        """(K, C): each unit's 85th minus 15th percentile at each record, of hidden layer ``layer``.

        ``running=True`` reads the eval-mode records (running statistics) instead of the training-mode ones.
        """
        values = self.per_unit_running if running else self.per_unit
        index = _check_layer(layer, values.shape[1])
        return values[:, index, :, 2] - values[:, index, :, 0]

    def growth(self, start: int, end: int, layer: int = -1) -> np.ndarray:
        """(C,): how many times each unit's 15-85 range (training mode) grew from step ``start`` to ``end``."""
        ranges = self.ranges(layer)
        return ranges[_record_index(self, end)] / ranges[_record_index(self, start)]

    def typical_unit(self, start: int, end: int, layer: int = -1) -> int:
        """The unit whose range grows by the median factor from ``start`` to ``end`` (for an even number of
        units, the lower of the two middle ones): a "typical" unit in the sense of the paper's figure 1."""
        growth = self.growth(start, end, layer)
        return int(np.argsort(growth, kind="stable")[(growth.size - 1) // 2])


def _unit_percentiles(z: torch.Tensor) -> np.ndarray:
    """Of one layer's inputs z (N, C): each unit's percentiles, (C, 3); NaN if not finite."""
    values = z.detach().double().numpy()
    if not np.all(np.isfinite(values)):
        return np.full((values.shape[1], len(PERCENTILE_LEVELS)), np.nan)
    return np.percentile(values, PERCENTILE_LEVELS, axis=0).T


def _pooled_percentiles(z: torch.Tensor) -> np.ndarray:
    """Of one layer's inputs z (N, C): the percentiles of all N·C values, (3,); NaN if not finite."""
    values = z.detach().double().numpy()
    if not np.all(np.isfinite(values)):
        return np.full(len(PERCENTILE_LEVELS), np.nan)
    return np.percentile(values, PERCENTILE_LEVELS)


def train_recording_units(model: Network, data: Dataset, *, unit_steps: Sequence[int] | None = None,
                          **settings) -> tuple[TrainResult, UnitRecord]:
    """``train(model, data, **settings)``, recording every hidden unit's input percentiles at recorded steps.

    :func:`bnlab.train.train` evaluates the model once per recorded step, in eval mode, on the test split. While
    it runs, hooks catch each of those evaluation passes: they keep the percentiles of every unit's
    nonlinearity input in that pass (running statistics), and run a fresh copy of the model (same spec and
    weights) in training mode on the same N test examples, so that each batch norm normalizes with their
    batch mean and variance; the copy's running statistics are thrown away and the model's own are never
    touched, so the training run is exactly the one ``train`` alone would make. Only the evaluation passes
    are observed; training steps run unhooked at full speed.

    Args:
        model: an MLP built by :func:`bnlab.models.build_mlp` (trained in place).
        data: the dataset; its test split (N examples, N >= 2) is what the percentiles are taken over.
        unit_steps: the recorded steps at which to keep every unit's percentiles (default: all of them). Each
            must be one of the run's recorded steps; the TrainResult still records every step.
        settings: :class:`~bnlab.train.TrainConfig` fields, as for ``train``; ``eval_batch_size`` must be at
            least N (one evaluation pass per record).

    Returns:
        ``(result, record)``: the :class:`~bnlab.train.TrainResult` and a :class:`UnitRecord` of the kept steps.
    """
    _check_network(model, data.as_vectors().x_test)
    config = TrainConfig(**settings)
    if config.eval_batch_size < data.num_test:
        raise ValueError(f"train_recording_units needs eval_batch_size >= the {data.num_test} test examples "
                         f"(one evaluation pass per record), got {config.eval_batch_size}")
    recorded = config.recorded_steps()
    if unit_steps is None:
        keep = set(recorded)
    else:
        keep = {check_int(step, "each of unit_steps", minimum=0) for step in unit_steps}
        if not keep or not keep <= set(recorded):
            raise ValueError(f"unit_steps must be a non-empty selection of the recorded steps {list(recorded)}, "
                             f"got {unit_steps!r}")
    passes = 0  # evaluation passes so far: pass k evaluates recorded step k
    per_unit: list[list[np.ndarray]] = []
    running: list[list[np.ndarray]] = []
    pooled: list[list[np.ndarray]] = []

    def evaluation_pass(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        nonlocal passes
        if module.training:  # a training step: not observed
            return
        passes += 1
        if recorded[passes - 1] not in keep:
            return
        probe = build_model(model.spec, seed=0)
        probe.load_state_dict(model.state_dict())
        captured = nonlinearity_inputs(probe.train(), inputs[0])
        per_unit.append([_unit_percentiles(z) for z in captured])
        pooled.append([_pooled_percentiles(z) for z in captured])
        running.append([])

    def running_values(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if not module.training and recorded[passes - 1] in keep:
            running[-1].append(_unit_percentiles(inputs[0]))

    handles = [model.register_forward_pre_hook(evaluation_pass)]
    handles += [act.register_forward_pre_hook(running_values) for act in hidden_activations(model)]
    try:
        result = train(model, data, **settings)
    finally:
        for handle in handles:
            handle.remove()
    steps = np.array([step for step in result.steps if step in keep], dtype=np.int64)
    if passes != result.steps.size or len(per_unit) != steps.size:
        raise RuntimeError(f"expected one evaluation pass per recorded step ({result.steps.size}), saw {passes}")
    record = UnitRecord(steps=steps, per_unit=np.array(per_unit), per_unit_running=np.array(running),
                        percentiles=np.array(pooled))
    return result, record


def _check_layer(layer: int, layers: int) -> int:
    """The index (0 .. layers - 1) of hidden layer ``layer``, which may count from the end (-1: the last)."""
    return check_index(layer, "layer", layers, f" (the run has {layers} hidden layers)")


def _record_index(result: TrainResult | UnitRecord, step: int) -> int:
    step = check_int(step, "step", minimum=0)
    recorded = result.steps.tolist()
    if step not in recorded:
        raise ValueError(f"step {step} was not recorded; recorded steps are {recorded}")
    return recorded.index(step)


def percentile_range(result: TrainResult | UnitRecord, step: int, layer: int) -> float:
    """Width (85th minus 15th percentile) of hidden layer ``layer``'s nonlinearity inputs at a recorded ``step``.

    Pooled over the layer's units (``result.percentiles``; a :class:`UnitRecord`'s are in training mode; for
    one unit of a UnitRecord use :meth:`UnitRecord.ranges`). ``layer`` indexes the hidden layers, 0 first
    (negative counts from the last).
    """
    low, _, high = result.percentiles[_record_index(result, step), _check_layer(layer, result.percentiles.shape[1])]
    return float(high - low)


def accuracy_at(runs: Sequence[TrainResult], step: int) -> np.ndarray:
    """Test accuracy of each run (e.g. one per seed) at a recorded ``step``, shape (len(runs),)."""
    if isinstance(runs, TrainResult) or not runs:
        raise ValueError("runs must be a non-empty sequence of TrainResult (one per seed)")
    return np.array([float(run.test_accuracy[_record_index(run, step)]) for run in runs])
