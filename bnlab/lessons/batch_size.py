"""The numbers lecture 8 states, computed from the batch-size runs (the lecture prints them, the tests check them
against their brackets).

Most functions read the shipped runs (:func:`bnlab.experiments.norm_batch_size_sweep` and friends) and train
nothing. Two measure what the cache does not keep: :func:`gradient_at_init` (one forward and backward pass of
an untrained network) and :func:`retrain`, which trains one shipped setting's seed again (1-5 s) with more
records (weight and gradient norms per layer at chosen updates); it is the shipped run, update for update.

Conventions: ``B`` is the SGD batch (examples per update), ``g`` the normalization batch (examples whose
statistics one BN call shares, ghost batch norm); a normalization batch of two is a *pair*.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bnlab.experiments import BatchSizeConfig, SeedRuns
from bnlab.experiments._runs import mnist
from bnlab.experiments.batch_size import batch_statistics_accuracy
from bnlab.models import build_mlp
from bnlab.recording import gradient_norms, named_weight_layers, weight_norms
from bnlab.train import TrainConfig, TrainResult, train

__all__ = [
    "RECORD_STEPS",
    "GradientAtInit",
    "accuracy_after_examples",
    "bn_jacobian",
    "final_train_loss",
    "first_update_norm",
    "gap_to_other_sgd_batches",
    "gradient_at_init",
    "late_loss_peak",
    "own_statistics_accuracy",
    "pair_gain",
    "pooled_range",
    "relative_steps",
    "retrain",
    "with_final_train_loss",
]

# updates at which :func:`retrain` records (the first ones densely: the pair's weights jump at update 1)
RECORD_STEPS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600)


# ----------------------------------------------------------------------------------- reading the shipped runs


def final_train_loss(runs: SeedRuns) -> np.ndarray:
    """(S,) each seed's training loss at the end: the mean training-mode minibatch cross-entropy over the
    last recorded stretch of updates (551-600 in the shipped runs); NaN for a seed that diverged."""
    return runs.values("train_loss")[:, -1]


def with_final_train_loss(runs: SeedRuns) -> SeedRuns:
    """The same runs with each seed's :func:`final_train_loss` added as the scalar ``"final_train_loss"``, so
    the figures can draw it like any recorded scalar (one definition for the lecture and its figures)."""
    finals = final_train_loss(runs)
    return SeedRuns(seeds=runs.seeds, arrays=tuple({**arrays, "final_train_loss": np.float64(final)}
                                                   for arrays, final in zip(runs.arrays, finals)))


def late_loss_peak(runs: SeedRuns, after: int) -> np.ndarray:
    """(S,) each seed's largest recorded training loss after update ``after`` (each record is the mean
    training-mode minibatch loss since the previous one): a late spike that the final value may hide."""
    steps = runs.values("steps")[0]
    return np.nanmax(runs.values("train_loss")[:, steps > after], axis=1)


def gap_to_other_sgd_batches(by_batch: Mapping[int, Mapping[int, SeedRuns]], batch_size: int
                             ) -> dict[int, float]:
    """``{g: difference}`` for every normalization batch g that ``batch_size`` has: its seed-mean final test
    accuracy minus the lowest seed mean of the *other* SGD batches at that g (negative: ``batch_size`` is
    behind every other SGD batch there). A g no other SGD batch has is left out."""
    out = {}
    for g, runs in sorted(by_batch[batch_size].items()):
        others = [each[g].final_accuracies().mean() for b, each in by_batch.items() if b != batch_size and g in each]
        if others:
            out[int(g)] = float(runs.final_accuracies().mean() - min(others))
    return out


def pooled_range(runs: Iterable[SeedRuns], name: str = "final_accuracy") -> tuple[float, float]:
    """``(lowest, highest)`` value of the scalar ``name`` over every seed of every run in ``runs`` (NaN if a
    seed has none, e.g. diverged: a range must not hide it)."""
    values = np.concatenate([each.values(name) for each in runs])
    if not np.isfinite(values).all():
        return math.nan, math.nan
    return float(values.min()), float(values.max())


def accuracy_after_examples(runs: SeedRuns, batch_size: int, examples: int) -> np.ndarray:
    """(S,) test accuracy (population statistics) after the run has seen ``examples`` training examples,
    that is after ``examples / batch_size`` updates, read from the records.

    The runs use a constant learning rate and no momentum, so the network at update ``s`` of a 600-update
    run is exactly the network a run of ``s`` updates ends with: reading the record is the same as having
    trained the shorter run. Raises ValueError when ``examples / batch_size`` is not a recorded update.
    """
    updates, rest = divmod(int(examples), int(batch_size))
    steps = runs.values("steps")[0]
    if rest or updates not in steps:
        raise ValueError(f"{examples} examples at SGD batch {batch_size} is not a recorded update "
                         f"(recorded: every {int(steps[1] - steps[0])} updates up to {int(steps[-1])})")
    return runs.values("test_accuracy")[:, int(np.flatnonzero(steps == updates)[0])]


# --------------------------------------------------------------------------------- a pair, exactly


def bn_jacobian(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """(m, m) Jacobian d xhat / d x of one feature's training-mode normalization over the batch ``x`` (m,),
    computed by torch's autograd in float64 (not by the formula the lecture derives, so it can check it)."""
    values = torch.as_tensor(np.asarray(x, dtype=np.float64))

    def normalize(v: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(v[:, None], None, None, training=True, eps=eps)[:, 0]

    return torch.autograd.functional.jacobian(normalize, values).numpy()


def pair_gain(gap: float | np.ndarray, eps: float = 1e-5) -> float | np.ndarray:
    """The one nonzero singular value of a pair's Jacobian, for inputs ``gap = x1 - x2`` apart:
    ``8 eps / (gap^2 + 4 eps)^(3/2)``; ``1/sqrt(eps)`` at a tie, about ``8 eps / |gap|^3`` far from one."""
    gap = np.asarray(gap, dtype=np.float64)
    gain = 8 * eps / (gap ** 2 + 4 * eps) ** 1.5
    return float(gain) if gain.ndim == 0 else gain


# --------------------------------------------------------------------------------- the network at init


@dataclass(frozen=True)
class GradientAtInit:
    """One forward and backward pass of an untrained network on its first training batch.

    Attributes:
        norm_batch_size: g.
        weight_grad: (L + 1,) norm of each weight layer's gradient (hidden1 .. output); the shipped runs record
            the same numbers at update 0.
        weight_norm: (L + 1,) norm of each weight layer.
        weight_cosine: (L + 1,) cosine between each weight layer and its gradient, <W, grad W> / (||W|| ||grad W||)
            (about 0 for a layer under batch norm, up to eps: lecture 4's scale invariance).
        pre_norm_grad: (B, width) dL/dz for layer 1's input to its batch norm, z = W1 x (one entry per example
            and unit).
        pair_gap: (B, width) |z - z of the partner| when g = 2 (consecutive examples form the pairs), else None.
        lr: the learning rate of the run this batch starts.
    """

    norm_batch_size: int
    weight_grad: np.ndarray
    weight_norm: np.ndarray
    weight_cosine: np.ndarray
    pre_norm_grad: np.ndarray
    pair_gap: np.ndarray | None
    lr: float

    def top_share(self, fraction: float = 0.01) -> float:
        """Share of the squared gradient sum(dL/dz^2) carried by the largest ``fraction`` of the entries."""
        squared = np.sort((self.pre_norm_grad ** 2).ravel())[::-1]
        count = max(1, round(fraction * squared.size))
        return float(squared[:count].sum() / squared.sum())

    def top_gap(self, fraction: float = 0.01) -> float:
        """Median |gap to the partner| of the largest ``fraction`` of the entries (g = 2 only)."""
        if self.pair_gap is None:
            raise ValueError(f"pairs exist only at normalization batch 2, this is {self.norm_batch_size}")
        squared = (self.pre_norm_grad ** 2).ravel()
        count = max(1, round(fraction * squared.size))
        return float(np.median(self.pair_gap.ravel()[np.argsort(squared)[::-1][:count]]))

    def typical_gap(self) -> float:
        """Median |gap to the partner| over all entries (g = 2 only)."""
        if self.pair_gap is None:
            raise ValueError(f"pairs exist only at normalization batch 2, this is {self.norm_batch_size}")
        return float(np.median(self.pair_gap))


def _model(config: BatchSizeConfig, seed: int) -> torch.nn.Module:
    """The untrained network of one seed of ``config``, as :func:`bnlab.experiments.run` builds it."""
    return build_mlp(seed=seed, depth=config.depth, width=config.width, activation=config.activation,
                     **config.model_options())


def gradient_at_init(config: BatchSizeConfig, seed: int = 0) -> GradientAtInit:
    """The gradient of seed ``seed``'s untrained network on the first training batch it would see (the same
    shuffling as :func:`bnlab.train.train`), in training mode. ``config`` sets g, B and the model."""
    data = mnist()
    model = _model(config, seed).train()
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(seed))
    batch = order[:config.batch_size]
    captured: dict[str, torch.Tensor] = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["z"] = output

    layers = named_weight_layers(model)
    hook = layers[0][1].register_forward_hook(keep)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        F.cross_entropy(model(data.x_train[batch]), data.y_train[batch]).backward()
    finally:
        hook.remove()
        torch.set_num_threads(previous)
    z = captured["z"].detach().numpy().astype(np.float64)
    cosines = []
    for _, layer in layers:
        weight, grad = layer.weight.detach().double(), layer.weight.grad.double()
        cosines.append(float((weight * grad).sum() / (weight.norm() * grad.norm())))
    gap = None
    if config.norm == "batch" and config.norm_batch_size == 2:
        pairs = z.reshape(-1, 2, z.shape[1])
        gap = np.repeat(np.abs(pairs[:, 0] - pairs[:, 1]), 2, axis=0)
    return GradientAtInit(norm_batch_size=config.norm_batch_size, weight_grad=gradient_norms(layers),
                          weight_norm=weight_norms(layers), weight_cosine=np.array(cosines),
                          pre_norm_grad=captured["z"].grad.numpy().astype(np.float64), pair_gap=gap, lr=config.lr)


def first_update_norm(weight_norm: float, grad_norm: float, lr: float) -> float:
    """||W - lr * grad|| when the gradient is orthogonal to W (a layer under batch norm, up to eps):
    ``sqrt(||W||^2 + lr^2 ||grad||^2)``. An SGD step can then only grow the weights."""
    return math.sqrt(weight_norm ** 2 + (lr * grad_norm) ** 2)


# --------------------------------------------------------------------------------- one shipped seed again


def retrain(config: BatchSizeConfig, seed: int = 0, record_steps: Sequence[int] = RECORD_STEPS
            ) -> tuple[TrainResult, torch.nn.Module]:
    """Train seed ``seed`` of ``config`` again, recording at ``record_steps``; returns (result, trained model).

    Same model, seed, minibatch order and single torch thread as the shipped run, so it is that run update for
    update (its final test accuracy equals the shipped one); recording more often only adds evaluations (but
    ``train_loss_avg`` averages the updates since the previous record, so it depends on ``record_steps``).
    ``result.weight_norms`` and ``result.grad_norms`` are (K, L + 1), which the shipped runs do not keep.
    """
    model = _model(config, seed)
    result = train(model, mnist(), TrainConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                               weight_decay=config.weight_decay, seed=seed,
                                               record_steps=tuple(record_steps), threads=1, progress=False))
    return result, model


def relative_steps(result: TrainResult, lr: float, layer: int = 0, after: int = 0) -> np.ndarray:
    """``lr * ||grad W|| / ||W||`` of weight layer ``layer`` (0 = hidden1) at each recorded update after
    ``after``: how far one SGD step moves the layer, relative to its size (the gradient is that update's
    minibatch gradient, the norm the one after the update). Under batch norm's scale invariance only this
    ratio, not the step itself, turns the layer's direction."""
    keep = np.asarray(result.steps) > after
    return lr * np.asarray(result.grad_norms)[keep, layer] / np.asarray(result.weight_norms)[keep, layer]


def own_statistics_accuracy(model: torch.nn.Module, test_batch_sizes: Iterable[int]) -> dict[int, float]:
    """``{t: test accuracy}`` when a network trained with (ghost) batch norm forgets ``eval()``: the test split
    is run in training mode in batches of ``t`` examples, each normalized with its own statistics.

    Works on a copy whose ghost batch size is set to ``t`` (the trained network and its running statistics stay
    untouched); the 1,000 test examples are cut to the largest multiple of ``t``.
    """
    out = {}
    for size in test_batch_sizes:
        probe = copy.deepcopy(model)
        for module in probe.modules():
            if hasattr(module, "ghost_batch_size"):
                module.ghost_batch_size = int(size)
        out[int(size)] = batch_statistics_accuracy(probe, int(size))
    return out

