"""Lecture 12's computations: batch norm in practice, each pitfall measured next to its control.

Every study starts from the lecture's network (3 hidden layers of 100 ReLU units, BN before each ReLU, torch's
default init) trained with plain SGD (batch 60, learning rate 0.1, 600 updates) on the 4,000/1,000 MNIST subset.
:func:`train_shared` trains it once and keeps what the later sections need (batch statistics fed to each layer,
checkpoints), so most sections train nothing new.

* Forgetting ``eval()``, beyond lecture 8: :func:`batched_accuracy` tests a copy in eval mode, in training mode
  (each test batch normalized by its own statistics) or after a training-mode pass over the test set has
  overwritten its running statistics (``"polluted"``), in shuffled or class-sorted test batches;
  :func:`forgot_eval_table` sweeps all of it for the figure and the dashboard.
* :func:`batchnorm_state` / :func:`batchnorm_changes`: what a piece of code did to every batch norm layer's
  running statistics and affine parameters (the checks of the fine-tuning section and of exercise 5).
* The batch of one: :func:`training_mode_error`, :func:`one_epoch` (a DataLoader loop whose last batch is
  short), :func:`one_step_accuracy` (one more update on a small batch), :func:`short_batch_epochs` (does the
  damage of a short last batch last past the next updates?), :func:`one_by_one_logits`.
* :func:`ema_grid`: running statistics at several momenta and run lengths, replayed from one run's recorded
  batch statistics, raw, bias-corrected and precise, and the split of the gap in the statistics themselves.
* :func:`fine_tune`: continued training in batches of 2 with five treatments of the batch norm layers.
* :func:`placement_runs`: BN before or after the activation, ReLU and sigmoid, every seed.
* :func:`dropout_study`: the variance shift of a batch norm layer that follows dropout, measured and
  predicted, with recomputed statistics as the control (all layers, and BN 2 alone for the compounding).
* :func:`redundant_bias_study`: a bias right before batch norm, in a trained network.
* :func:`final_layer_bn_study` / :func:`cross_entropy_floor` / :func:`cross_entropy_floor_mixed`: batch norm on
  the logits.
* :func:`folding_speed`: a folded network against the unfolded one, outputs and time.
* :func:`lint_batchnorm`: structural mistakes (bias before BN, BN on the logits, dropout feeding BN) found by
  watching one forward pass.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bnlab._validation import check_choice, check_float, check_int, check_seed
from bnlab.data import Dataset, load_mnist_subset
from bnlab.experiments._runs import map_seeds
from bnlab.lessons.inference import (
    PYTORCH_INITIAL,
    BatchStatisticsRecorder,
    statistics_batches,
)
from bnlab.models import Network, build_mlp
from bnlab.nn import (
    batchnorm_layers,
    fold_batchnorm_sequential,
    freeze_batchnorm,
    is_batchnorm,
    recompute_batchnorm_statistics,
)
from bnlab.running_stats import (
    bias_corrected,
    initial_value_share,
    moving_average_trace,
)
from bnlab.timing import compare_ms
from bnlab.train import TrainConfig, TrainResult, evaluate, train

__all__ = [
    "BATCH_SIZES",
    "CHECKPOINTS",
    "DROPOUT_PLACES",
    "FINAL_LAYER_VARIANTS",
    "LINT_KINDS",
    "MODES",
    "ORDERS",
    "RECORD_EVERY",
    "SHARED",
    "TREATMENTS",
    "BatchnormChanges",
    "DropoutOutcome",
    "EmaGrid",
    "EpochOutcome",
    "FinalLayerOutcome",
    "Finding",
    "FineTuneOutcome",
    "FoldingSpeed",
    "ForgotEvalTable",
    "RedundantBias",
    "SharedRun",
    "ShortBatchEpochs",
    "apply_treatment",
    "batched_accuracy",
    "batched_logits",
    "batchnorm_changes",
    "batchnorm_state",
    "cross_entropy_floor",
    "cross_entropy_floor_mixed",
    "dropout_network",
    "dropout_study",
    "ema_grid",
    "final_layer_bn_study",
    "fine_tune",
    "folding_speed",
    "forgot_eval_table",
    "lint_batchnorm",
    "one_by_one_logits",
    "one_epoch",
    "one_step_accuracy",
    "order_index",
    "placement_runs",
    "polluted_copy",
    "redundant_bias_study",
    "short_batch_epochs",
    "train_shared",
    "training_mode_error",
    "with_bias_before_norm",
    "without_dropout",
]

# the lecture's network and its training (sections share one run of it)
SHARED = MappingProxyType({"depth": 3, "width": 100, "activation": "relu", "norm": "batch", "placement": "before",
                           "init": "default"})
STEPS, BATCH_SIZE, LR = 600, 60, 0.1
CHECKPOINTS = (10, 30, 100, 300, 600)  # updates at which train_shared keeps the weights (the EMA grid's t)
RECORD_EVERY = 50  # test accuracy and training loss recorded every 50 updates (recording never changes a run)

ORDERS = ("shuffled", "class-sorted")
MODES = ("eval", "train", "polluted")
# test batch sizes that divide the 1,000 test digits (no short last batch), 1 included on purpose
BATCH_SIZES = (1, 2, 4, 8, 20, 50, 100, 250, 1000)


def _data(data: Dataset | None) -> Dataset:
    return (data if data is not None else load_mnist_subset()).as_vectors()


def _config(steps: int, seed: int, **overrides) -> TrainConfig:
    options = {"steps": steps, "batch_size": BATCH_SIZE, "lr": LR, "seed": seed, "record_every": RECORD_EVERY,
               "threads": 1, "progress": False, **overrides}
    return TrainConfig(**options)


# ------------------------------------------------------------------------------------------ the shared run


@dataclass(frozen=True, eq=False)
class SharedRun:
    """The lecture's network trained once (seed ``seed``, ``steps`` updates of batch 60, lr 0.1, momentum of
    every batch norm layer 0.1, PyTorch's default).

    Attributes:
        model: the trained :class:`~bnlab.models.Network` (running statistics as training left them).
        result: its :class:`~bnlab.train.TrainResult` (test accuracy recorded at the end only).
        batch_mean, batch_var: (T, L, C) the batch mean and unbiased batch variance each of the L batch norm
            layers was fed at each update t = 1..T (what its running statistics average).
        checkpoints: update -> a copy of the state dict after that update (weights and running statistics).
        seed: of the weights and of the minibatch order.
        options: the :func:`~bnlab.models.build_mlp` options of the network (:data:`SHARED`, or with He init).
    """

    model: Network
    result: TrainResult
    batch_mean: np.ndarray
    batch_var: np.ndarray
    checkpoints: dict[int, dict[str, torch.Tensor]]
    seed: int
    options: dict[str, object] = field(default_factory=lambda: dict(SHARED))

    @property
    def steps(self) -> int:
        return int(self.batch_mean.shape[0])

    @property
    def accuracy(self) -> float:
        """Test accuracy of the trained network in eval mode."""
        return self.result.final_test_accuracy

    def model_at(self, step: int) -> Network:
        """A copy of the network as it was after update ``step`` (one of :attr:`checkpoints`)."""
        if step not in self.checkpoints:
            raise ValueError(f"step must be one of the checkpoints {sorted(self.checkpoints)}, got {step!r}")
        model = copy.deepcopy(self.model)
        model.load_state_dict(self.checkpoints[step])
        return model


def train_shared(data: Dataset | None = None, *, seed: int = 0, steps: int = STEPS,
                 checkpoints: Sequence[int] = CHECKPOINTS, init: str = "default") -> SharedRun:
    """Train the lecture's network once (about 1.5 s), recording the batch statistics every batch norm layer
    is fed at every update (forward hooks that only read) and copying the state dict at ``checkpoints``.

    The hooks and copies do not change training: the run is update for update the plain
    ``train(build_mlp(**SHARED, seed=seed), ...)``. ``init="he"`` trains lecture 5's variant instead.
    """
    data = _data(data)
    steps = check_int(steps, "steps", minimum=1)
    options = {**SHARED, "init": check_choice(init, "init", ("default", "he"))}
    wanted = {check_int(s, "each checkpoint", minimum=1) for s in checkpoints}
    if any(s > steps for s in wanted):
        raise ValueError(f"checkpoints must lie in [1, steps={steps}], got {sorted(wanted)}")
    model = build_mlp(data.num_features, data.num_classes, seed=seed, **options)
    kept: dict[int, dict[str, torch.Tensor]] = {}

    def keep(step: int) -> None:
        if step in wanted:
            kept[step] = copy.deepcopy(model.state_dict())

    recorder = BatchStatisticsRecorder(model)
    try:
        result = train(model, data, _config(steps, seed), on_step=keep)
    finally:
        recorder.remove()
    batch_mean, batch_var = recorder.arrays()
    return SharedRun(model=model, result=result, batch_mean=batch_mean, batch_var=batch_var, checkpoints=kept,
                     seed=seed, options=options)


# ------------------------------------------------------------------------------ what a layer's state did


@dataclass(frozen=True)
class BatchnormChanges:
    """What happened to every batch norm layer of a model between two :func:`batchnorm_state` snapshots
    (largest value over layers and units; 0.0 means bit for bit unchanged).

    Attributes:
        running_mean: max |change of running_mean| in units of the earlier running standard deviation.
        running_var: max |relative change of running_var|.
        weight, bias: max |change| of gamma and beta (0 for layers without them).
        batches_tracked: the largest increase of ``num_batches_tracked``.
    """

    running_mean: float
    running_var: float
    weight: float
    bias: float
    batches_tracked: int

    @property
    def statistics_changed(self) -> bool:
        return self.running_mean > 0 or self.running_var > 0 or self.batches_tracked != 0

    @property
    def affine_changed(self) -> bool:
        return self.weight > 0 or self.bias > 0


def batchnorm_state(model: nn.Module) -> dict[str, dict[str, np.ndarray]]:
    """A float64 copy of every batch norm layer's running_mean, running_var, num_batches_tracked, weight and
    bias: ``{layer name: {buffer or parameter: array}}`` (missing ones left out). Raises ValueError for a
    model without batch norm layers."""
    state = {}
    for name, layer in batchnorm_layers(model):
        entries = {}
        for key in ("running_mean", "running_var", "num_batches_tracked", "weight", "bias"):
            value = getattr(layer, key, None)
            if value is not None:
                entries[key] = value.detach().double().cpu().numpy().copy()
        state[name or "<model>"] = entries
    if not state:
        raise ValueError(f"batchnorm_state found no batch norm layer in {type(model).__name__}")
    return state


def batchnorm_changes(before: Mapping[str, Mapping[str, np.ndarray]],
                      after: Mapping[str, Mapping[str, np.ndarray]]) -> BatchnormChanges:
    """Compare two :func:`batchnorm_state` snapshots of the same model (see :class:`BatchnormChanges`)."""
    if set(before) != set(after):
        raise ValueError(f"the snapshots hold different batch norm layers: {sorted(before)} vs {sorted(after)}")
    worst = {"running_mean": 0.0, "running_var": 0.0, "weight": 0.0, "bias": 0.0, "batches_tracked": 0}
    for name, old in before.items():
        new = after[name]
        if "running_mean" in old:
            scale = np.sqrt(old["running_var"])
            worst["running_mean"] = max(worst["running_mean"],
                                        float(np.max(np.abs(new["running_mean"] - old["running_mean"]) / scale)))
            worst["running_var"] = max(worst["running_var"],
                                       float(np.max(np.abs(new["running_var"] / old["running_var"] - 1))))
            worst["batches_tracked"] = max(worst["batches_tracked"],
                                           int(new["num_batches_tracked"] - old["num_batches_tracked"]))
        for key in ("weight", "bias"):
            if key in old:
                worst[key] = max(worst[key], float(np.max(np.abs(new[key] - old[key]))))
    return BatchnormChanges(**worst)


# ------------------------------------------------------------------------------------- forgetting eval()


def order_index(labels: torch.Tensor, order: str) -> torch.Tensor:
    """Indices that put the examples in ``order``: ``"shuffled"`` (as stored: the course's test split is
    already in random order) or ``"class-sorted"`` (all 0s, then all 1s, ..., stable within a class, as a
    folder-per-class data set read without shuffling gives them)."""
    check_choice(order, "order", ORDERS)
    if order == "shuffled":
        return torch.arange(labels.shape[0])
    return torch.argsort(labels, stable=True)


@torch.no_grad()
def batched_logits(model: nn.Module, x: torch.Tensor, batch_size: int, *, train_mode: bool) -> torch.Tensor:
    """(N, K) logits of a *copy* of ``model`` run over ``x`` (N, D) in consecutive batches of ``batch_size``
    (the last one shorter if N is not a multiple), in training mode (each batch normalized by its own
    statistics) or in eval mode. ``model`` and its running statistics are left untouched.

    A training-mode batch of one example raises torch's ValueError ("Expected more than 1 value per channel
    when training").
    """
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    probe = copy.deepcopy(model).train(train_mode)
    return torch.cat([probe(x[start:start + batch_size]) for start in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def polluted_copy(model: nn.Module, x: torch.Tensor, batch_size: int) -> nn.Module:
    """A copy of ``model`` after one "validation" pass over ``x`` in training mode under ``torch.no_grad()``
    (the forgotten ``eval()``): no weight changes, but every batch norm layer's running statistics are updated
    once per batch. The copy is returned in eval mode."""
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    probe = copy.deepcopy(model).train()
    for start in range(0, x.shape[0], batch_size):
        probe(x[start:start + batch_size])
    return probe.eval()


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, order: str, mode: str
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct (N,) bool, labels (N,)) in the order the examples were presented."""
    check_choice(mode, "mode", MODES)
    index = order_index(y, order)
    xs, ys = x[index], y[index]
    if mode == "polluted":
        logits = batched_logits(polluted_copy(model, xs, batch_size), xs, xs.shape[0], train_mode=False)
    else:
        logits = batched_logits(model, xs, batch_size, train_mode=mode == "train")
    return logits.argmax(dim=1) == ys, ys


def batched_accuracy(model: nn.Module, data: Dataset, batch_size: int, *, order: str = "shuffled",
                     mode: str = "eval") -> float:
    """Test accuracy of ``model`` on ``data``'s test split presented in ``order`` in batches of ``batch_size``.

    ``mode``: ``"eval"`` (population statistics: the right way; neither order nor batch size can matter),
    ``"train"`` (``eval()`` forgotten at test time: each test batch normalized by its own statistics) or
    ``"polluted"`` (``eval()`` forgotten in a validation pass that ran first, :func:`polluted_copy`; the
    accuracy is then measured properly, in eval mode). Works on copies: ``model`` is not changed.
    """
    data = _data(data)
    correct, _ = _correct(model, data.x_test, data.y_test, batch_size, order, mode)
    return float(correct.double().mean())


@dataclass(frozen=True, eq=False)
class ForgotEvalTable:
    """Test accuracy for every mode x order x test batch size (:func:`forgot_eval_table`).

    Attributes:
        batch_sizes: (B,) test batch sizes.
        accuracy: (mode, order) -> (B,) test accuracy; NaN where the setting raised.
        per_class: (mode, order) -> (B, K) accuracy on each class's test digits; NaN where it raised.
        error: the message of the error a training-mode batch of one raises ("" if none did).
        reference: the eval-mode accuracy (the same for every order and batch size).
    """

    batch_sizes: tuple[int, ...]
    accuracy: dict[tuple[str, str], np.ndarray]
    per_class: dict[tuple[str, str], np.ndarray]
    error: str
    reference: float

    def at(self, mode: str, order: str, batch_size: int) -> float:
        """The accuracy of one setting (NaN if it raised)."""
        if batch_size not in self.batch_sizes:
            raise ValueError(f"batch_size must be one of {self.batch_sizes}, got {batch_size!r}")
        return float(self.accuracy[(check_choice(mode, "mode", MODES), check_choice(order, "order", ORDERS))]
                     [self.batch_sizes.index(batch_size)])


def forgot_eval_table(model: nn.Module, data: Dataset | None = None,
                      batch_sizes: Sequence[int] = BATCH_SIZES) -> ForgotEvalTable:
    """Sweep :func:`batched_accuracy`'s settings: every mode, order and test batch size (about 1 s).

    A setting that raises (a training-mode batch of one) is recorded as NaN with its message, not raised.
    """
    data = _data(data)
    sizes = tuple(check_int(b, "each test batch size", minimum=1) for b in batch_sizes)
    classes = data.num_classes
    accuracy, per_class, error = {}, {}, ""
    for mode in MODES:
        for order in ORDERS:
            acc, by_class = np.full(len(sizes), np.nan), np.full((len(sizes), classes), np.nan)
            for index, size in enumerate(sizes):
                try:
                    correct, labels = _correct(model, data.x_test, data.y_test, size, order, mode)
                except ValueError as raised:
                    error = str(raised)
                    continue
                acc[index] = float(correct.double().mean())
                for label in range(classes):
                    by_class[index, label] = float(correct[labels == label].double().mean())
            accuracy[(mode, order)], per_class[(mode, order)] = acc, by_class
    reference = evaluate(model, data.x_test, data.y_test)[1]
    return ForgotEvalTable(batch_sizes=sizes, accuracy=accuracy, per_class=per_class, error=error,
                           reference=reference)


# ------------------------------------------------------------------------------------------- a batch of one


def training_mode_error(model: nn.Module, x: torch.Tensor) -> str | None:
    """The message of the error a training-mode forward of ``x`` through a copy of ``model`` raises, or None
    if it runs (e.g. ``x`` of shape (1, D) through a network with ``BatchNorm1d``)."""
    probe = copy.deepcopy(model).train()
    try:
        with torch.no_grad():
            probe(x)
    except ValueError as error:
        return str(error)
    return None


@dataclass(frozen=True)
class EpochOutcome:
    """One epoch of a ``DataLoader`` loop (:func:`one_epoch`).

    Attributes:
        batch_sizes: the size of every batch that was trained on, in order.
        error: the message of the error that stopped the epoch, or None if it ended.
    """

    batch_sizes: tuple[int, ...]
    error: str | None


def one_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, drop_last: bool,
              lr: float = LR, seed: int = 0) -> EpochOutcome:
    """Train ``model`` in place for one epoch of the usual loop: ``DataLoader(TensorDataset(x, y),
    batch_size, shuffle=True, drop_last=drop_last)``, cross-entropy, SGD. With N examples and
    ``drop_last=False`` the last batch holds ``N % batch_size`` examples (if that is not 0); a last batch of one
    stops the epoch with torch's ValueError, which is returned, not raised."""
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    lr = check_float(lr, "lr", 0.0, inclusive=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                                         drop_last=drop_last,
                                         generator=torch.Generator().manual_seed(check_seed(seed)))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    done: list[int] = []
    try:
        for inputs, targets in loader:
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done.append(int(inputs.shape[0]))
    except ValueError as error:
        return EpochOutcome(batch_sizes=tuple(done), error=str(error))
    return EpochOutcome(batch_sizes=tuple(done), error=None)


@dataclass(frozen=True)
class ShortBatchEpochs:
    """Several epochs of the usual ``DataLoader`` loop (``drop_last=False``) from a trained network, with test
    accuracy (eval mode) measured around each epoch's last batch (:func:`short_batch_epochs`).

    Attributes:
        examples, batch_size: N and B; the last batch of every epoch holds ``N % B`` examples (B if none left).
        last_batch: the size of each epoch's last batch.
        before_last: (E,) accuracy just before each epoch's last batch.
        epoch_end: (E,) accuracy right after it (what a validation pass or a checkpoint at the epoch's end sees;
            the last one is the network training hands back).
        later: (E - 1, P) accuracy ``probes[k]`` updates into the next epoch (has the damage lasted?).
        probes: (P,) those update counts.
    """

    examples: int
    batch_size: int
    last_batch: int
    before_last: np.ndarray
    epoch_end: np.ndarray
    later: np.ndarray
    probes: tuple[int, ...]


def short_batch_epochs(model: nn.Module, data: Dataset | None = None, examples: int = 3842, batch_size: int = 64,
                       *, epochs: int = 2, probes: Sequence[int] = (5, 20), lr: float = LR, seed: int = 0
                       ) -> ShortBatchEpochs:
    """Train a copy of ``model`` for ``epochs`` epochs on the first ``examples`` training digits, the usual way
    (``DataLoader(..., shuffle=True, drop_last=False)``, cross-entropy, SGD at ``lr``; the loader's order seeded
    by ``seed``), and measure test accuracy just before and right after each epoch's last batch and ``probes``
    updates into the next epoch (see :class:`ShortBatchEpochs`). ``examples % batch_size == 1`` would raise
    (a batch of one): use :func:`one_epoch` to see that."""
    data = _data(data)
    examples = check_int(examples, "examples", minimum=2)
    if examples > data.num_train:
        raise ValueError(f"examples must be at most the {data.num_train} training examples, got {examples}")
    batch_size = check_int(batch_size, "batch_size", minimum=2)
    epochs = check_int(epochs, "epochs", minimum=1)
    probes = tuple(check_int(k, "each probe", minimum=1) for k in probes)
    lr = check_float(lr, "lr", 0.0, inclusive=False)
    per_epoch = -(-examples // batch_size)
    if examples % batch_size == 1:
        raise ValueError(f"examples % batch_size == 1 ends every epoch with a batch of one, which raises in "
                         f"training mode (see one_epoch); got {examples} and {batch_size}")
    if any(k >= per_epoch for k in probes):
        raise ValueError(f"each probe must be below the {per_epoch} batches of an epoch, got {probes}")
    probe = copy.deepcopy(model)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_train[:examples], data.y_train[:examples]), batch_size=batch_size,
        shuffle=True, generator=torch.Generator().manual_seed(check_seed(seed)))
    optimizer = torch.optim.SGD(probe.parameters(), lr=lr)
    before, end, later = np.empty(epochs), np.empty(epochs), np.full((max(epochs - 1, 0), len(probes)), np.nan)
    last = 0
    for epoch in range(epochs):
        for index, (inputs, targets) in enumerate(loader):
            if index == per_epoch - 1:
                before[epoch] = evaluate(probe, data.x_test, data.y_test)[1]
            probe.train()
            loss = F.cross_entropy(probe(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if epoch > 0 and index + 1 in probes:
                later[epoch - 1, probes.index(index + 1)] = evaluate(probe, data.x_test, data.y_test)[1]
            last = int(inputs.shape[0])
        end[epoch] = evaluate(probe, data.x_test, data.y_test)[1]
    return ShortBatchEpochs(examples=examples, batch_size=batch_size, last_batch=last, before_last=before,
                            epoch_end=end, later=later, probes=probes)


def one_step_accuracy(model: nn.Module, data: Dataset | None = None, batch_size: int = 2, *, repeats: int = 20,
                      step: bool = True, lr: float = LR, seed: int = 0) -> np.ndarray:
    """(repeats,) test accuracy (eval mode) of copies of ``model`` after one more training-mode forward on a
    random batch of ``batch_size`` training examples: with ``step`` also a backward and one SGD update at
    ``lr`` (what a short last batch of an epoch does), without it only the running statistics are updated
    (the forward alone). Each repeat draws its own batch (seeded by ``seed``)."""
    data = _data(data)
    batch_size = check_int(batch_size, "batch_size", minimum=2)
    repeats = check_int(repeats, "repeats", minimum=1)
    lr = check_float(lr, "lr", 0.0, inclusive=False)
    generator = torch.Generator().manual_seed(check_seed(seed))
    out = np.empty(repeats)
    for index in range(repeats):
        batch = torch.randperm(data.num_train, generator=generator)[:batch_size]
        probe = copy.deepcopy(model).train()
        if step:
            optimizer = torch.optim.SGD(probe.parameters(), lr=lr)
            F.cross_entropy(probe(data.x_train[batch]), data.y_train[batch]).backward()
            optimizer.step()
        else:
            with torch.no_grad():
                probe(data.x_train[batch])
        out[index] = evaluate(probe, data.x_test, data.y_test)[1]
    return out


@torch.no_grad()
def one_by_one_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, K) eval-mode logits of a copy of ``model``, one example at a time (a batch of one is fine in eval
    mode: the layer uses its running statistics)."""
    probe = copy.deepcopy(model).eval()
    return torch.cat([probe(x[index:index + 1]) for index in range(x.shape[0])])


# --------------------------------------------------------------------------------- EMA vs precise statistics


@dataclass(frozen=True, eq=False)
class EmaGrid:
    """Test accuracy with running statistics of several momenta after several run lengths (:func:`ema_grid`).

    Attributes:
        momenta: (W,) PyTorch momenta w; steps: (T,) run lengths t (the shared run's checkpoints).
        raw, corrected: (W, T) accuracy with the running statistics an EMA at w holds after t updates, raw
            (from PyTorch's initial 0 and 1) and bias-corrected.
        precise: (T,) accuracy with precise statistics of the network at t (50 training batches of 60).
        initial_share: (W, T) (1 - w)^t, the share of the initial values left in the raw EMA.
        replay_error: (T,) largest |difference| between the EMA replayed at the training momentum and what
            the layers themselves stored at t (the replay's control; float32 rounding).
        training_momentum: the momentum the layers had during training.
        raw_var, corrected_var: (W, T, L) each layer's running variance (mean over units), raw and corrected;
            precise_var: (T, L) the precise one.
        mean_left, var_left: (W, T) the gap in the statistics themselves that bias correction leaves: median
            over units and layers of |corrected - precise| / |raw - precise|, for the running mean and the
            running variance (0: correction removes the whole gap, i.e. it was the initial value; near 1: it
            removes none of it, the gap is lag).
    """

    momenta: tuple[float, ...]
    steps: tuple[int, ...]
    raw: np.ndarray
    corrected: np.ndarray
    precise: np.ndarray
    initial_share: np.ndarray
    replay_error: np.ndarray
    training_momentum: float
    raw_var: np.ndarray
    corrected_var: np.ndarray
    precise_var: np.ndarray
    mean_left: np.ndarray
    var_left: np.ndarray

    def closed(self) -> np.ndarray:
        """(W, T) share of the accuracy gap (precise - raw) that bias correction closes, (corrected - raw) /
        (precise - raw); NaN where the gap is below 0.005 (five test digits), too small to split."""
        gap = self.gap("raw")
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(gap >= 0.005, (self.corrected - self.raw) / gap, np.nan)

    def gap(self, which: str = "raw") -> np.ndarray:
        """(W, T) precise accuracy minus the ``"raw"`` or ``"corrected"`` one."""
        return self.precise[None, :] - {"raw": self.raw, "corrected": self.corrected}[which]


@torch.no_grad()
def _load_statistics(model: nn.Module, means: np.ndarray, variances: np.ndarray) -> None:
    for (_, layer), mean, var in zip(batchnorm_layers(model), means, variances):
        layer.running_mean.copy_(torch.as_tensor(mean, dtype=layer.running_mean.dtype))
        layer.running_var.copy_(torch.as_tensor(var, dtype=layer.running_var.dtype))


def ema_grid(run: SharedRun, momenta: Sequence[float] = (0.1, 0.01, 0.001), data: Dataset | None = None, *,
             precise_batches: int = 50) -> EmaGrid:
    """Replay every batch norm layer's running statistics at each momentum from the batch statistics
    ``run`` recorded, load them into the network of each checkpoint and measure test accuracy.

    The momentum never changes training (the forward normalizes with batch statistics), so the replay at w is
    what a layer trained with momentum w would have stored, to float32 rounding; ``replay_error`` checks it
    at the momentum the run used. Costs about 0.3 s (no training).
    """
    data = _data(data)
    momenta = tuple(check_float(w, "each momentum", 0.0, inclusive=False, maximum=1.0) for w in momenta)
    steps = tuple(sorted(run.checkpoints))
    batches = statistics_batches(data, count=precise_batches, seed=run.seed)
    training_momentum = float(next(iter(batchnorm_layers(run.model)))[1].momentum)
    traces = {w: (moving_average_trace(run.batch_mean, w, PYTORCH_INITIAL["mean"]),
                  moving_average_trace(run.batch_var, w, PYTORCH_INITIAL["variance"])) for w in {*momenta,
                                                                                                 training_momentum}}
    raw, corrected = np.empty((len(momenta), len(steps))), np.empty((len(momenta), len(steps)))
    precise, replay, share = np.empty(len(steps)), np.empty(len(steps)), np.empty((len(momenta), len(steps)))
    layers = run.batch_var.shape[1]
    raw_var, corrected_var = np.empty((len(momenta), len(steps), layers)), np.empty((len(momenta), len(steps), layers))
    precise_var = np.empty((len(steps), layers))
    mean_left, var_left = np.empty((len(momenta), len(steps))), np.empty((len(momenta), len(steps)))
    for j, t in enumerate(steps):
        model = run.model_at(t)
        stored = [(layer.running_mean.double().numpy(), layer.running_var.double().numpy())
                  for _, layer in batchnorm_layers(model)]
        mean, var = traces[training_momentum][0][t - 1], traces[training_momentum][1][t - 1]
        replay[j] = max(max(float(np.max(np.abs(m - s_m))), float(np.max(np.abs(v - s_v))))
                        for m, v, (s_m, s_v) in zip(mean, var, stored))
        kept = []
        for i, w in enumerate(momenta):
            mean, var = traces[w][0][t - 1], traces[w][1][t - 1]
            _load_statistics(model, mean, var)
            raw[i, j] = evaluate(model, data.x_test, data.y_test)[1]
            fixed = bias_corrected(var, PYTORCH_INITIAL["variance"], w, t)
            fixed_mean = bias_corrected(mean, PYTORCH_INITIAL["mean"], w, t)
            raw_var[i, j], corrected_var[i, j] = var.mean(axis=1), fixed.mean(axis=1)
            _load_statistics(model, fixed_mean, fixed)
            corrected[i, j] = evaluate(model, data.x_test, data.y_test)[1]
            share[i, j] = initial_value_share(w, t)
            kept.append((mean, fixed_mean, var, fixed))
        recompute_batchnorm_statistics(model, batches)
        precise[j] = evaluate(model, data.x_test, data.y_test)[1]
        precise_mean = np.array([layer.running_mean.double().numpy() for _, layer in batchnorm_layers(model)])
        precise_v = np.array([layer.running_var.double().numpy() for _, layer in batchnorm_layers(model)])
        precise_var[j] = precise_v.mean(axis=1)
        for i, (mean, fixed_mean, var, fixed) in enumerate(kept):
            mean_left[i, j] = float(np.median(np.abs(fixed_mean - precise_mean) / np.abs(mean - precise_mean)))
            var_left[i, j] = float(np.median(np.abs(fixed - precise_v) / np.abs(var - precise_v)))
    return EmaGrid(momenta=momenta, steps=steps, raw=raw, corrected=corrected, precise=precise,
                   initial_share=share, replay_error=replay, training_momentum=training_momentum,
                   raw_var=raw_var, corrected_var=corrected_var, precise_var=precise_var, mean_left=mean_left,
                   var_left=var_left)


# ---------------------------------------------------------------------------------- frozen BN, fine-tuning

# how the batch norm layers are treated while the network is trained further in small batches
TREATMENTS = (
    "train mode",                  # nothing done: batch statistics, running statistics updated, gamma/beta train
    "requires_grad_(False)",       # gamma/beta frozen only: batch statistics and running updates go on
    "eval(), then train()",        # BN layers put in eval mode, undone by the loop's model.train()
    "statistics frozen",           # eval mode that survives model.train(); gamma/beta still train
    "freeze_batchnorm",            # bnlab.nn.freeze_batchnorm: statistics and gamma/beta frozen
)


def apply_treatment(model: nn.Module, treatment: str) -> nn.Module:
    """A copy of ``model`` with its batch norm layers treated as :data:`TREATMENTS` names.

    ``"statistics frozen"`` is :func:`bnlab.nn.freeze_batchnorm` with gamma and beta made trainable again: the
    layers normalize with their running statistics in every forward, even after ``model.train()``.
    """
    check_choice(treatment, "treatment", TREATMENTS)
    model = copy.deepcopy(model)
    layers = [layer for _, layer in batchnorm_layers(model)]
    if not layers:
        raise ValueError(f"apply_treatment found no batch norm layer in {type(model).__name__}")
    if treatment == "requires_grad_(False)":
        for layer in layers:
            layer.weight.requires_grad_(False)
            layer.bias.requires_grad_(False)
    elif treatment == "eval(), then train()":
        for layer in layers:
            layer.eval()
    elif treatment in ("statistics frozen", "freeze_batchnorm"):
        freeze_batchnorm(model)
        if treatment == "statistics frozen":
            for layer in layers:
                layer.weight.requires_grad_(True)
                layer.bias.requires_grad_(True)
    return model


@dataclass(frozen=True, eq=False)
class FineTuneOutcome:
    """Continued training of one treated copy (:func:`fine_tune`).

    Attributes:
        treatment: one of :data:`TREATMENTS`.
        result: the run's record (test accuracy every ``record_every`` updates, eval mode).
        changes: what the run did to the batch norm layers (:class:`BatchnormChanges`).
        model: the network afterwards.
    """

    treatment: str
    result: TrainResult
    changes: BatchnormChanges
    model: nn.Module

    @property
    def accuracy(self) -> float:
        return self.result.final_test_accuracy


def fine_tune(model: nn.Module, treatment: str, data: Dataset | None = None, *, batch_size: int = 2,
              steps: int = 200, lr: float = 0.005, seed: int = 1, record_every: int = 20) -> FineTuneOutcome:
    """Train a copy of ``model``, treated by :func:`apply_treatment`, ``steps`` more updates in batches of
    ``batch_size`` with :func:`bnlab.train.train` (which, like most training loops, calls ``model.train()``
    first and after every evaluation)."""
    data = _data(data)
    treated = apply_treatment(model, treatment)
    before = batchnorm_state(treated)
    result = train(treated, data, TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                                              record_every=record_every, threads=1, progress=False))
    return FineTuneOutcome(treatment=treatment, result=result,
                           changes=batchnorm_changes(before, batchnorm_state(treated)), model=treated)


# ---------------------------------------------------------------------------------------------- placement


def _train_variant(seed: int, steps: int, data: Dataset, make: Callable[[int], nn.Module]
                   ) -> tuple[TrainResult, nn.Module]:
    model = make(seed)
    return train(model, data, _config(steps, seed)), model


def placement_runs(activations: Sequence[str] = ("relu", "sigmoid"),
                   placements: Sequence[str] = ("before", "after"), seeds: Sequence[int] = (0, 1, 2),
                   data: Dataset | None = None, *, steps: int = STEPS, shared: SharedRun | None = None
                   ) -> dict[tuple[str, str], tuple[tuple[TrainResult, nn.Module], ...]]:
    """``{(activation, placement): ((result, model) per seed)}``: the lecture's network with BN before or
    after each activation, trained like the shared run (seeds in parallel threads, one torch thread each;
    about 1 s per run). ``shared`` (seed ``shared.seed``, ReLU, BN before) is reused instead of trained
    again."""
    data = _data(data)
    for activation in activations:
        check_choice(activation, "activation", ("relu", "sigmoid", "tanh"))
    for placement in placements:
        check_choice(placement, "placement", ("before", "after"))
    seeds = tuple(check_seed(s) for s in seeds)
    out = {}
    for activation in activations:
        for placement in placements:
            options = {**SHARED, "activation": activation, "placement": placement}

            def make(seed: int, options=options) -> nn.Module:
                return build_mlp(data.num_features, data.num_classes, seed=seed, **options)

            reuse = shared is not None and options == shared.options and shared.steps == steps
            todo = tuple(s for s in seeds if not (reuse and s == shared.seed))
            trained = dict(zip(todo, map_seeds(lambda s, make=make: _train_variant(s, steps, data, make), todo)))
            if reuse and shared.seed in seeds:
                trained[shared.seed] = (shared.result, shared.model)
            out[(activation, placement)] = tuple(trained[s] for s in seeds)
    return out


# ------------------------------------------------------------------------------------------- dropout and BN

DROPOUT_PLACES = ("none", "after every hidden layer", "before the output layer only")


def dropout_network(where: str, p: float = 0.5, *, seed: int = 0, data: Dataset | None = None
                    ) -> nn.Sequential:
    """The lecture's network (same weights as ``build_mlp(**SHARED, seed=seed)``) with ``nn.Dropout(p)``
    inserted ``where`` (:data:`DROPOUT_PLACES`): after every hidden block (so it feeds the next block's Linear
    and its batch norm), or only between the last hidden block and the output layer (after every batch norm,
    Li et al. 2019's advice)."""
    data = _data(data)
    check_choice(where, "where", DROPOUT_PLACES)
    p = check_float(p, "p", 0.0, maximum=1.0, maximum_inclusive=False)
    base = build_mlp(data.num_features, data.num_classes, seed=seed, **SHARED)
    modules: list[nn.Module] = []
    blocks = base.hidden_layers
    for index, block in enumerate(blocks):
        modules.append(block)
        if where == DROPOUT_PLACES[1] or (where == DROPOUT_PLACES[2] and index == len(blocks) - 1):
            modules.append(nn.Dropout(p))
    modules.append(base.output)
    return nn.Sequential(*modules)


def without_dropout(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Dropout`` replaced by ``nn.Identity`` (what dropout is in eval
    mode), so a training-mode pass sees the activations eval mode will see."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(module, child_name, nn.Identity())
    return model


@dataclass(frozen=True, eq=False)
class DropoutOutcome:
    """One trained network with dropout placed ``where`` (:func:`dropout_study`).

    Attributes:
        where, p, seed: the setting.
        accuracy: test accuracy (eval mode, running statistics from training).
        recalibrated: test accuracy after recomputing every batch norm layer's statistics with dropout off
            (precise BN over 50 training batches on :func:`without_dropout`): the variance shift removed.
        measured_ratio: (L,) per batch norm layer, median over units of Var_eval(z) / running_var: the
            variance of the layer's input in eval mode (test digits) over what training stored.
        predicted_ratio: (L,) the same ratio predicted from the weights and activations (lecture's formula):
            Var_eval(z_j) / (Var_eval(z_j) + p/(1-p) sum_i W_ji^2 E[a_i^2]); 1 for a layer without dropout
            before it.
        bn2_recalibrated: (L,) the measured ratio after recomputing only BN 2's statistics with dropout off
            (the compounding control: BN 3's ratio should then return to its one-layer prediction,
            :attr:`bn2_recalibrated_predicted`).
        bn2_recalibrated_predicted: (L,) the prediction for that network.
    """

    where: str
    p: float
    seed: int
    accuracy: float
    recalibrated: float
    measured_ratio: np.ndarray
    predicted_ratio: np.ndarray
    bn2_recalibrated: np.ndarray
    bn2_recalibrated_predicted: np.ndarray


@torch.no_grad()
def _variance_ratios(model: nn.Sequential, x: torch.Tensor, p: float) -> tuple[np.ndarray, np.ndarray]:
    """(measured, predicted) Var_eval / Var_train of each batch norm layer's input (median over units)."""
    model = copy.deepcopy(model).eval()
    measured, predicted = [], []
    activation = x
    dropout_before = False
    for module in model:
        if isinstance(module, nn.Dropout):
            dropout_before = True
            continue
        if not isinstance(module, nn.Sequential):
            break
        weight = module.linear.weight.double()
        a = activation.double()
        z = a @ weight.T + (module.linear.bias.double() if module.linear.bias is not None else 0.0)
        eval_var = z.var(dim=0)
        measured.append(float((eval_var / module.norm.running_var.double()).median()))
        extra = (p / (1 - p)) * (weight ** 2 @ (a ** 2).mean(dim=0)) if dropout_before else torch.zeros_like(eval_var)
        predicted.append(float((eval_var / (eval_var + extra)).median()))
        activation = module(activation)
        dropout_before = False
    return np.array(measured), np.array(predicted)


def _dropout_outcome(model: nn.Module, accuracy: float, where: str, p: float, seed: int, data: Dataset,
                     precise_batches: int) -> DropoutOutcome:
    rate = p if where != DROPOUT_PLACES[0] else 0.0
    measured, predicted = _variance_ratios(model, data.x_test, rate)
    recalibrated = without_dropout(model)
    recompute_batchnorm_statistics(recalibrated, statistics_batches(data, count=precise_batches, seed=seed))
    # the compounding control: only BN 2 gets the statistics recomputed with dropout off
    partly = copy.deepcopy(model)
    (_, target), (_, source) = list(batchnorm_layers(partly))[1], list(batchnorm_layers(recalibrated))[1]
    with torch.no_grad():
        target.running_mean.copy_(source.running_mean)
        target.running_var.copy_(source.running_var)
    control, control_predicted = _variance_ratios(partly, data.x_test, rate)
    return DropoutOutcome(where=where, p=p, seed=seed, accuracy=accuracy,
                          recalibrated=evaluate(recalibrated, data.x_test, data.y_test)[1],
                          measured_ratio=measured, predicted_ratio=predicted, bn2_recalibrated=control,
                          bn2_recalibrated_predicted=control_predicted)


def dropout_study(where: str, p: float = 0.5, seeds: Sequence[int] = (0, 1, 2), data: Dataset | None = None, *,
                  steps: int = STEPS, precise_batches: int = 50,
                  plain: Sequence[tuple[TrainResult, nn.Module]] | None = None) -> tuple[DropoutOutcome, ...]:
    """Train :func:`dropout_network` for each seed (one after the other: dropout draws from torch's global
    random generator, which :func:`bnlab.train.train` seeds per run) and measure the variance shift and what
    removing it does (:class:`DropoutOutcome`). For ``where="none"``, ``plain`` may give the already trained
    (result, model) of the network without dropout, one per seed (e.g. from :func:`placement_runs`)."""
    data = _data(data)
    check_choice(where, "where", DROPOUT_PLACES)
    seeds = tuple(check_seed(s) for s in seeds)
    if plain is not None:
        if where != DROPOUT_PLACES[0] or len(plain) != len(seeds):
            raise ValueError(f"plain gives trained networks without dropout (where='none'), one per seed "
                             f"({len(seeds)}); got where={where!r} and {len(plain)}")
        return tuple(_dropout_outcome(model, result.final_test_accuracy, where, p, seed, data, precise_batches)
                     for seed, (result, model) in zip(seeds, plain))
    out = []
    for seed in seeds:
        model = dropout_network(where, p, seed=seed, data=data)
        result = train(model, data, _config(steps, seed))
        out.append(_dropout_outcome(model, result.final_test_accuracy, where, p, seed, data, precise_batches))
    return tuple(out)


# -------------------------------------------------------------------------------------- a bias before BN


def with_bias_before_norm(model: Network, *, seed: int = 5) -> Network:
    """A copy of ``model`` whose hidden Linear layers (right before a batch norm) get a bias, drawn uniformly
    from [-1, 1] (weights unchanged)."""
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(check_seed(seed))
    for block in model.hidden_layers:
        old = block.weight_layer
        new = nn.Linear(old.in_features, old.out_features, bias=True, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(old.weight)
            new.bias.copy_(torch.rand(old.out_features, generator=generator, dtype=old.weight.dtype) * 2 - 1)
        block.linear = new
    return model


@dataclass(frozen=True)
class RedundantBias:
    """A bias right before batch norm, measured (:func:`redundant_bias_study`). Per-layer arrays are (L,).

    Attributes:
        parameters_without, parameters_with: trainable parameter counts of the two networks.
        bias_grad, weight_grad: largest |gradient| of each hidden layer's bias and weight on the first training
            batch (float32); bias_grad_float64: the bias's, computed in float64.
        control_bias_grad: largest |gradient| of each bias when BN comes *after* the ReLU (not redundant there).
        bias_moved: largest |change| of each bias over training.
        absorbed: largest |(running_mean with bias) - (running_mean without) - bias| per layer after training:
            the running mean takes the bias in and eval mode subtracts it again.
        logit_difference, logit_scale: largest |difference| of the two trained networks' eval-mode test logits,
            and the largest |logit| (to read it by).
        predictions_differing: test digits on which the two networks' predictions differ.
        accuracy_without, accuracy_with: test accuracy of each.
    """

    parameters_without: int
    parameters_with: int
    bias_grad: np.ndarray
    weight_grad: np.ndarray
    bias_grad_float64: np.ndarray
    control_bias_grad: np.ndarray
    bias_moved: np.ndarray
    absorbed: np.ndarray
    logit_difference: float
    logit_scale: float
    predictions_differing: int
    accuracy_without: float
    accuracy_with: float


def _first_batch_gradients(model: nn.Module, data: Dataset, dtype: torch.dtype = torch.float32
                           ) -> list[tuple[float, float]]:
    """(max |bias grad|, max |weight grad|) of each hidden Linear on the first 60 training digits."""
    model = copy.deepcopy(model).to(dtype).train()
    model.zero_grad()
    F.cross_entropy(model(data.x_train[:BATCH_SIZE].to(dtype)), data.y_train[:BATCH_SIZE]).backward()
    return [(float(block.weight_layer.bias.grad.abs().max()), float(block.weight_layer.weight.grad.abs().max()))
            for block in model.hidden_layers]


def redundant_bias_study(run: SharedRun, data: Dataset | None = None) -> RedundantBias:
    """Give the shared run's *untrained* network a bias before each batch norm (:func:`with_bias_before_norm`),
    train it exactly like the shared run (same seed, batches and steps) and compare it with the shared run's
    network, which has none (about 1.5 s)."""
    data = _data(data)
    plain = build_mlp(data.num_features, data.num_classes, seed=run.seed, **run.options)
    biased = with_bias_before_norm(plain)
    initial_bias = [block.weight_layer.bias.detach().clone() for block in biased.hidden_layers]
    grads = _first_batch_gradients(biased, data)
    grads64 = _first_batch_gradients(biased, data, torch.float64)
    after = build_mlp(data.num_features, data.num_classes, seed=run.seed, **{**run.options, "placement": "after"})
    control = _first_batch_gradients(after, data)
    result = train(biased, data, _config(run.steps, run.seed))
    trained = run.model
    with torch.no_grad():
        logits_with = biased.eval()(data.x_test)
        logits_without = copy.deepcopy(trained).eval()(data.x_test)
    moved = [float((block.weight_layer.bias.detach() - start).abs().max())
             for block, start in zip(biased.hidden_layers, initial_bias)]
    absorbed = [float((b.norm.running_mean - a.norm.running_mean - b.weight_layer.bias.detach()).abs().max())
                for a, b in zip(trained.hidden_layers, biased.hidden_layers)]
    return RedundantBias(
        parameters_without=sum(p.numel() for p in trained.parameters()),
        parameters_with=sum(p.numel() for p in biased.parameters()),
        bias_grad=np.array([g[0] for g in grads]), weight_grad=np.array([g[1] for g in grads]),
        bias_grad_float64=np.array([g[0] for g in grads64]), control_bias_grad=np.array([g[0] for g in control]),
        bias_moved=np.array(moved), absorbed=np.array(absorbed),
        logit_difference=float((logits_with - logits_without).abs().max()),
        logit_scale=float(logits_without.abs().max()),
        predictions_differing=int((logits_with.argmax(1) != logits_without.argmax(1)).sum()),
        accuracy_without=run.accuracy, accuracy_with=result.final_test_accuracy)


# ------------------------------------------------------------------------------------ BN on the final layer

FINAL_LAYER_VARIANTS = ("none", "BatchNorm1d(10)", "BatchNorm1d(10, affine=False)")


def cross_entropy_floor(num_classes: int = 10) -> float:
    """The lowest mean cross-entropy a class-balanced batch can reach when each class's logit is standardized
    over the batch (mean 0, variance 1; BN after the output layer without gamma and beta):
    ``ln(1 + (K - 1) exp(-K / sqrt(K - 1)))``, 0.278 for K = 10 (the lecture derives it)."""
    k = check_int(num_classes, "num_classes", minimum=2)
    return math.log1p((k - 1) * math.exp(-k / math.sqrt(k - 1)))


def cross_entropy_floor_mixed(counts: Sequence[int] | np.ndarray, *, iterations: int = 1000) -> np.ndarray:
    """The same floor for batches whose classes are not balanced: ``counts`` (K,) or (B, K) examples of each
    class per batch; returns (B,) floors (the relaxation's minimum).

    Each class's logit column is standardized over the batch; relaxing "variance 1" to "variance at most 1"
    makes the set of columns convex, and the mean cross-entropy is convex, so projected gradient descent finds
    the minimum. By symmetry within a class the optimum gives every example of class j the same value in each
    column, so the unknowns are V[c, j] (column c, class j), constrained per column by sum_j q_j V[c, j] = 0 and
    sum_j q_j V[c, j]^2 <= 1 (q_j: class j's share of the batch). Steps are taken in the q-weighted metric, in
    which the projection is: subtract the weighted mean, then shrink to weighted variance 1 if above. For a
    balanced batch this gives :func:`cross_entropy_floor`.
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    if counts.ndim != 2 or np.any(counts < 0) or np.any(counts.sum(axis=1) <= 0):
        raise ValueError(f"counts must be (K,) or (B, K) non-negative class counts, each batch non-empty, "
                         f"got shape {counts.shape}")
    iterations = check_int(iterations, "iterations", minimum=1)
    q = counts / counts.sum(axis=1, keepdims=True)
    weights = q[:, None, :]
    eye = np.eye(q.shape[1])
    values = np.zeros((q.shape[0], q.shape[1], q.shape[1]))      # (B, column c, class j)
    for _ in range(iterations):
        probabilities = np.exp(values - values.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        values = values - (probabilities - eye)                 # gradient step in the q-weighted metric
        values = values - (values * weights).sum(axis=2, keepdims=True)
        values = values / np.sqrt(np.maximum((values ** 2 * weights).sum(axis=2, keepdims=True), 1.0))
    top = values.max(axis=1, keepdims=True)
    log_sum = (top + np.log(np.exp(values - top).sum(axis=1, keepdims=True)))[:, 0, :]
    return (q * (log_sum - np.diagonal(values, axis1=1, axis2=2))).sum(axis=1)


@dataclass(frozen=True, eq=False)
class FinalLayerOutcome:
    """One network with (or without) batch norm on its logits (:func:`final_layer_bn_study`).

    Attributes:
        variant: one of :data:`FINAL_LAYER_VARIANTS`; seed.
        result: the training record (``train_loss_avg``: training-mode minibatch loss).
        accuracy, test_loss: eval mode, test split.
        train_loss: eval-mode cross-entropy on the whole training split at the end.
        confidence: mean over test digits of the largest softmax probability (eval mode).
        logit_std: mean over classes of the standard deviation of that class's logit over the test digits.
        gamma: mean gamma of the final batch norm (NaN without one or without affine).
    """

    variant: str
    seed: int
    result: TrainResult
    accuracy: float
    test_loss: float
    train_loss: float
    confidence: float
    logit_std: float
    gamma: float


@torch.no_grad()
def _final_layer_outcome(variant: str, seed: int, result: TrainResult, model: nn.Module, data: Dataset
                         ) -> FinalLayerOutcome:
    model = copy.deepcopy(model).eval()
    logits = model(data.x_test)
    norm = model[-1] if isinstance(model, nn.Sequential) and is_batchnorm(model[-1]) else None
    gamma = float(norm.weight.mean()) if norm is not None and norm.weight is not None else math.nan
    return FinalLayerOutcome(
        variant=variant, seed=seed, result=result, accuracy=result.final_test_accuracy,
        test_loss=float(result.test_loss[-1]), train_loss=float(F.cross_entropy(model(data.x_train), data.y_train)),
        confidence=float(logits.softmax(dim=1).max(dim=1).values.mean()), logit_std=float(logits.std(dim=0).mean()),
        gamma=gamma)


def final_layer_bn_study(seeds: Sequence[int] = (0, 1, 2), data: Dataset | None = None, *, steps: int = STEPS,
                         plain: Sequence[tuple[TrainResult, nn.Module]] | None = None
                         ) -> dict[str, tuple[FinalLayerOutcome, ...]]:
    """``{variant: outcome per seed}``: the lecture's network, and the same with ``BatchNorm1d(10)`` (with or
    without gamma and beta) after its output layer, trained like the shared run. ``plain``: already trained
    (result, model) pairs of the network without it, one per seed (e.g. from :func:`placement_runs`)."""
    data = _data(data)
    seeds = tuple(check_seed(s) for s in seeds)
    if plain is not None and len(plain) != len(seeds):
        raise ValueError(f"plain must hold one (result, model) per seed ({len(seeds)}), got {len(plain)}")
    out = {}
    for variant in FINAL_LAYER_VARIANTS:
        if variant == "none" and plain is not None:
            trained = tuple(plain)
        else:
            def make(seed: int, variant=variant) -> nn.Module:
                network = build_mlp(data.num_features, data.num_classes, seed=seed, **SHARED)
                if variant == "none":
                    return network
                affine = variant == FINAL_LAYER_VARIANTS[1]
                return nn.Sequential(network, nn.BatchNorm1d(data.num_classes, affine=affine))

            trained = map_seeds(lambda s, make=make: _train_variant(s, steps, data, make), seeds)
        out[variant] = tuple(_final_layer_outcome(variant, seed, result, model, data)
                             for seed, (result, model) in zip(seeds, trained))
    return out


# ------------------------------------------------------------------------------------------------- folding


@dataclass(frozen=True)
class FoldingSpeed:
    """A network against its folded copy (:func:`folding_speed`).

    Attributes:
        batch_size: examples per timed forward.
        norms_before, norms_after: batch norm layers in each.
        eval_difference: largest |logit difference| in eval mode over the test split.
        unfolded_ms, folded_ms: best-of-rounds median time of one eval-mode forward (one torch thread).
    """

    batch_size: int
    norms_before: int
    norms_after: int
    eval_difference: float
    unfolded_ms: float
    folded_ms: float

    @property
    def ratio(self) -> float:
        """unfolded time / folded time (> 1: folding saves time)."""
        return self.unfolded_ms / self.folded_ms


@torch.no_grad()
def folding_speed(model: nn.Sequential, x: torch.Tensor, batch_size: int = 1000, *, repeats: int = 30,
                  rounds: int = 3) -> FoldingSpeed:
    """Fold ``model`` (:func:`bnlab.nn.fold_batchnorm_sequential`), compare eval-mode outputs on ``x`` and
    time one forward of ``batch_size`` examples through each, interleaved (:func:`bnlab.timing.compare_ms`)."""
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    reference = copy.deepcopy(model).eval()
    folded = fold_batchnorm_sequential(reference).eval()
    difference = float((reference(x) - folded(x)).abs().max())
    sample = x[:batch_size]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        times = compare_ms({"unfolded": lambda: reference(sample), "folded": lambda: folded(sample)},
                           repeats=repeats, rounds=rounds)
    finally:
        torch.set_num_threads(previous)
    return FoldingSpeed(batch_size=batch_size, norms_before=len(list(batchnorm_layers(reference))),
                        norms_after=len(list(batchnorm_layers(folded))), eval_difference=difference,
                        unfolded_ms=times["unfolded"], folded_ms=times["folded"])


# ------------------------------------------------------------------------------- structural mistakes, found

LINT_KINDS = ("bias before batch norm", "batch norm on the output", "dropout before batch norm")


@dataclass(frozen=True)
class Finding:
    """One structural batch norm mistake found by :func:`lint_batchnorm`.

    Attributes:
        kind: one of ``LINT_KINDS``. where: the module name(s) involved. message: what to change.
    """

    kind: str
    where: str
    message: str


_WEIGHT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def lint_batchnorm(model: nn.Module, example: torch.Tensor) -> list[Finding]:
    """Structural batch norm mistakes in ``model``, found by running ``example`` (a batch of model inputs)
    through a copy in eval mode and watching the order in which its leaf modules are called:

    * a Linear/Conv with a bias directly followed by a batch norm (the bias is cancelled: drop it);
    * a batch norm as the last module called (normalizes the logits: remove it);
    * a Dropout followed, with only Linear/Conv layers in between, by a batch norm (variance shift).

    The call order is the data flow of sequential models; a model that calls modules out of order (residual
    branches, reused modules) can hide or invent a finding. Returns [] when nothing is found.
    """
    probe = copy.deepcopy(model).eval()
    names = {module: name for name, module in probe.named_modules()}
    calls: list[nn.Module] = []
    leaves = [module for module in probe.modules() if not list(module.children()) or is_batchnorm(module)]
    handles = [module.register_forward_hook(lambda module, args, out: calls.append(module)) for module in leaves]
    try:
        probe(example)
    finally:
        for handle in handles:
            handle.remove()
    findings = []
    for index, module in enumerate(calls):
        following = calls[index + 1] if index + 1 < len(calls) else None
        if isinstance(module, _WEIGHT_TYPES) and module.bias is not None and following is not None \
                and is_batchnorm(following):
            findings.append(Finding(LINT_KINDS[0], f"{names[module]} -> {names[following]}",
                                    f"{names[module]} has a bias that {names[following]} subtracts again (its "
                                    f"gradient is 0): build it with bias=False; beta does its job"))
        if isinstance(module, nn.Dropout):
            for later in calls[index + 1:]:
                if is_batchnorm(later):
                    findings.append(Finding(LINT_KINDS[2], f"{names[module]} -> {names[later]}",
                                            f"{names[module]} feeds {names[later]}: in eval mode the input variance "
                                            f"drops below the running_var it stored (variance shift); move "
                                            f"dropout after the last batch norm"))
                    break
                if not isinstance(later, _WEIGHT_TYPES):
                    break
    if calls and is_batchnorm(calls[-1]):
        findings.append(Finding(LINT_KINDS[1], names[calls[-1]],
                                f"{names[calls[-1]]} normalizes the logits: each class's score gets batch mean "
                                f"beta and spread gamma, which caps the confidence; remove it"))
    return findings
