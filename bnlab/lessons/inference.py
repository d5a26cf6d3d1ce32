"""Lecture 5's computations: the numbers behind its convention table, precise-BN study, folding checks and the
running-averages dashboard.

* :func:`convention_rows` / :func:`convention_table`: one update by the batch {1, 3} in PyTorch (run by
  ``torch.nn.BatchNorm1d`` itself) and in bnlab's models of Keras 3, CS231n and d2l, each row labelled by what
  produced it and citing its source.
* :func:`long_run_running_var`: where a convention's running variance settles on a long stream of batches
  (the biased estimators settle at (m - 1)/m of the truth).
* :func:`bias_correct_running_stats`: a model's running statistics with the initial values' share removed.
* :func:`precise_bn_study`: the lecture's 3x100 ReLU network trained with one momentum, recording the batch
  statistics each layer is fed; its running statistics and test accuracy as the EMA left them, bias-corrected,
  and recomputed (precise BN: the paper's Algorithm 2 run after training).
* :func:`measure_lag`: one layer's running variance rebuilt from the recorded batch variances, and the gap
  between the stored and the precise value split into the initial value's share and lag.
* :func:`folding_check`, :func:`fold_into_next_linear`, :func:`after_activation_folding`: where folding a batch
  norm into a neighbouring layer is exact, and where it is not.
* :func:`synthetic_truth`, :func:`running_average_traces`: the dashboard's data, a synthetic batch statistic and
  its running averages.

Every running average here is computed by :mod:`bnlab.running_stats`; nothing re-implements the update.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from bnlab._validation import check_choice, check_float, check_int, check_momentum, check_seed
from bnlab.data import Dataset
from bnlab.models import build_mlp
from bnlab.nn import batchnorm_layers, fold_batchnorm, fold_batchnorm_sequential, recompute_batchnorm_statistics
from bnlab.running_stats import (
    CONVENTIONS,
    PAPER_SOURCE,
    batch_weights,
    bias_corrected,
    bias_corrected_trace,
    convention,
    initial_value_share,
    moving_average_trace,
    newest_batch_weight,
)
from bnlab.train import evaluate, train

__all__ = ["MAX_TRACE_STEPS", "PAPER_SOURCE", "PYTORCH_INITIAL", "RECENT_STEPS", "SETTLE_STEPS", "STATISTICS",
           "SYNTHETIC_FINAL", "AfterActivationFolding", "BatchStatisticsRecorder", "ConventionRow", "FoldingCheck",
           "MeasuredLag", "PreciseBNStudy", "RunningAverages", "after_activation_folding", "bias_correct_running_stats",
           "convention_rows", "convention_table", "fold_into_next_linear", "folding_check", "long_run_running_var",
           "measure_lag", "precise_bn_study", "running_average_traces", "statistics_batches", "synthetic_truth"]

PYTORCH_INITIAL = {"mean": 0.0, "variance": 1.0}  # running_mean and running_var of a fresh PyTorch layer

# ------------------------------------------------------------------------------------------- conventions


@dataclass(frozen=True)
class ConventionRow:
    """One running-statistics update by one batch of one channel, in one code base's convention.

    Attributes:
        code: the code base and setting, e.g. ``"PyTorch, momentum=0.1"``.
        produced_by: what computed the numbers (torch itself, or bnlab's model of that code).
        momentum: the momentum as that code writes it, and what it weights.
        weight_of_new: w, the weight of this (first) batch in the new running value.
        eps: the code's default eps.
        variance: which batch variance feeds the running variance (``"unbiased"`` or ``"biased"``).
        fed_mean, fed_var: the batch mean and that batch variance.
        initial_mean, initial_var: the running statistics before the batch.
        running_mean, running_var: after it.
        source: where the rule is written.
    """

    code: str
    produced_by: str
    momentum: str
    weight_of_new: float
    eps: float
    variance: str
    fed_mean: float
    fed_var: float
    initial_mean: float
    initial_var: float
    running_mean: float
    running_var: float
    source: str

    @property
    def by_hand(self) -> str:
        """The running variance's update written out, e.g. ``"0.9·1 + 0.1·2"``."""
        return f"{1 - self.weight_of_new:.4g}·{self.initial_var:g} + {self.weight_of_new:.4g}·{self.fed_var:g}"


def _torch_row(batch: np.ndarray, momentum: float | None) -> ConventionRow:
    """Run ``torch.nn.BatchNorm1d(1, momentum=momentum)`` on ``batch`` (m,) in training mode and read it back."""
    layer = torch.nn.BatchNorm1d(1, momentum=momentum).double()
    initial_mean, initial_var = float(layer.running_mean[0]), float(layer.running_var[0])
    layer.train()
    with torch.no_grad():
        layer(torch.tensor(batch, dtype=torch.float64).reshape(-1, 1))
    written = "None (batch k gets 1/k)" if momentum is None else f"{momentum:g} (the new batch)"
    return ConventionRow(
        code=f"PyTorch, momentum={'None' if momentum is None else f'{momentum:g}'}",
        produced_by="torch.nn.BatchNorm1d", momentum=written,
        weight_of_new=newest_batch_weight(momentum, int(layer.num_batches_tracked)), eps=layer.eps,
        variance="unbiased", fed_mean=float(batch.mean()), fed_var=float(batch.var(ddof=1)),
        initial_mean=initial_mean, initial_var=initial_var, running_mean=float(layer.running_mean[0]),
        running_var=float(layer.running_var[0]), source=CONVENTIONS["pytorch"].source)


_MODELLED = {
    "keras": ("Keras 3 BatchNormalization", "bnlab's model, tested against Keras 3"),
    "cs231n": ("CS231n assignment 2 skeleton", "bnlab's model"),
    "d2l": ("d2l.ai, current edition (PyTorch tab)", "bnlab's model"),
}

def convention_rows(batch: tuple[float, ...] = (1.0, 3.0)) -> list[ConventionRow]:
    """One update by ``batch`` (the m values of one channel) from each code's initial running statistics.

    Rows: PyTorch with momentum 0.1 (its default), 0.01 (the same weight as Keras' 0.99) and None (equal
    weights: batch k gets 1/k), each run by ``torch.nn.BatchNorm1d`` itself; then Keras 3, CS231n and d2l
    with their default momenta, computed by :meth:`bnlab.running_stats.Convention.update` (bnlab's model of
    each; ``tests/test_running_stats.py`` runs real Keras against the Keras one).
    """
    values = np.asarray(batch, dtype=np.float64).ravel()
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise ValueError(f"batch must hold at least 2 finite values (one channel in training mode), got {batch!r}")
    rows = [_torch_row(values, momentum) for momentum in (0.1, 0.01, None)]
    for name, (code, produced_by) in _MODELLED.items():
        conv = convention(name)
        mean, var = conv.update(np.zeros(1), np.full(1, conv.initial_var), values.reshape(-1, 1))
        fed_var = values.var(ddof=1) if conv.variance == "unbiased" else values.var()
        weights = "the new batch" if conv.momentum_is == "new" else "the old average"
        rows.append(ConventionRow(
            code=f"{code}, momentum={conv.momentum:g}", produced_by=produced_by,
            momentum=f"{conv.momentum:g} ({weights})", weight_of_new=conv.weight_of_new(), eps=conv.eps,
            variance=conv.variance, fed_mean=float(values.mean()), fed_var=float(fed_var), initial_mean=0.0,
            initial_var=conv.initial_var, running_mean=float(mean[0]), running_var=float(var[0]),
            source=conv.source))
    return rows


def convention_table(rows: list[ConventionRow], *, paper: bool = True) -> str:
    """A markdown table of ``rows`` (numbers to 3 decimals), each row citing a numbered source; with ``paper``
    a last row for Ioffe & Szegedy's Algorithm 2 (no running average: it averages after training). The
    sources are listed below the table in a collapsed ``<details>`` block."""
    sources: list[str] = []

    def cite(source: str) -> str:
        if source not in sources:
            sources.append(source)
        return f"[{sources.index(source) + 1}]"

    lines = [("| code [source] | momentum (it weights) | eps | variance fed | running var by hand | running_mean | "
              "running_var | computed by |"),
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row.code} {cite(row.source)} | {row.momentum} | {row.eps:g} | {row.variance} "
                     f"({row.fed_var:g}) | {row.by_hand} | {row.running_mean:.3f} | {row.running_var:.3f} | "
                     f"{row.produced_by} |")
    if paper:
        lines.append(f"| paper, Algorithm 2 {cite(PAPER_SOURCE)} | none: after training, equal weights over "
                     f"training batches, weights frozen | not given | unbiased | — | — | — | — |")
    lines += ["", f"<details><summary>Sources [1]–[{len(sources)}]</summary>", ""]
    lines += [f"[{number}] {source}  " for number, source in enumerate(sources, start=1)]
    lines += ["", "</details>"]
    return "\n".join(lines)


def long_run_running_var(name: str, m: int, *, true_var: float = 4.0, weight_of_new: float = 0.002,
                         num_batches: int = 4000, seed: int = 0) -> float:
    """Where convention ``name``'s running variance ends after a long stream of batches of m values.

    Batches of ``m`` draws from N(0, true_var) update the running statistics with
    :meth:`~bnlab.running_stats.Convention.update`, the newest batch weighted ``weight_of_new`` (written in the
    convention's own meaning of momentum). After 4000 batches at w = 0.002 the initial value keeps a share of
    3e-4 and the batch noise is averaged over about 1000 batches, so the result is E[batch variance fed]:
    ``true_var`` for an unbiased estimator, ``true_var * (m - 1) / m`` for a biased one.
    """
    conv = convention(name)
    m = check_int(m, "m", minimum=2)
    true_var = check_float(true_var, "true_var", 0.0, inclusive=False)
    weight_of_new = check_float(weight_of_new, "weight_of_new", 0.0, inclusive=False, maximum=1.0)
    num_batches = check_int(num_batches, "num_batches", minimum=1)
    rng = np.random.default_rng(check_seed(seed))
    momentum = weight_of_new if conv.momentum_is == "new" else 1.0 - weight_of_new
    mean, var = np.zeros(1), np.full(1, conv.initial_var)
    for batch in rng.normal(0.0, np.sqrt(true_var), size=(num_batches, m, 1)):
        mean, var = conv.update(mean, var, batch, momentum=momentum)
    return float(var[0])


# ----------------------------------------------------------------------------------------------- precise BN


@torch.no_grad()
def bias_correct_running_stats(model: nn.Module) -> int:
    """Remove the initial values' share from every batch norm layer's running statistics, in place.

    Each layer's running_mean and running_var are replaced by :func:`bnlab.running_stats.bias_corrected`
    with PyTorch's initial values (0 and 1), the layer's own momentum and its ``num_batches_tracked``. Layers
    with ``momentum=None`` are already equal-weight averages and stay as they are.

    Returns:
        The number of layers corrected. Raises ValueError for a layer that has seen no batch.
    """
    corrected = 0
    for name, layer in batchnorm_layers(model):
        if layer.running_mean is None or layer.momentum is None:
            continue
        steps = int(layer.num_batches_tracked)
        if steps < 1:
            raise ValueError(f"batch norm layer {name!r} has seen no batch (num_batches_tracked 0): its running "
                             f"statistics are still the initial values, there is nothing to correct")
        layer.running_mean.copy_(bias_corrected(layer.running_mean, PYTORCH_INITIAL["mean"], layer.momentum,
                                                steps))
        layer.running_var.copy_(bias_corrected(layer.running_var, PYTORCH_INITIAL["variance"], layer.momentum,
                                               steps))
        corrected += 1
    return corrected


def _running_stats(model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(running_mean, running_var) of every batch norm layer, stacked: two arrays (L, C)."""
    layers = [layer for _, layer in batchnorm_layers(model)]
    return (np.stack([layer.running_mean.double().numpy() for layer in layers]),
            np.stack([layer.running_var.double().numpy() for layer in layers]))


def statistics_batches(data: Dataset, *, count: int = 50, batch_size: int = 60, seed: int = 0
                       ) -> list[torch.Tensor]:
    """The ``count`` training batches of ``batch_size`` examples that precise BN averages over: a list of
    (batch_size, D) inputs, disjoint, drawn in a random order fixed by ``seed``."""
    count = check_int(count, "count", minimum=1)
    batch_size = check_int(batch_size, "batch_size", minimum=2)
    data = data.as_vectors()
    needed = count * batch_size
    if needed > data.num_train:
        raise ValueError(f"precise_batches * batch_size = {needed} exceeds the {data.num_train} training examples")
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(check_seed(seed)))
    return [data.x_train[order[start:start + batch_size]] for start in range(0, needed, batch_size)]


class BatchStatisticsRecorder:
    """Forward hooks on every batch norm layer of a model that record, at each training-mode forward, the
    per-unit batch mean and unbiased batch variance of the layer's input: what the layer feeds its running
    statistics. ``arrays()`` returns two arrays (T, L, C) for T forwards and L layers."""

    def __init__(self, model: nn.Module):
        self.layers = [layer for _, layer in batchnorm_layers(model)]
        self.means: list[list[np.ndarray]] = [[] for _ in self.layers]
        self.variances: list[list[np.ndarray]] = [[] for _ in self.layers]
        self.handles = [layer.register_forward_hook(self._hook(index)) for index, layer in enumerate(self.layers)]

    def _hook(self, index: int):
        def record(layer: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if layer.training:
                x = inputs[0].detach().double()
                self.means[index].append(x.mean(dim=0).numpy())
                self.variances[index].append(x.var(dim=0, unbiased=True).numpy())
        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.stack([np.stack(means) for means in self.means], axis=1),
                np.stack([np.stack(variances) for variances in self.variances], axis=1))


@dataclass(frozen=True, eq=False)
class PreciseBNStudy:
    """One training run, the batch statistics its batch norm layers were fed, and three sets of running
    statistics.

    Attributes:
        momentum: PyTorch momentum of every batch norm layer during training (None: equal weights).
        steps: training steps (= ``num_batches_tracked``). seed: of the weights, the batch order and the
            precise-BN batches.
        initial_share: (1 - momentum)^steps, the share of the initial 0 / 1 left in the running statistics.
        batch_mean, batch_var: (steps, L, C) the batch mean and unbiased batch variance each of the L layers
            was fed at each training step (recorded by forward hooks; what the running statistics average).
        running_mean, running_var: ``"init"`` (precise statistics of the untrained network), ``"ema"`` (what
            training left), ``"corrected"`` (the EMA bias-corrected), ``"precise"`` (recomputed over
            ``batches`` with equal weights); each an array (L, C).
        accuracy: test accuracy with the ``"ema"``, ``"corrected"`` and ``"precise"`` statistics loaded.
        model: the trained network, holding the precise statistics.
        batches: the training batches precise BN averaged over (:func:`statistics_batches`).
    """

    momentum: float | None
    steps: int
    seed: int
    initial_share: float
    batch_mean: np.ndarray
    batch_var: np.ndarray
    running_mean: dict[str, np.ndarray]
    running_var: dict[str, np.ndarray]
    accuracy: dict[str, float]
    model: nn.Module
    batches: list[torch.Tensor]


def precise_bn_study(data: Dataset, momentum: float | None, *, steps: int = 300, batch_size: int = 60,
                     lr: float = 0.1, precise_batches: int = 50, seed: int = 0) -> PreciseBNStudy:
    """Train lecture 5's network (3 hidden layers of 100 ReLU units, BN before each ReLU, He init) once with
    batch norm momentum ``momentum``, recording the batch statistics every layer is fed at every step, and
    compare its running statistics as the EMA left them, bias-corrected and recomputed (precise BN over
    ``precise_batches`` batches of ``batch_size`` training examples).

    The momentum does not change training itself (the forward normalizes with batch statistics), so the
    weights and the recorded batch statistics are the same for every momentum; only the running statistics
    differ. ``momentum=None`` averages the whole training trajectory with equal weights.
    """
    momentum = check_momentum(momentum)
    steps = check_int(steps, "steps", minimum=1)
    data = data.as_vectors()
    batches = statistics_batches(data, count=precise_batches, batch_size=batch_size, seed=seed)
    model = build_mlp(data.num_features, data.num_classes, depth=3, width=100, activation="relu", norm="batch",
                      init="he", seed=seed)

    means, variances, accuracy = {}, {}, {}
    recompute_batchnorm_statistics(model, batches)
    means["init"], variances["init"] = _running_stats(model)
    for _, layer in batchnorm_layers(model):
        layer.reset_running_stats()
        layer.momentum = momentum
    recorder = BatchStatisticsRecorder(model)
    try:
        train(model, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed, record_every=steps,
              progress=False)
    finally:
        recorder.remove()
    batch_mean, batch_var = recorder.arrays()

    for label in ("ema", "corrected", "precise"):
        if label == "corrected":
            bias_correct_running_stats(model)
        elif label == "precise":
            recompute_batchnorm_statistics(model, batches)
        means[label], variances[label] = _running_stats(model)
        accuracy[label] = evaluate(model, data.x_test, data.y_test)[1]
    return PreciseBNStudy(momentum=momentum, steps=steps, seed=seed,
                          initial_share=initial_value_share(momentum, steps), batch_mean=batch_mean,
                          batch_var=batch_var, running_mean=means, running_var=variances, accuracy=accuracy,
                          model=model, batches=batches)


RECENT_STEPS = 30  # the last training batches, whose statistics describe (nearly) the final network


@dataclass(frozen=True, eq=False)
class MeasuredLag:
    """One layer's running variance in a :class:`PreciseBNStudy`, rebuilt from the batch variances it was fed.

    Every value is a mean over the layer's units; each average below is linear in the batch statistics, so
    its mean over units is the same average of the units' mean batch variance.

    Attributes:
        momentum, steps, seed, layer: of the study (``layer`` 0-based).
        step: 1..T, (T,). batch: the unbiased batch variance fed at each step, (T,).
        ema: PyTorch's running variance after each step, replayed from 1 with ``momentum`` (T,);
            corrected: ``ema`` bias-corrected (T,); equal: the equal-weight average of the batches so far,
            what ``momentum=None`` stores during training (T,).
        stored: the layer's own running_var at the end; stored_corrected: that, bias-corrected.
        replay_error: largest relative difference (over units) between the replayed EMA and the layer's own.
        weighted_error: largest relative difference (over units) between the bias-corrected stored value and
            the exponentially weighted mean of the recorded batch variances (weights ``batch_weights``).
        recent: mean of the last :data:`RECENT_STEPS` recorded batch variances.
        untrained, precise: precise statistics of the untrained and of the trained network.
        weights: label -> (T,) weight of each batch in the final value (normalized to sum 1), for the
            bias-corrected EMA at ``momentum``, an EMA at 0.1 and equal weights.
    """

    momentum: float
    steps: int
    seed: int
    layer: int
    step: np.ndarray
    batch: np.ndarray
    ema: np.ndarray
    corrected: np.ndarray
    equal: np.ndarray
    stored: float
    stored_corrected: float
    replay_error: float
    weighted_error: float
    recent: float
    untrained: float
    precise: float
    weights: dict[str, np.ndarray]

    @property
    def gap(self) -> float:
        """precise - stored: what precise BN changes."""
        return self.precise - self.stored

    @property
    def initial_bias(self) -> float:
        """bias-corrected - stored: the part of the gap that is the initial value's share."""
        return self.stored_corrected - self.stored

    @property
    def lag(self) -> float:
        """precise - bias-corrected: the part of the gap that is averaging over earlier networks."""
        return self.precise - self.stored_corrected

    def mean_age(self, label: str) -> float:
        """Mean age (steps before the last) of the batches in ``weights[label]``: sum_k (T - k) w_k."""
        return float(self.weights[label] @ (self.step[-1] - self.step))


def measure_lag(study: PreciseBNStudy, layer: int = 0) -> MeasuredLag:
    """Split the gap between layer ``layer``'s stored running variance and its precise value into the
    initial value's share and lag, from the batch variances the layer was fed during training."""
    if study.momentum is None:
        raise ValueError("measure_lag needs a study trained with a numeric momentum (an EMA), got momentum=None")
    layer = check_int(layer, "layer", minimum=0)
    if layer >= study.batch_var.shape[1]:
        raise ValueError(f"layer must be in [0, {study.batch_var.shape[1] - 1}], got {layer}")
    w, steps = study.momentum, study.steps
    initial = PYTORCH_INITIAL["variance"]
    fed = study.batch_var[:, layer, :]                                       # (T, C)
    replayed = moving_average_trace(fed, w, initial)                         # (T, C)
    stored = study.running_var["ema"][layer]
    stored_corrected = study.running_var["corrected"][layer]
    weights = batch_weights(w, steps)
    weighted = weights @ fed / weights.sum()
    batch = fed.mean(axis=1)
    ema = moving_average_trace(batch, w, initial)
    step = np.arange(1, steps + 1)
    corrected = bias_corrected_trace(ema, initial, w)
    normalized = {f"EMA at {w:g}, bias-corrected": weights / weights.sum(),
                  "EMA at 0.1": batch_weights(0.1, steps) / batch_weights(0.1, steps).sum(),
                  "equal weights (momentum=None)": batch_weights(None, steps)}
    return MeasuredLag(
        momentum=w, steps=steps, seed=study.seed, layer=layer, step=step, batch=batch, ema=ema,
        corrected=corrected, equal=moving_average_trace(batch, None, initial), stored=float(stored.mean()),
        stored_corrected=float(stored_corrected.mean()),
        replay_error=float(np.max(np.abs(replayed[-1] - stored) / stored)),
        weighted_error=float(np.max(np.abs(weighted - stored_corrected) / stored_corrected)),
        recent=float(batch[-RECENT_STEPS:].mean()), untrained=float(study.running_var["init"][layer].mean()),
        precise=float(study.running_var["precise"][layer].mean()), weights=normalized)


# --------------------------------------------------------------------------------------------------- folding


@dataclass(frozen=True)
class FoldingCheck:
    """A model against its folded copy: batch norm layers before / after, and the largest output difference
    in eval mode (where folding is exact) and in training mode (where batch norm uses batch statistics)."""

    norms_before: int
    norms_after: int
    eval_difference: float
    train_difference: float


@torch.no_grad()
def folding_check(model: nn.Sequential, x: torch.Tensor) -> FoldingCheck:
    """Fold ``model`` with :func:`bnlab.nn.fold_batchnorm_sequential` and compare outputs on ``x``.

    Both passes of the unfolded network run on a copy of ``model`` (a training-mode pass would update its
    running statistics), so ``model`` is left as it was.
    """
    folded = fold_batchnorm_sequential(model).eval()
    reference = copy.deepcopy(model)
    eval_difference = float((reference.eval()(x) - folded(x)).abs().max())
    train_difference = float((reference.train()(x) - folded(x)).abs().max())
    return FoldingCheck(norms_before=len(list(batchnorm_layers(model))),
                        norms_after=len(list(batchnorm_layers(folded))),
                        eval_difference=eval_difference, train_difference=train_difference)


@torch.no_grad()
def fold_into_next_linear(bn: nn.Module, linear: nn.Linear) -> nn.Linear:
    """A new Linear computing ``linear(bn(a))`` with ``bn`` in eval mode: folding a batch norm *forward*.

    In eval mode ``bn(a) = s * a + t`` per feature (s = gamma / sqrt(var + eps), t = beta - s * mean), so
    ``W (s * a + t) + b = (W diag(s)) a + (W t + b)``: scale the columns of W, move W t into the bias. This is
    how a batch norm that follows an activation (and so cannot go into the layer before it) can still vanish.
    """
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"fold_into_next_linear folds into an nn.Linear, got {type(linear).__name__}")
    if bn.running_var is None or bn.num_features != linear.in_features:
        raise ValueError(f"expected a batch norm with running statistics and {linear.in_features} features "
                         f"(the Linear's inputs), got {type(bn).__name__}({bn.num_features}) with "
                         f"track_running_stats={bn.running_var is not None}")
    # bn's eval-mode affine map z -> scale * z + shift, as fold_batchnorm computes it: fold bn into an identity
    identity = nn.Linear(bn.num_features, bn.num_features, bias=False, dtype=torch.float64)
    identity.weight.copy_(torch.eye(bn.num_features, dtype=torch.float64))
    affine = fold_batchnorm(identity, bn)
    scale, shift = affine.weight.diagonal(), affine.bias
    weight = linear.weight.double()
    bias = linear.bias.double() if linear.bias is not None else weight.new_zeros(linear.out_features)
    folded = nn.Linear(linear.in_features, linear.out_features, dtype=linear.weight.dtype)
    folded.weight.copy_(weight * scale)
    folded.bias.copy_(weight @ shift + bias)
    return folded


@dataclass(frozen=True)
class AfterActivationFolding:
    """Batch norm *after* the ReLU (Linear -> ReLU -> BN), with statistics of real data.

    Attributes:
        norms_before, norms_after: batch norm layers before / after :func:`bnlab.nn.fold_batchnorm_sequential`.
        backward_difference: largest change of the first block's output when its BN is folded into the Linear
            before it anyway (ignoring the ReLU in between).
        forward_difference: largest difference between ``next_linear(bn(a))`` and the Linear that
            :func:`fold_into_next_linear` builds.
        output_scale: the largest absolute value of the first block's output (to read the differences by).
    """

    norms_before: int
    norms_after: int
    backward_difference: float
    forward_difference: float
    output_scale: float


@torch.no_grad()
def after_activation_folding(data: Dataset, *, batches: int = 10, batch_size: int = 60, seed: int = 0
                             ) -> AfterActivationFolding:
    """Build the lecture's 3x100 ReLU network with BN after each ReLU, give it population statistics of
    ``batches`` training batches (precise BN, no training needed), and try folding it both ways."""
    data = data.as_vectors()
    model = build_mlp(data.num_features, data.num_classes, depth=3, width=100, activation="relu", norm="batch",
                      placement="after", init="he", seed=seed)
    recompute_batchnorm_statistics(
        model, [data.x_train[start:start + batch_size] for start in range(0, batches * batch_size, batch_size)])
    model.eval()
    folded = fold_batchnorm_sequential(model)
    x = data.x_test
    first, second = model.hidden_layers[0], model.hidden_layers[1]
    output = first(x)
    wrong = first.act(fold_batchnorm(first.linear, first.norm)(x))
    forward = fold_into_next_linear(first.norm, second.linear)
    activation = first.act(first.linear(x))
    return AfterActivationFolding(
        norms_before=len(list(batchnorm_layers(model))), norms_after=len(list(batchnorm_layers(folded))),
        backward_difference=float((wrong - output).abs().max()),
        forward_difference=float((forward(activation) - second.linear(output)).abs().max()),
        output_scale=float(output.abs().max()))


# -------------------------------------------------------------------------------------- the dashboard's data

STATISTICS = ("variance", "mean")
MAX_TRACE_STEPS = 3000
SETTLE_STEPS = 60  # time constant (steps) of the synthetic truth's approach to its final value
SYNTHETIC_FINAL = {"mean": 1.0, "variance": 2.7}  # final values (variance: about layer 1 of the lecture's network)
_OTHER_MOMENT = {"mean": 1.0, "variance": 0.0}  # the variance behind a mean statistic, the mean behind a variance


def synthetic_truth(steps: int, statistic: str = "variance", drift: float = 0.5) -> np.ndarray:
    """The dashboard's synthetic population value at steps t = 1..steps: (steps,).

    ``truth_t = F * (1 - drift * exp(-(t - 1) / 60))`` with F = 2.7 for the variance (about layer 1 of the
    lecture's network after 300 steps) and 1 for the mean: it starts at ``(1 - drift) * F`` and closes 63% of
    the remaining distance every 60 steps (within 1% of F after 60 * ln(100 * drift) steps, 235 at drift 0.5).
    ``drift=0`` is a stationary statistic. A model, not a measurement: lecture 5 compares it with the batch
    variances recorded in a real run.
    """
    steps = check_int(steps, "steps", minimum=1)
    statistic = check_choice(statistic, "statistic", STATISTICS)
    drift = check_float(drift, "drift", 0.0, maximum=1.0)
    step = np.arange(1, steps + 1)
    return SYNTHETIC_FINAL[statistic] * (1.0 - drift * np.exp(-(step - 1) / SETTLE_STEPS))


@dataclass(frozen=True, eq=False)
class RunningAverages:
    """A synthetic batch statistic over training steps t = 1..T and three running averages of it (arrays (T,)).

    Attributes:
        statistic: ``"mean"`` or ``"variance"``; momentum: PyTorch's; drift, batch_size, seed: as requested.
        step: 1..T. batch: the statistic of each batch (mean, or unbiased variance as PyTorch feeds it).
        truth: the synthetic population value at each step (:func:`synthetic_truth`). initial: PyTorch's
            starting value (0 or 1).
        ema: the running average from ``initial``; corrected: ``ema`` bias-corrected;
        equal: the equal-weight average (``momentum=None``). initial_share: (1 - momentum)^t at each step.
    """

    statistic: str
    momentum: float
    drift: float
    batch_size: int
    seed: int
    step: np.ndarray
    batch: np.ndarray
    truth: np.ndarray
    initial: float
    ema: np.ndarray
    corrected: np.ndarray
    equal: np.ndarray
    initial_share: np.ndarray


def running_average_traces(momentum: float = 0.001, steps: int = 300, statistic: str = "variance",
                           drift: float = 0.5, *, batch_size: int = 60, seed: int = 0) -> RunningAverages:
    """One channel's synthetic batch statistic over ``steps`` training steps, and its running averages.

    The truth follows :func:`synthetic_truth` (``drift=0``: stationary; ``drift=0.5``: the variance starts at
    1.35 and settles at 2.7). Each step draws ``batch_size`` values from a normal distribution with that truth
    and feeds its batch mean or unbiased batch variance (what PyTorch feeds) to
    :func:`bnlab.running_stats.moving_average_trace`: with weight ``momentum`` from PyTorch's initial value (0 for
    the mean, 1 for the variance), and with weights 1/k (``momentum=None``, equal weights).
    """
    momentum = check_float(momentum, "momentum", 0.0, inclusive=False, maximum=1.0)
    steps = check_int(steps, "steps", minimum=1)
    if steps > MAX_TRACE_STEPS:
        raise ValueError(f"steps must be an integer in [1, {MAX_TRACE_STEPS}], got {steps!r}")
    truth = synthetic_truth(steps, statistic, drift)
    statistic, drift = check_choice(statistic, "statistic", STATISTICS), float(drift)
    batch_size = check_int(batch_size, "batch_size", minimum=2)
    rng = np.random.default_rng(check_seed(seed))

    step = np.arange(1, steps + 1)
    draws = rng.standard_normal((steps, batch_size))
    if statistic == "mean":
        batch = (truth[:, None] + np.sqrt(_OTHER_MOMENT["mean"]) * draws).mean(axis=1)
    else:
        batch = (_OTHER_MOMENT["variance"] + np.sqrt(truth)[:, None] * draws).var(axis=1, ddof=1)

    initial = PYTORCH_INITIAL[statistic]
    ema = moving_average_trace(batch, momentum, initial)
    corrected = bias_corrected_trace(ema, initial, momentum)
    share = np.array([initial_value_share(momentum, int(t)) for t in step])
    return RunningAverages(statistic=statistic, momentum=momentum, drift=drift, batch_size=batch_size, seed=seed,
                           step=step, batch=batch, truth=truth, initial=initial, ema=ema, corrected=corrected,
                           equal=moving_average_trace(batch, None, initial), initial_share=share)
