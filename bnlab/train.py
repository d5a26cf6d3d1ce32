"""A small, fast, seeded training loop that records what the course's plots need and stops cleanly on divergence.

Plain minibatch SGD (optional momentum and weight decay) on cross-entropy. Each epoch shuffles the training
split with a seeded generator and cuts it into full batches of ``batch_size`` (the remainder is dropped, so
every batch norm sees the same batch size).

What a recorded step s holds (s counts updates; s = 0 is the untrained model):

* ``train_loss[k]``: the loss of the minibatch of update s, measured just before that update (the number a
  training log prints); ``train_loss_avg[k]`` averages the minibatch losses since the previous record.
  ``grad_norms[k]``: that minibatch's weight gradients. At s = 0 both come from the first minibatch, so they
  equal step 1's.
* ``test_loss``, ``test_accuracy``, ``percentiles``, ``unit_percentiles``, ``weight_norms``,
  ``unit_weight_norms``: the model after
  update s, evaluated in ``eval()`` mode on the test split. Percentiles are those of the input of each hidden
  nonlinearity over the test split, as in figure 1(b, c) of Ioffe & Szegedy (2015).

Divergence (a non-finite loss, or a loss above ``divergence_threshold``) ends the run: ``diverged`` and
``diverged_at`` say when, the arrays hold the records made before it, and nothing is raised.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bnlab._validation import check_float, check_int, check_seed
from bnlab.data import Dataset
from bnlab.models import ModelSpec, Network
from bnlab.recording import (
    PERCENTILE_LEVELS,
    PreActivationRecorder,
    gradient_norms,
    hidden_activations,
    named_weight_layers,
    unit_weight_norms,
    weight_norms,
)

__all__ = ["TrainConfig", "TrainResult", "evaluate", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (frozen and hashable, so experiments can cache on it).

    Attributes:
        steps: number of SGD updates.
        batch_size: examples per minibatch (at most the training-set size).
        lr: learning rate, > 0.
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 penalty coefficient (torch SGD's ``weight_decay``), >= 0.
        seed: seeds the minibatch order and torch's global RNG during the run (restored afterwards).
        record_every: record at steps 0, record_every, 2 * record_every, ... and always at the last step.
        record_steps: explicit steps to record instead (each in [0, steps]); overrides ``record_every``.
        eval_batch_size: examples per forward pass when evaluating.
        threads: torch intra-op threads during the run; the previous setting is restored afterwards.
        progress: show a ``tqdm.auto`` progress bar.
        divergence_threshold: a training loss above this (or non-finite) ends the run as diverged.
        tracked_unit: the unit (MLP) or channel (CNN) whose pre-activation ``unit_percentiles`` follows.
    """

    steps: int = 1000
    batch_size: int = 60
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0
    record_every: int = 100
    record_steps: tuple[int, ...] | None = None
    eval_batch_size: int = 1000
    threads: int = 1
    progress: bool = True
    divergence_threshold: float = 1e3
    tracked_unit: int = 0

    def __post_init__(self) -> None:
        check_int(self.steps, "steps", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_float(self.lr, "lr", 0.0, inclusive=False)
        check_float(self.momentum, "momentum", 0.0, maximum=1.0, maximum_inclusive=False)
        check_float(self.weight_decay, "weight_decay", 0.0)
        check_seed(self.seed)
        check_int(self.record_every, "record_every", minimum=1)
        check_int(self.eval_batch_size, "eval_batch_size", minimum=1)
        check_int(self.threads, "threads", minimum=1)
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be True or False, got {self.progress!r}")
        check_float(self.divergence_threshold, "divergence_threshold", 0.0, inclusive=False)
        check_int(self.tracked_unit, "tracked_unit", minimum=0)
        if self.record_steps is not None:
            if isinstance(self.record_steps, (str, bytes)) or not isinstance(self.record_steps, Iterable):
                raise ValueError(f"record_steps must be a sequence of step numbers, got {self.record_steps!r}")
            steps = tuple(sorted({check_int(s, "each of record_steps", minimum=0) for s in self.record_steps}))
            if not steps or steps[-1] > self.steps:
                raise ValueError(f"record_steps must hold at least one step, each in [0, steps={self.steps}], "
                                 f"got {self.record_steps!r}")
            object.__setattr__(self, "record_steps", steps)  # normalized: sorted, unique, a tuple

    def recorded_steps(self) -> tuple[int, ...]:
        """The steps this config records, sorted."""
        if self.record_steps is not None:
            return self.record_steps
        steps = list(range(0, self.steps + 1, self.record_every))
        if steps[-1] != self.steps:
            steps.append(self.steps)
        return tuple(steps)


@dataclass(frozen=True, eq=False)
class TrainResult:
    """Everything one run recorded, as numpy arrays ready to plot (K recorded steps, L hidden layers).

    Attributes:
        config: the :class:`TrainConfig` of the run.
        model_spec: the model's :class:`~bnlab.models.ModelSpec` (None for a model not built by bnlab).
        steps: (K,) int64 step numbers.
        train_loss, train_loss_avg, test_loss, test_accuracy: (K,) float64 (see the module docstring).
        percentiles: (K, L, 3) the 15th/50th/85th percentiles of each hidden layer's pre-activations, pooled
            over the layer's units, on the test split.
        unit_percentiles: (K, L, 3) the same for one unit (``config.tracked_unit``), as the paper plots.
        grad_norms, weight_norms: (K, L + 1) per weight layer, ``layer_names`` order.
        unit_weight_norms: (K, L + 1, 3) 15th/50th/85th percentiles over each layer's output units of the
            unit's weight-vector norm (batch norm is scale-invariant per unit, not per matrix).
        layer_names: ``("hidden1", ..., "output")``.
        percentile_levels: (15, 50, 85).
        diverged: whether the run stopped early on a non-finite or too-large loss.
        diverged_at: the update at which it did (None if it did not).
        diverged_loss: the loss that triggered it (None if it did not).
        steps_completed: updates actually performed.
        seconds: wall time of the run.
    """

    config: TrainConfig
    model_spec: ModelSpec | None
    steps: np.ndarray
    train_loss: np.ndarray
    train_loss_avg: np.ndarray
    test_loss: np.ndarray
    test_accuracy: np.ndarray
    percentiles: np.ndarray
    unit_percentiles: np.ndarray
    grad_norms: np.ndarray
    weight_norms: np.ndarray
    unit_weight_norms: np.ndarray
    layer_names: tuple[str, ...]
    percentile_levels: tuple[float, ...] = PERCENTILE_LEVELS
    diverged: bool = False
    diverged_at: int | None = None
    diverged_loss: float | None = None
    steps_completed: int = 0
    seconds: float = 0.0

    @property
    def hidden_names(self) -> tuple[str, ...]:
        """Names of the L hidden layers (the rows of ``percentiles``)."""
        return tuple(name for name in self.layer_names if name != "output")

    @property
    def final_test_accuracy(self) -> float:
        """Test accuracy at the last recorded step (NaN if nothing was recorded)."""
        return float(self.test_accuracy[-1]) if self.test_accuracy.size else math.nan

    def as_dict(self) -> dict:
        """Plain-Python form (config and spec as dicts, arrays as lists), e.g. for JSON."""
        out = {}
        for key, value in self.__dict__.items():
            if isinstance(value, np.ndarray):
                value = value.tolist()
            elif key in ("config", "model_spec") and value is not None:
                value = asdict(value)
            out[key] = value
        return out

    def __repr__(self) -> str:
        status = f"diverged at step {self.diverged_at}" if self.diverged else "finished"
        return (f"TrainResult({status}, {self.steps_completed} steps in {self.seconds:.2f} s, "
                f"{self.steps.size} records, final test accuracy {self.final_test_accuracy:.3f})")


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` in eval mode on (x, y); the model's mode is restored.

    Args:
        x: (N, ...) inputs; y: (N,) int64 labels.

    Returns:
        (loss, accuracy) as floats.
    """
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                logits = model(x[start:start + batch_size])
                target = y[start:start + batch_size]
                loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
                correct += int((logits.argmax(dim=1) == target).sum())
    finally:
        model.train(was_training)
    return loss_sum / x.shape[0], correct / x.shape[0]


@dataclass
class _Records:
    """Rows appended on recording steps; turned into a :class:`TrainResult` at the end."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_loss_avg: list[float] = field(default_factory=list)
    grad_norms: list[np.ndarray] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    percentiles: list[np.ndarray] = field(default_factory=list)
    unit_percentiles: list[np.ndarray] = field(default_factory=list)
    weight_norms: list[np.ndarray] = field(default_factory=list)
    unit_weight_norms: list[np.ndarray] = field(default_factory=list)

    def arrays(self, num_hidden: int, num_weight_layers: int) -> dict[str, np.ndarray]:
        k = len(self.steps)
        while len(self.train_loss) < k:  # only a step-0 row whose first minibatch diverged
            self.train_loss.append(math.nan)
            self.train_loss_avg.append(math.nan)
            self.grad_norms.append(np.full(num_weight_layers, np.nan))
        levels = len(PERCENTILE_LEVELS)

        def stack(rows: list, shape: tuple[int, ...]) -> np.ndarray:
            return np.array(rows[:k], dtype=np.float64).reshape(k, *shape)

        return {
            "steps": np.array(self.steps[:k], dtype=np.int64),
            "train_loss": stack(self.train_loss, ()),
            "train_loss_avg": stack(self.train_loss_avg, ()),
            "test_loss": stack(self.test_loss, ()),
            "test_accuracy": stack(self.test_accuracy, ()),
            "percentiles": stack(self.percentiles, (num_hidden, levels)),
            "unit_percentiles": stack(self.unit_percentiles, (num_hidden, levels)),
            "grad_norms": stack(self.grad_norms, (num_weight_layers,)),
            "weight_norms": stack(self.weight_norms, (num_weight_layers,)),
            "unit_weight_norms": stack(self.unit_weight_norms, (num_weight_layers, levels)),
        }


def _matching_view(model: nn.Module, data: Dataset) -> Dataset:
    """Images for a bnlab CNN, vectors for a bnlab MLP; other models get the data as it is."""
    if not isinstance(model, Network):
        return data
    view = data.as_images() if model.spec.kind == "cnn" else data.as_vectors()
    if tuple(view.x_train.shape[1:]) != model.spec.input_shape:
        raise ValueError(f"the model expects inputs of shape {model.spec.input_shape}, the dataset "
                         f"{data.name!r} has examples of shape {tuple(view.x_train.shape[1:])}")
    if data.num_classes > model.spec.num_classes:
        raise ValueError(f"the dataset has {data.num_classes} classes, the model only {model.spec.num_classes} "
                         f"outputs")
    return view


def train(model: nn.Module, data: Dataset, config: TrainConfig | None = None, *,
          on_step: Callable[[int], None] | None = None, **overrides) -> TrainResult:
    """Train ``model`` in place on ``data`` with minibatch SGD and return what was recorded.

    Args:
        model: usually a :class:`~bnlab.models.Network` (then pre-activation percentiles are recorded, and
            the data are viewed as images or vectors to match it); any module mapping inputs to logits works.
        data: a :class:`~bnlab.data.Dataset`.
        config: a :class:`TrainConfig`; keyword ``overrides`` replace its fields (``train(m, d, lr=0.5)``).
        on_step: called with the update's number after every update; an exception it raises ends the run and
            propagates (how a dashboard cancels a live run).

    Returns:
        A :class:`TrainResult`. The model is left in train mode. Divergence is recorded, never raised.
    """
    config = TrainConfig(**{**asdict(config or TrainConfig()), **overrides})
    data = _matching_view(model, data)
    if config.batch_size > data.num_train:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {data.num_train} training examples")

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # anything stochastic in the model is seeded, then restored
            torch.manual_seed(config.seed)
            return _run(model, data, config, on_step)
    finally:
        torch.set_num_threads(previous_threads)


def _run(model: nn.Module, data: Dataset, config: TrainConfig, on_step: Callable[[int], None] | None
         ) -> TrainResult:
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    layers = named_weight_layers(model)
    activations = hidden_activations(model)
    to_record = set(config.recorded_steps())
    records = _Records()

    def record_evaluation(step: int) -> None:
        with PreActivationRecorder(activations, tracked_unit=config.tracked_unit) as recorder:
            test_loss, test_accuracy = evaluate(model, data.x_test, data.y_test, config.eval_batch_size)
        pooled, unit = recorder.percentiles()
        records.steps.append(step)
        records.test_loss.append(test_loss)
        records.test_accuracy.append(test_accuracy)
        records.percentiles.append(pooled)
        records.unit_percentiles.append(unit)
        records.weight_norms.append(weight_norms(layers))
        records.unit_weight_norms.append(unit_weight_norms(layers))

    batches_per_epoch = data.num_train // config.batch_size
    diverged_at, diverged_loss = None, None
    loss_sum_since_record, losses_since_record = 0.0, 0
    step = 0
    model.train()
    if 0 in to_record:
        record_evaluation(0)
    bar = tqdm(total=config.steps, disable=not config.progress, leave=False, desc="training")
    try:
        while step < config.steps:
            order = torch.randperm(data.num_train, generator=generator)
            x_epoch, y_epoch = data.x_train[order], data.y_train[order]  # one gather per epoch, then views
            for batch in range(batches_per_epoch):
                if step >= config.steps:
                    break
                step += 1
                start = batch * config.batch_size
                logits = model(x_epoch[start:start + config.batch_size])
                loss = F.cross_entropy(logits, y_epoch[start:start + config.batch_size])
                loss_value = loss.item()
                if not math.isfinite(loss_value) or loss_value > config.divergence_threshold:
                    diverged_at, diverged_loss = step, loss_value
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                loss_sum_since_record += loss_value
                losses_since_record += 1
                if step == 1 and 0 in to_record:  # the untrained model's row: loss and gradients of batch 1
                    records.train_loss.append(loss_value)
                    records.train_loss_avg.append(loss_value)
                    records.grad_norms.append(gradient_norms(layers))
                if step in to_record:
                    records.train_loss.append(loss_value)
                    records.train_loss_avg.append(loss_sum_since_record / losses_since_record)
                    records.grad_norms.append(gradient_norms(layers))
                    loss_sum_since_record, losses_since_record = 0.0, 0
                optimizer.step()
                if step in to_record:
                    record_evaluation(step)
                    bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{records.test_accuracy[-1]:.3f}",
                                    refresh=False)
                bar.update()
                if on_step is not None:
                    on_step(step)
            if diverged_at is not None:
                break
    finally:
        bar.close()
        model.train()

    return TrainResult(
        config=config,
        model_spec=model.spec if isinstance(model, Network) else None,
        layer_names=tuple(name for name, _ in layers),
        diverged=diverged_at is not None,
        diverged_at=diverged_at,
        diverged_loss=diverged_loss,
        steps_completed=step - (diverged_at is not None),
        seconds=time.perf_counter() - started,
        **records.arrays(len(activations), len(layers)),
    )
