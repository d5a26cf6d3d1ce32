"""Lecture 11: why does batch norm work? Five measurements, each with its control.

1. **Noisy BN** (Santurkar et al. 2018, Sec. 2.1). :func:`add_step_noise` shifts and scales every hidden unit's
   input to its nonlinearity by a random amount drawn anew at every training step, so the distribution each
   layer sees moves all the time. :func:`train_probed` trains a net with or without BN, with or without that
   noise, and records how far each layer's input distribution moves per step (:func:`distribution_shift`).
2. **Internal covariate shift measured through gradients** (Santurkar et al. 2018, Sec. 2.2):
   :func:`gradient_ics` compares a layer's gradient G with G', the gradient after only the layers before it took
   their SGD step, on the same minibatch.
3. **Smoothness along the gradient** (Santurkar et al. 2018, Sec. 3.1): :func:`gradient_probe` steps along -g
   by several step sizes and records the loss and how much the gradient changed.
4. **The loss after one step at initialization** (Bjorck et al. 2018, Sec. 3): :func:`one_step_probe`, the
   ratio of lecture 9 (:func:`bnlab.experiments.one_step_loss_ratio`, same net and minibatch), with how much
   each hidden layer's output grew in that step.
5. **Rank collapse at depth** (Daneshmand et al. 2020): :func:`representations` passes the test digits through
   an untrained net with no normalization, BN, LayerNorm, or either half of BN (centring alone, scaling alone),
   and :func:`collapse_by_depth` measures how alike the examples look (mean cosine similarity, lecture 7) and
   the effective rank of each layer's representation.

Items 1-3 come from one set of short runs (:func:`run_nets`: a depth-10 ReLU MLP with He init, SGD at lr 0.1,
batch 64, 300 updates, three seeds trained in parallel threads, about 1 s per run on an idle core); 4 and 5 need
no training (well under a second per setting).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from bnlab._validation import check_choice, check_float, check_int
from bnlab.experiments import OneStepConfig, SeedRuns
from bnlab.experiments._runs import check_seeds, final_accuracy, map_seeds, mnist, pad
from bnlab.experiments.depth import mean_cosine_similarity
from bnlab.models import build_mlp
from bnlab.nn import recompute_batchnorm_statistics
from bnlab.recording import hidden_layer_outputs
from bnlab.train import TrainConfig, evaluate, train

__all__ = [
    "NORMALIZATIONS",
    "PROBE_LRS",
    "Collapse",
    "OneStepProbes",
    "WhyConfig",
    "add_step_noise",
    "collapse_by_depth",
    "distribution_shift",
    "effective_rank",
    "final_train_loss",
    "gradient_ics",
    "gradient_probe",
    "ics_at",
    "ics_summary",
    "initial_logit_rms",
    "landscape_summary",
    "local_smoothness",
    "noise_growth",
    "noise_mean_shift",
    "one_step_probe",
    "one_step_probes",
    "probe_batch",
    "representations",
    "run_nets",
    "sampling_shift",
    "train_probed",
]

# step sizes of the landscape probe: geometric around the training rate 0.1, from an eighth to four times it
PROBE_LRS = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
# what :func:`representations` does between each linear layer and its nonlinearity
NORMALIZATIONS = ("none", "center", "scale", "rms", "batch", "layer")
_NOISE_SEED = 10_000  # the noise of seed s is drawn from a generator seeded with s + this
_PROBE_SEED = 20_000  # the fixed probe minibatch of seed s is drawn with s + this
EPS = 1e-5            # torch's BatchNorm1d / LayerNorm default


def _with_one_thread(function, *args):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------------------
# The runs: a depth-10 ReLU net, with or without BN, with or without noise after the normalization
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WhyConfig:
    """One net of the lecture, trained once per seed by :func:`train_probed`.

    Attributes:
        norm: ``"none"`` or ``"batch"`` (BN before each ReLU, as the paper places it).
        noise_shift: each step, each hidden unit's nonlinearity input gets a shift drawn from
            U(-noise_shift, noise_shift); 0 for no shift.
        noise_scale: ... and is multiplied by a factor drawn log-uniformly from [1/noise_scale, noise_scale];
            1 for no scaling. The noise is on in training mode only (``eval()`` tests the noise-free net).
        depth, width, activation, init: the MLP (:func:`bnlab.models.build_mlp`).
        lr, batch_size, steps: plain SGD.
        frozen: if True, every gradient is zeroed before the SGD step, so the weights stay those of
            initialization while the run sees the same minibatches in the same order (the control that
            measures what minibatch sampling alone moves). A frozen config cannot have probes.
        record_every: updates between records of the training loss and test accuracy (and updates 10 and 25).
        probe_every: updates between probes (ICS and landscape, on a fixed minibatch); None for no probes.
            Probes measure the noise-free net, so a noisy config cannot have them.
        probe_lrs: step sizes of the landscape probe.
        seeds: one run per seed (weights, minibatch order, noise).
    """

    norm: str = "none"
    noise_shift: float = 0.0
    noise_scale: float = 1.0
    depth: int = 10
    width: int = 100
    activation: str = "relu"
    init: str = "he"
    lr: float = 0.1
    batch_size: int = 64
    steps: int = 300
    frozen: bool = False
    record_every: int = 50
    probe_every: int | None = 75
    probe_lrs: tuple[float, ...] = PROBE_LRS
    seeds: tuple[int, ...] = (0, 1, 2)

    def __post_init__(self) -> None:
        check_choice(self.norm, "norm", ("none", "batch"))
        check_float(self.noise_shift, "noise_shift", 0.0)
        check_float(self.noise_scale, "noise_scale", 1.0)
        check_int(self.depth, "depth", minimum=2)
        check_int(self.width, "width", minimum=2)
        check_choice(self.activation, "activation", ("relu", "tanh", "sigmoid", "linear"))
        check_choice(self.init, "init", ("default", "he"))
        check_float(self.lr, "lr", 0.0, inclusive=False)
        check_int(self.batch_size, "batch_size", minimum=2)
        check_int(self.steps, "steps", minimum=1)
        check_int(self.record_every, "record_every", minimum=1)
        if not isinstance(self.frozen, bool):
            raise TypeError(f"frozen must be True or False, got {self.frozen!r}")
        if self.frozen and self.probe_every is not None:
            raise ValueError(f"probe_every must be None for a frozen config, got probe_every={self.probe_every!r}")
        if self.probe_every is not None:
            check_int(self.probe_every, "probe_every", minimum=1)
            if self.noisy:
                raise ValueError("probe_every must be None for a noisy config (the probes measure the noise-free "
                                 f"net), got probe_every={self.probe_every!r} with noise_shift={self.noise_shift}, "
                                 f"noise_scale={self.noise_scale}")
        if (isinstance(self.probe_lrs, (str, bytes)) or not isinstance(self.probe_lrs, Sequence)
                or not self.probe_lrs):
            raise ValueError(f"probe_lrs must be a non-empty sequence of step sizes, got {self.probe_lrs!r}")
        object.__setattr__(self, "probe_lrs",
                           tuple(check_float(lr, "each of probe_lrs", 0.0, inclusive=False) for lr in self.probe_lrs))
        object.__setattr__(self, "seeds", check_seeds(self.seeds))

    def recorded_steps(self) -> tuple[int, ...]:
        """The updates at which the run records (0 = the untrained net): 10, 25 and every ``record_every``."""
        steps = {0, self.steps, *range(0, self.steps + 1, self.record_every), *(s for s in (10, 25) if s < self.steps)}
        return tuple(sorted(steps))

    @property
    def noisy(self) -> bool:
        return self.noise_shift > 0 or self.noise_scale > 1

    def probe_steps(self) -> tuple[int, ...]:
        """The updates after which the probes run (0 = the untrained net), () without probes."""
        if self.probe_every is None:
            return ()
        steps = list(range(0, self.steps + 1, self.probe_every))
        return tuple(steps if steps[-1] == self.steps else steps + [self.steps])


def add_step_noise(model, shift: float, scale: float, generator: torch.Generator) -> list:
    """Make every hidden layer's nonlinearity input noisy in training mode: for a (N, width) input z, draw per
    unit a shift b ~ U(-shift, shift) and a factor c = scale ** U(-1, 1), and pass on c * z + b. A new (b, c)
    is drawn at every training-mode forward, that is at every SGD step, so each unit's input distribution
    moves at every step (Santurkar et al.'s "noisy BN" when the net has BN; the same noise on a plain net is
    its control). In eval mode the input passes unchanged. While ``module.hold_noise`` is True the last
    (b, c) is used again instead of a new draw (section 1's probe batch sees the step's own noise).

    Registered as forward pre-hooks on each hidden layer's ``act`` (right after BN when the net has BN);
    returns the hook handles (``handle.remove()`` takes the noise out again).
    """
    shift = check_float(shift, "shift", 0.0)
    log_scale = math.log(check_float(scale, "scale", 1.0))

    def noisy(module, args):
        if not module.training:
            return None
        z = args[0]
        if not module.hold_noise:
            width = z.shape[1]
            b = (torch.rand(width, generator=generator) * 2 - 1) * shift
            c = torch.exp((torch.rand(width, generator=generator) * 2 - 1) * log_scale)
            module.step_noise = (b, c)
        b, c = module.step_noise
        return (z * c + b,)

    for block in model.hidden_layers:
        block.activation.hold_noise = False
    return [block.activation.register_forward_pre_hook(noisy) for block in model.hidden_layers]


def _moment_shifts(means: list[list[torch.Tensor]], stds: list[list[torch.Tensor]], forwards: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(mean shift, scale shift)``, each (forwards - 1, L): for step t + 1 against step t (rows), per hidden
    layer, the mean over units of |mu_{t+1} - mu_t| / sigma_t and of |log(sigma_{t+1} / sigma_t)|, in float64;
    units with sigma_t = 0 are left out (NaN if every unit is)."""
    if forwards < 2:
        empty = np.full((0, len(means)), np.nan)
        return empty, empty.copy()
    mean = torch.stack([torch.stack(layer[:forwards]) for layer in means], dim=1).double().numpy()
    std = torch.stack([torch.stack(layer[:forwards]) for layer in stds], dim=1).double().numpy()
    before, after = std[:-1], std[1:]                     # (T - 1, L, width)
    alive = before > 0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer with every unit dead: NaN, not a warning
        moved = np.where(alive, np.abs(mean[1:] - mean[:-1]) / before, np.nan)
        rescaled = np.where(alive & (after > 0), np.abs(np.log(after / before)), np.nan)
        return np.nanmean(moved, axis=2), np.nanmean(rescaled, axis=2)


class _InputMoments:
    """Records, at every training-mode forward (one per SGD step), each hidden unit's mean and standard
    deviation of its nonlinearity input (as the layer above sees it, noise included), twice:

    * over the step's **minibatch**, and the values of one unit (``unit`` of hidden layer ``layer``, 0-based);
    * over the fixed **probe** batch ``probe_x``, passed right after the step's forward with the same weights
      and the same noise (held), in training mode (BN normalizes with the probe batch's statistics, and its
      running statistics are left alone), so the probe changes nothing the run computes.

    The minibatch statistics mix two causes of movement, the weights' change and the change of examples; on
    the probe batch only the weights (and the noise) move. Eval-mode forwards are skipped."""

    def __init__(self, model, probe_x: torch.Tensor, layer: int, unit: int = 0):
        count = len(model.hidden_layers)
        self.moments = {where: ([[] for _ in range(count)], [[] for _ in range(count)])
                        for where in ("minibatch", "probe")}
        self.unit_values: list[torch.Tensor] = []
        self.layer, self.unit, self.probe_x, self.probing = layer, unit, probe_x, False
        self.handles = [block.activation.register_forward_pre_hook(self._hook(index))
                        for index, block in enumerate(model.hidden_layers)]
        self.handles.append(model.register_forward_hook(self._probe))

    def _hook(self, index: int):
        def record(module, args):
            if module.training:
                z = args[0].detach()
                std, mean = torch.std_mean(z, dim=0, unbiased=False)
                means, stds = self.moments["probe" if self.probing else "minibatch"]
                means[index].append(mean)
                stds[index].append(std)
                if index == self.layer and not self.probing:
                    self.unit_values.append(z[:, self.unit].clone())
        return record

    def _probe(self, model, args, output):
        if not model.training or self.probing:
            return
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        activations = [block.activation for block in model.hidden_layers]
        self.probing = True
        for act in activations:
            act.hold_noise = True
        for bn in norms:  # batch statistics without touching the running ones (the step's backward needs them)
            bn.track_running_stats = False
        try:
            with torch.no_grad():
                model(self.probe_x)
        finally:
            self.probing = False
            for act in activations:
                act.hold_noise = False
            for bn in norms:
                bn.track_running_stats = True
        return

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()

    def shifts(self, forwards: int, where: str = "minibatch") -> tuple[np.ndarray, np.ndarray]:
        """:func:`_moment_shifts` of the ``"minibatch"`` or ``"probe"`` statistics of the first ``forwards``
        steps."""
        return _moment_shifts(*self.moments[where], forwards)

    def unit_percentiles(self, forwards: int) -> np.ndarray:
        """(forwards, 3) the 15/50/85th percentiles of the recorded unit over each step's minibatch."""
        if forwards < 1:
            return np.full((0, 3), np.nan)
        values = torch.stack(self.unit_values[:forwards]).double().numpy()
        return np.percentile(values, (15, 50, 85), axis=1).T


def probe_batch(seed: int, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed minibatch the probes of seed ``seed`` use: ``batch_size`` training examples drawn with their
    own generator (seed + 20,000), so probes at different updates see the same examples."""
    data = mnist()
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(seed + _PROBE_SEED))
    return data.x_train[order[:batch_size]], data.y_train[order[:batch_size]]


def _probe_copy(model):
    """A copy of ``model`` in training mode without any hooks (the noise and the recorders stay on the
    original), so probing changes nothing the run records or computes. The hooks are set aside while the
    model is copied: copying them would copy every tensor the recorders hold."""
    modules = list(model.modules())
    hooks = [(module._forward_pre_hooks, module._forward_hooks) for module in modules]
    for module in modules:
        module._forward_pre_hooks, module._forward_hooks = OrderedDict(), OrderedDict()
    try:
        probe = copy.deepcopy(model)
    finally:
        for module, (pre, post) in zip(modules, hooks):
            module._forward_pre_hooks, module._forward_hooks = pre, post
    return probe.train()


def _gradients(model, x: torch.Tensor, y: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """(loss, gradient of every parameter in ``model.parameters()`` order) on (x, y), training mode."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.item(), [p.grad.detach().clone() for p in model.parameters()]


def _layer_blocks(model) -> list[list[torch.nn.Parameter]]:
    """The parameters of each hidden block (weight, bias, BN's gamma and beta), then the output layer's."""
    return [list(block.parameters()) for block in model.hidden_layers] + [list(model.output.parameters())]


def gradient_ics(model, x: torch.Tensor, y: torch.Tensor, lr: float) -> np.ndarray:
    """Internal covariate shift measured through gradients (Santurkar et al. 2018, Definition 2.1).

    For weight layer k = 2 .. L + 1 (hidden layers 2..L, then the output layer): G is the gradient of the
    loss on (x, y) with respect to layer k's weight matrix; G' is the same gradient after every parameter of
    the layers *before* k (their weights, biases, BN's gamma and beta) took one SGD step of size ``lr`` computed
    from the same minibatch, the layers from k on unchanged. Layer 1 has nothing before it (G' = G).

    Returns:
        (L, 3): per layer k = 2 .. L + 1, ``||G - G'||``, ``||G - G'|| / ||G||`` and ``cos(G, G')``
        (Frobenius norms, float64). Works on a copy in training mode; ``model`` is untouched.
    """
    def compute() -> np.ndarray:
        probe = _probe_copy(model)
        blocks = _layer_blocks(probe)
        params = list(probe.parameters())
        index = {id(p): i for i, p in enumerate(params)}
        _, grads = _gradients(probe, x, y)
        start = [p.detach().clone() for p in params]
        rows = []
        for k in range(1, len(blocks)):
            with torch.no_grad():
                for p, p0 in zip(params, start):
                    p.copy_(p0)
                for block in blocks[:k]:
                    for p in block:
                        p -= lr * grads[index[id(p)]]
            _, after = _gradients(probe, x, y)
            weight = (probe.hidden_layers[k].weight_layer.weight if k < len(probe.hidden_layers)
                      else probe.output.weight)
            g, g2 = grads[index[id(weight)]].double(), after[index[id(weight)]].double()
            difference = float((g - g2).norm())
            rows.append((difference, difference / float(g.norm()),
                         float((g * g2).sum() / (g.norm() * g2.norm()))))
        return np.array(rows)

    return _with_one_thread(compute)


def gradient_probe(model, x: torch.Tensor, y: torch.Tensor, lrs: Sequence[float] = PROBE_LRS
                   ) -> tuple[float, float, np.ndarray, np.ndarray]:
    """The loss landscape along the gradient (Santurkar et al. 2018, Sec. 3.1): from the current parameters
    theta, with g the gradient of the loss on (x, y), evaluate the loss and the gradient at theta - eta * g for
    each eta of ``lrs`` (all parameters move; same minibatch, training mode, on a copy).

    Returns:
        ``(loss at theta, ||g||, losses (E,), gradient change (E,))`` with gradient change
        ``||grad L(theta - eta g) - g||`` over all parameters (float64). The loss range along the gradient is
        ``max - min`` of the loss at theta and the E losses; ``change / (eta ||g||)`` is the change of the
        gradient per unit distance moved (a smoothness constant, measured along -g).
    """
    def compute():
        probe = _probe_copy(model)
        params = list(probe.parameters())
        loss0, grads = _gradients(probe, x, y)
        start = [p.detach().clone() for p in params]
        norm = math.sqrt(sum(float(g.double().square().sum()) for g in grads))
        losses, changes = [], []
        for eta in lrs:
            with torch.no_grad():
                for p, p0, g in zip(params, start, grads):
                    p.copy_(p0 - eta * g)
            loss, after = _gradients(probe, x, y)
            losses.append(loss)
            changes.append(math.sqrt(sum(float((a.double() - g.double()).square().sum())
                                         for a, g in zip(after, grads))))
        return loss0, norm, np.array(losses), np.array(changes)

    return _with_one_thread(compute)


def local_smoothness(activation: str, norm: str, seed: int = 0, eta: float = 1e-5, depth: int = 10) -> float:
    """||grad(theta - eta g) - g|| / (eta ||g||) for the untrained depth-``depth`` net (He init, width 100) on
    seed ``seed``'s probe minibatch, in float64: the gradient's change per unit distance for a tiny step along
    -g. For a smooth loss it tends to ||H g|| / ||g|| (H the Hessian) as eta -> 0 and does not depend on eta;
    a ReLU net's gradient jumps wherever a pre-activation crosses 0, so there it grows as eta shrinks."""
    check_choice(activation, "activation", ("relu", "tanh", "sigmoid", "linear"))
    check_choice(norm, "norm", ("none", "batch"))
    check_float(eta, "eta", 0.0, inclusive=False)
    model = build_mlp(depth=depth, width=100, activation=activation, norm=norm, init="he", seed=seed).double()
    x, y = probe_batch(seed)
    _, norm_g, _, change = gradient_probe(model, x.double(), y, (eta,))
    return float(change[0] / (eta * norm_g))


def _clean_evaluation(model, config: WhyConfig) -> dict[str, np.float64]:
    """The trained net without its noise, on a copy: eval-mode test accuracy and training loss (all 4,000
    training digits) with the running statistics training left (``"test_accuracy_ema"`` is the run's own
    number) and, for a BN net, after recomputing them on the clean training data (precise BN, lecture 12:
    :func:`bnlab.nn.recompute_batchnorm_statistics` over the training digits in batches of ``batch_size``, noise
    off). Without BN the two are the same net."""
    data = mnist()
    clean = _probe_copy(model)  # no hooks: no noise, in training mode too
    train_loss_ema, _ = evaluate(clean, data.x_train, data.y_train)
    if config.norm == "batch":
        recompute_batchnorm_statistics(clean, data.x_train.split(config.batch_size))
    train_loss, accuracy = evaluate(clean, data.x_train, data.y_train)[0], evaluate(clean, data.x_test, data.y_test)[1]
    return {"clean_train_loss_ema": np.float64(train_loss_ema), "clean_train_loss": np.float64(train_loss),
            "precise_accuracy": np.float64(accuracy)}


def train_probed(config: WhyConfig, seed: int) -> dict[str, np.ndarray]:
    """One seed of ``config``: train it and return what the lecture draws, as arrays.

    Keys: ``steps`` (K,) recorded updates; ``train_loss`` (K,) the mean training-mode minibatch loss since the
    previous record (noise included; NaN after a divergence); ``test_accuracy`` (K,) in eval mode (noise
    off, the running statistics training left); ``final_accuracy``, ``diverged``, ``diverged_at`` () as every
    experiment keeps them; ``precise_accuracy``, ``clean_train_loss``, ``clean_train_loss_ema`` () from
    :func:`_clean_evaluation` (NaN for a diverged run); ``mean_shift``, ``scale_shift`` (T - 1, L) per step and
    hidden layer, how far the units' input distributions moved on the step's minibatch since the previous step,
    and ``probe_mean_shift``, ``probe_scale_shift`` the same on the fixed probe batch (see
    :func:`distribution_shift`); ``unit_percentiles`` (T, 3) 15/50/85th percentile over each step's minibatch
    of unit 0 of the middle hidden layer's nonlinearity input; and with probes, at ``probe_steps`` (P,):
    ``ics`` (P, L, 3) from :func:`gradient_ics`, ``loss0``, ``grad_norm`` (P,), ``probe_losses``,
    ``grad_change`` (P, E) from :func:`gradient_probe`.
    """
    steps = config.probe_steps()
    x, y = probe_batch(seed, config.batch_size)
    probes: dict[str, list] = {"ics": [], "loss0": [], "grad_norm": [], "probe_losses": [], "grad_change": []}
    seen: dict = {}

    def probe(model) -> None:
        probes["ics"].append(gradient_ics(model, x, y, config.lr))
        loss0, norm, losses, change = gradient_probe(model, x, y, config.probe_lrs)
        for key, value in zip(("loss0", "grad_norm", "probe_losses", "grad_change"), (loss0, norm, losses, change)):
            probes[key].append(value)

    def before(model) -> None:
        seen["model"] = model
        if config.noisy:
            add_step_noise(model, config.noise_shift, config.noise_scale,
                           torch.Generator().manual_seed(seed + _NOISE_SEED))
        if config.frozen:  # SGD steps with zero gradients: the weights stay where they started
            for parameter in model.parameters():
                parameter.register_hook(torch.zeros_like)
        seen["moments"] = _InputMoments(model, x, layer=config.depth // 2 - 1)
        if 0 in steps:
            probe(model)

    def on_step(update: int) -> None:
        if update in steps:
            probe(seen["model"])

    model = build_mlp(depth=config.depth, width=config.width, activation=config.activation, norm=config.norm,
                      init=config.init, seed=seed)
    before(model)
    try:
        result = train(model, mnist(), TrainConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                                   seed=seed, record_steps=config.recorded_steps(), threads=1,
                                                   progress=False), on_step=on_step)
    finally:
        seen["moments"].remove()
    moments = seen["moments"]
    recorded = np.array(result.config.recorded_steps(), dtype=np.float64)
    forwards = result.steps_completed  # the forwards that led to an update (a diverged run's last one did not)
    mean_shift, scale_shift = moments.shifts(forwards, "minibatch")
    probe_mean_shift, probe_scale_shift = moments.shifts(forwards, "probe")
    clean = ({key: np.float64(np.nan) for key in ("clean_train_loss_ema", "clean_train_loss", "precise_accuracy")}
             if result.diverged else _clean_evaluation(model, config))
    out = {
        "steps": recorded,
        "test_accuracy": pad(result.test_accuracy, recorded.size),
        "train_loss": pad(result.train_loss_avg, recorded.size),
        "final_accuracy": np.float64(final_accuracy(result)),
        "diverged": np.float64(result.diverged),
        "diverged_at": np.float64(result.diverged_at if result.diverged else np.nan),
        **clean,
        "mean_shift": pad(mean_shift, config.steps - 1),
        "scale_shift": pad(scale_shift, config.steps - 1),
        "probe_mean_shift": pad(probe_mean_shift, config.steps - 1),
        "probe_scale_shift": pad(probe_scale_shift, config.steps - 1),
        "unit_percentiles": pad(moments.unit_percentiles(forwards), config.steps),
    }
    if steps:
        out["probe_steps"] = np.array(steps, dtype=np.float64)
        out["ics"] = pad(np.array(probes["ics"]).reshape(-1, config.depth, 3), len(steps))
        out["loss0"] = pad(np.array(probes["loss0"]), len(steps))
        out["grad_norm"] = pad(np.array(probes["grad_norm"]), len(steps))
        for key in ("probe_losses", "grad_change"):
            out[key] = pad(np.array(probes[key]).reshape(-1, len(config.probe_lrs)), len(steps))
        out["probe_lrs"] = np.array(config.probe_lrs)
    return out


def run_nets(configs: Mapping[str, WhyConfig]) -> dict[str, SeedRuns]:
    """``{label: runs}``: :func:`train_probed` for every seed of every config. All (config, seed) runs share
    one pool of threads (one per core, one torch thread each), so the numbers do not depend on the
    scheduling and two cores stay busy to the end."""
    for label, config in configs.items():
        if not isinstance(config, WhyConfig):
            raise TypeError(f"run_nets takes {{label: WhyConfig}}, got {type(config).__name__} for {label!r}")
    jobs = [(label, seed) for label, config in configs.items() for seed in config.seeds]
    done = map_seeds(lambda index: train_probed(configs[jobs[index][0]], jobs[index][1]), tuple(range(len(jobs))))
    return {label: SeedRuns(seeds=config.seeds,
                            arrays=tuple(arrays for (owner, _), arrays in zip(jobs, done) if owner == label))
            for label, config in configs.items()}


# ----------------------------------------------------------------------------------------------------------
# Reading the runs
# ----------------------------------------------------------------------------------------------------------


def final_train_loss(runs: SeedRuns) -> np.ndarray:
    """(S,) each seed's mean training-mode minibatch loss over the last recorded stretch (updates 276-300 of
    the lecture's runs; noise included for a noisy net); NaN for a seed that diverged."""
    return runs.values("train_loss")[:, -1]


def distribution_shift(runs: SeedRuns, after: int = 0, where: str = "probe") -> tuple[np.ndarray, np.ndarray]:
    """``(mean shift, scale shift)``, each (S,): per seed, the mean over the steps after update ``after`` and
    over the hidden layers of how far the units' nonlinearity inputs moved from one SGD step to the next:
    |mu_t - mu_{t-1}| / sigma_{t-1} (the mean's move, in standard deviations) and |log(sigma_t / sigma_{t-1})|
    (the spread's relative change). ``where``: ``"probe"`` for the statistics over the fixed probe batch (only
    the weights and the noise move them), ``"minibatch"`` for those over each step's own minibatch (what SGD's
    layer sees; minibatch sampling moves them too). NaN for a seed that diverged before."""
    check_choice(where, "where", ("probe", "minibatch"))
    prefix = "probe_" if where == "probe" else ""
    mean, scale = runs.values(prefix + "mean_shift"), runs.values(prefix + "scale_shift")  # (S, T - 1, L)
    keep = slice(max(0, after - 1), None)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a seed that diverged at once has no shifts: NaN
        return np.nanmean(mean[:, keep], axis=(1, 2)), np.nanmean(scale[:, keep], axis=(1, 2))


def sampling_shift(batch_size: int = 64) -> float:
    """E|mu_t - mu_{t-1}| / sigma when nothing but the minibatch changes: the means of two independent
    minibatches of ``batch_size`` normal values differ by N(0, 2 sigma^2 / batch_size), whose mean absolute
    value is sigma * sqrt(4 / (pi * batch_size)). 0.141 for 64. A layer whose statistics move only this much
    moves only by sampling."""
    return math.sqrt(4 / (math.pi * check_int(batch_size, "batch_size", minimum=1)))


def noise_mean_shift(shift: float, scale: float) -> float:
    """What :func:`add_step_noise` alone does to :func:`distribution_shift`'s mean move, for a unit whose input
    before the noise has mean 0 and standard deviation 1 on every minibatch (BN at initialization,
    gamma = 1, beta = 0). The noisy input has mean b_t and standard deviation c_t, so the move is
    |b_t - b_{t-1}| / c_{t-1}, with b, c independent draws: E|b_t - b_{t-1}| = 2 shift / 3 for two uniform
    draws on [-shift, shift], and E[1 / c] = (scale - 1/scale) / (2 ln scale) for c = scale ** U(-1, 1)
    (1 when scale = 1)."""
    shift = check_float(shift, "shift", 0.0)
    scale = check_float(scale, "scale", 1.0)
    inverse = 1.0 if scale == 1.0 else (scale - 1 / scale) / (2 * math.log(scale))
    return 2 * shift / 3 * inverse


def noise_growth(norm: str, layers: Sequence[int] | None = None, shift: float = 1.0, scale: float = 2.0,
                 seed: int = 0, draws: int = 20, depth: int = 10) -> np.ndarray:
    """How much :func:`add_step_noise` changes the size of the net's output at initialization: the
    root-mean-square of the logits on seed ``seed``'s probe batch (training mode) with the noise over without
    it, for ``draws`` independent noise draws, (draws,). ``layers``: the hidden layers (1-based) that get the
    noise, all of them when None; one layer alone is the control for compounding (with noise in every layer
    of a plain net, the factors multiply from layer to layer; with BN, the next BN undoes them)."""
    check_choice(norm, "norm", ("none", "batch"))
    check_int(draws, "draws", minimum=1)
    model = build_mlp(depth=depth, width=100, activation="relu", norm=norm, init="he", seed=seed).train()
    chosen = range(1, depth + 1) if layers is None else [check_int(l, "each of layers", 1) for l in layers]
    if any(l > depth for l in chosen):
        raise ValueError(f"layers must be in 1..{depth}, got {layers!r}")
    x, _ = probe_batch(seed)
    generator = torch.Generator().manual_seed(seed + _NOISE_SEED)

    def compute() -> np.ndarray:
        with torch.no_grad():
            clean = float(model(x).double().square().mean().sqrt())
            handles = add_step_noise(model, shift, scale, generator)
            for index, handle in enumerate(handles):
                if index + 1 not in chosen:
                    handle.remove()
            try:
                noisy = [float(model(x).double().square().mean().sqrt()) for _ in range(draws)]
            finally:
                for handle in handles:
                    handle.remove()
        return np.array(noisy) / clean

    return _with_one_thread(compute)


def ics_summary(runs: SeedRuns, after: int = 1) -> dict[str, np.ndarray]:
    """Per seed, the median over the probes after update ``after`` (default: all but the untrained net) and
    over the layers 2 .. L + 1 of :func:`gradient_ics`'s three columns: ``{"difference", "relative",
    "cosine"}``, each (S,)."""
    ics = runs.values("ics")                               # (S, P, L, 3)
    keep = runs.values("probe_steps")[0] >= after
    chosen = ics[:, keep]
    return {name: np.median(chosen[..., column].reshape(chosen.shape[0], -1), axis=1)
            for column, name in enumerate(("difference", "relative", "cosine"))}


def ics_at(runs: SeedRuns, update: int = 0) -> dict[str, np.ndarray]:
    """Like :func:`ics_summary`, at one probe only (default: the untrained net): per seed the median over the
    layers 2 .. L + 1 of ``{"difference", "relative", "cosine"}``, each (S,). Raises ValueError when
    ``update`` is not a probe step."""
    steps = runs.values("probe_steps")[0]
    if update not in steps:
        raise ValueError(f"update must be a probe step {tuple(int(s) for s in steps)}, got {update!r}")
    chosen = runs.values("ics")[:, int(np.flatnonzero(steps == update)[0])]  # (S, L, 3)
    return {name: np.median(chosen[..., column], axis=1)
            for column, name in enumerate(("difference", "relative", "cosine"))}


def landscape_summary(runs: SeedRuns, after: int = 1, at_lr: float = 0.1) -> dict[str, np.ndarray]:
    """Per seed, the median over the probes after update ``after`` of :func:`gradient_probe`'s summaries, each
    (S,):

    * ``"loss_range"``: max - min of the loss at theta and at the probe steps along -g;
    * ``"grad_change"``: the largest ||grad(theta - eta g) - g|| over the step sizes;
    * ``"relative_change"``: the same divided by ||g||;
    * ``"beta"``: the gradient change per unit distance moved, change / (eta ||g||), at the probe step
      ``at_lr`` (the training rate): a smoothness constant measured along -g at the scale of one SGD step;
    * ``"grad_norm"``: ||g||.
    """
    keep = runs.values("probe_steps")[0] >= after
    losses = np.concatenate([runs.values("loss0")[..., None], runs.values("probe_losses")], axis=2)[:, keep]
    change = runs.values("grad_change")[:, keep]
    norm = runs.values("grad_norm")[:, keep]
    lrs = runs.values("probe_lrs")[0]
    column = int(np.argmin(np.abs(lrs - at_lr)))
    if not np.isclose(lrs[column], at_lr):
        raise ValueError(f"at_lr must be one of the probe step sizes {tuple(float(v) for v in lrs)}, got {at_lr!r}")
    return {"loss_range": np.median(losses.max(axis=2) - losses.min(axis=2), axis=1),
            "grad_change": np.median(change.max(axis=2), axis=1),
            "relative_change": np.median(change.max(axis=2) / norm, axis=1),
            "beta": np.median(change[..., column] / (lrs[column] * norm), axis=1),
            "grad_norm": np.median(norm, axis=1)}


# ----------------------------------------------------------------------------------------------------------
# One step at initialization (Bjorck et al. 2018)
# ----------------------------------------------------------------------------------------------------------


def _rms(outputs: list[torch.Tensor]) -> np.ndarray:
    return np.array([float(out.double().square().mean().sqrt()) for out in outputs])


def one_step_probe(config: OneStepConfig) -> tuple[float, np.ndarray]:
    """One SGD step of ``config.lr`` from initialization on one minibatch, exactly as
    :func:`bnlab.experiments.one_step_loss_ratio` takes it (same net, seed and minibatch), and what it did to
    the forward pass.

    Returns:
        ``(loss after / loss before, growth (L,))``: the ratio equals :func:`one_step_loss_ratio` (``inf`` when
        the loss overflowed), and growth[l] is the root-mean-square of hidden layer l + 1's output (after its
        nonlinearity) on the minibatch after the step over the same before it (training mode: BN normalizes
        with the minibatch's statistics, as the step saw them). Growth that compounds from layer to layer is
        how a large step makes a deep plain net's loss explode.
    """
    if not isinstance(config, OneStepConfig):
        raise TypeError(f"one_step_probe takes a OneStepConfig, got {type(config).__name__}")

    def compute():
        data = mnist()
        model = build_mlp(depth=config.depth, width=config.width, activation=config.activation,
                          norm=config.norm, init=config.init, init_std=config.init_std, seed=config.seed)
        order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(config.seed))
        x, y = data.x_train[order[:config.batch_size]], data.y_train[order[:config.batch_size]]
        model.train()
        before = _rms(hidden_layer_outputs(model, x, model.training))
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter -= config.lr * parameter.grad
            after_loss = float(F.cross_entropy(model(x), y))
        after = _rms(hidden_layer_outputs(model, x, model.training))
        ratio = after_loss / loss.item() if math.isfinite(after_loss) else math.inf
        with np.errstate(all="ignore"):
            return ratio, after / before

    return _with_one_thread(compute)


def initial_logit_rms(config: OneStepConfig) -> float:
    """The root-mean-square of the logits of ``config``'s untrained net on its one-step minibatch (training
    mode), the minibatch and net of :func:`one_step_probe`: how large the net's outputs start."""
    if not isinstance(config, OneStepConfig):
        raise TypeError(f"initial_logit_rms takes a OneStepConfig, got {type(config).__name__}")
    data = mnist()
    model = build_mlp(depth=config.depth, width=config.width, activation=config.activation, norm=config.norm,
                      init=config.init, init_std=config.init_std, seed=config.seed).train()
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(config.seed))
    with torch.no_grad():
        return float(model(data.x_train[order[:config.batch_size]]).double().square().mean().sqrt())


@dataclass(frozen=True)
class OneStepProbes:
    """:func:`one_step_probe` over learning rates and seeds for one setting.

    Attributes: ``lrs`` (E,), ``seeds`` (S,), ``ratio`` (E, S) loss after / before, ``growth`` (E, S, L)
    each hidden layer's output RMS after / before.
    """

    lrs: tuple[float, ...]
    seeds: tuple[int, ...]
    ratio: np.ndarray
    growth: np.ndarray


def one_step_probes(settings: Mapping[str, OneStepConfig], lrs: Sequence[float], seeds: Sequence[int] = (0, 1, 2)
                    ) -> dict[str, OneStepProbes]:
    """``{label: OneStepProbes}``: :func:`one_step_probe` for every rate of ``lrs`` and every seed of each
    setting (a base config whose lr and seed are replaced)."""
    seeds = check_seeds(tuple(seeds))
    lrs = tuple(check_float(lr, "each of lrs", 0.0, inclusive=False) for lr in lrs)
    out = {}
    for label, config in settings.items():
        rows = [[one_step_probe(replace(config, lr=lr, seed=seed)) for seed in seeds] for lr in lrs]
        out[label] = OneStepProbes(lrs=lrs, seeds=seeds, ratio=np.array([[r for r, _ in row] for row in rows]),
                                   growth=np.array([[g for _, g in row] for row in rows]))
    return out


# ----------------------------------------------------------------------------------------------------------
# Rank collapse at depth (Daneshmand et al. 2020)
# ----------------------------------------------------------------------------------------------------------


def representations(normalize: str, depth: int = 50, activation: str = "relu", seed: int = 0,
                    x: torch.Tensor | None = None, width: int = 100) -> list[torch.Tensor]:
    """Each hidden layer's output (after its nonlinearity), (N, width) per layer, when ``x`` (default: the
    1,000 test digits, as one batch) passes through an untrained plain MLP with He init and, between each
    linear layer and its nonlinearity, ``normalize``:

    * ``"none"``: nothing (the plain net);
    * ``"center"``: subtract each unit's mean over the batch (BN's first half);
    * ``"scale"``: divide each unit by its standard deviation over the batch, sqrt(var + eps), without
      centring (BN's second half, as BN computes it);
    * ``"rms"``: divide each unit by its root-mean-square over the batch, sqrt(mean(z^2) + eps), without
      centring: Daneshmand et al.'s (2020) BN, diag(H H^T)^(-1/2) H for H (width, N);
    * ``"batch"``: both, which is BN in training mode at initialization (gamma = 1, beta = 0);
    * ``"layer"``: LayerNorm, each example over its own units.

    The weights are those of ``build_mlp(depth, width, activation, norm="none", init="he", seed=seed)``; He init
    zeroes the biases and draws the same weights whatever the norm, so ``"batch"`` and ``"layer"`` are the nets
    ``build_mlp`` builds with ``norm="batch"`` / ``"layer"`` (the tests check it).
    """
    check_choice(normalize, "normalize", NORMALIZATIONS)
    check_int(depth, "depth", minimum=1)
    check_choice(activation, "activation", ("relu", "tanh", "sigmoid", "linear"))
    model = build_mlp(depth=depth, width=width, activation=activation, norm="none", init="he", seed=seed)
    h = mnist().x_test if x is None else x
    if h.ndim != 2 or h.shape[0] < 2:
        raise ValueError(f"x must be (N, D) with N >= 2 examples (a batch to normalize over), got shape "
                         f"{tuple(h.shape)}")
    outputs = []

    def compute():
        nonlocal h
        with torch.no_grad():
            for block in model.hidden_layers:
                z = block.weight_layer(h)
                if normalize in ("center", "batch"):
                    z = z - z.mean(dim=0)
                if normalize in ("scale", "batch"):
                    z = z / torch.sqrt(z.var(dim=0, unbiased=False) + EPS)
                if normalize == "rms":
                    z = z / torch.sqrt(z.square().mean(dim=0) + EPS)
                if normalize == "layer":
                    z = (z - z.mean(dim=1, keepdim=True)) / torch.sqrt(z.var(dim=1, unbiased=False, keepdim=True)
                                                                       + EPS)
                h = block.activation(z)
                outputs.append(h)

    _with_one_thread(compute)
    return outputs


def effective_rank(h: torch.Tensor) -> float:
    """The effective rank of a representation h (N, D) (Roy & Vetterli 2007): exp of the entropy of its
    singular values s normalized to sum to 1, computed in float64 (s from the eigenvalues of the smaller Gram
    matrix, h^T h or h h^T, which is 3x faster than an SVD and equal to it within 1e-12 here). Between 1 (all
    examples along one direction, or scaled copies of each other) and min(N, D) (all singular values equal). 0
    for an all-zero h."""
    if h.ndim != 2:
        raise ValueError(f"h must be a matrix (N, D), got shape {tuple(h.shape)}")
    h = h.double()
    gram = h.T @ h if h.shape[0] >= h.shape[1] else h @ h.T  # the smaller side: its eigenvalues are s^2
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    if float(s.sum()) == 0.0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@dataclass(frozen=True)
class Collapse:
    """:func:`collapse_by_depth` of one setting: ``similarity`` and ``rank`` (S, L), the mean cosine similarity
    between examples and the effective rank of each hidden layer's output, per seed."""

    normalize: str
    activation: str
    seeds: tuple[int, ...]
    similarity: np.ndarray
    rank: np.ndarray

    def at(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarity (S,), rank (S,)) at hidden layer ``layer`` (1-based)."""
        depth = self.similarity.shape[1]
        if not 1 <= layer <= depth:
            raise ValueError(f"layer must be in 1..{depth} (1-based hidden layer), got {layer!r}")
        return self.similarity[:, layer - 1], self.rank[:, layer - 1]


def collapse_by_depth(normalize: str, activation: str = "relu", depth: int = 50, seeds: Sequence[int] = (0, 1, 2)
                      ) -> Collapse:
    """How alike the 1,000 test digits look at each hidden layer of an untrained net (:func:`representations`),
    per seed: the mean cosine similarity between examples (:func:`bnlab.experiments.depth.mean_cosine_similarity`,
    lecture 7's measure) and the :func:`effective_rank` of the layer's output. Under a second per seed at
    depth 50."""
    seeds = check_seeds(tuple(seeds))
    check_choice(normalize, "normalize", NORMALIZATIONS)

    def one_seed(seed: int) -> dict[str, np.ndarray]:
        outputs = representations(normalize, depth, activation, seed)
        return {"similarity": np.array([mean_cosine_similarity(h) for h in outputs]),
                "rank": np.array([effective_rank(h) for h in outputs])}

    per_seed = map_seeds(one_seed, seeds)  # SVDs release the GIL: seeds run in parallel threads
    return Collapse(normalize=normalize, activation=activation, seeds=seeds,
                    similarity=np.array([run["similarity"] for run in per_seed]),
                    rank=np.array([run["rank"] for run in per_seed]))

