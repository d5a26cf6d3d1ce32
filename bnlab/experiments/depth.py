"""Lecture 7: how deep can a plain MLP get before it stops learning, and what batch norm (or init) changes.

The setting (bn-facts): MNIST subset, width 100, SGD with lr 0.1, batch 64, 600 updates, three seeds. The
default grid covers every depth from 2 to 8 (where the plain nets' borders lie), then 10, 15 and 20.

    from bnlab.experiments import DepthConfig, run
    runs = run(DepthConfig(depth=20, norm="batch"))
    runs.mean("test_accuracy")          # (K,) seed mean at runs.mean("steps")
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from bnlab._validation import check_choice, check_float
from bnlab.experiments._runs import SeedRuns, mnist, percentiles_in_training_mode
from bnlab.experiments.base import ACTIVATIONS, Experiment, sweep
from bnlab.recording import hidden_layer_outputs
from bnlab.train import TrainResult

__all__ = ["DEPTH_INITS", "DEPTH_NORMS", "DEPTH_SETTINGS", "GRID_DEPTHS", "LR_CONTROLS", "DepthConfig", "depth_sweep",
           "describe_runs", "layer_similarities", "mean_cosine_similarity", "zero_gradient_layers"]

DEPTH_NORMS = ("none", "batch", "layer")
DEPTH_INITS = ("default", "he", "gaussian")
GRID_DEPTHS = (2, 3, 4, 5, 6, 7, 8, 10, 15, 20)
GRID_INITS = ("default", "he")
# controls for lecture 7's question "is it the depth or the step size?": ReLU nets at depth 15 and 20 trained
# with a 3x smaller learning rate, (depth, norm, init, lr)
LR_CONTROLS = tuple((depth, norm, init, 0.03) for depth in (15, 20)
                    for norm, init in (("layer", "default"), ("none", "he"), ("batch", "default")))


@dataclass(frozen=True)
class DepthConfig(Experiment):
    """One MLP setting of the depth experiment (the shared fields: :class:`~bnlab.experiments.Experiment`).

    Attributes:
        norm: ``"none"``, ``"batch"`` or ``"layer"`` (before each nonlinearity).
        init: ``"default"`` (torch's), ``"he"`` (N(0, 2/fan_in)) or ``"gaussian"`` (N(0, init_std^2)).
        init_std: the std for ``init="gaussian"`` (ignored, and left out of the cache key, otherwise).
    """

    name = "depth"
    version = 4  # 3: every depth 2-8, similarity, diverged_at; 4: float64 gradient norms, NaN after divergence

    depth: int = 10
    norm: str = "none"
    init: str = "default"
    init_std: float = 0.1

    def check(self) -> None:
        check_choice(self.norm, "norm", DEPTH_NORMS)
        check_choice(self.init, "init", DEPTH_INITS)
        check_float(self.init_std, "init_std", 0.0, inclusive=False)

    def unused_fields(self) -> tuple[str, ...]:
        return () if self.init == "gaussian" else ("init_std",)

    def model_options(self) -> dict:
        return {"norm": self.norm, "init": self.init, "init_std": self.init_std}

    def at_init(self, model) -> dict[str, np.ndarray]:
        """At step 0, on the test split in training mode (batch statistics, as the first updates see them)."""
        return {"percentiles_init": percentiles_in_training_mode(model),
                "similarity_init": layer_similarities(model, train_mode=True)}

    def measure(self, result: TrainResult, model) -> dict[str, np.ndarray]:
        """After training, in eval mode; NaN for a run that diverged (it has no trained state to measure)."""
        gone = result.diverged
        return {
            "percentiles_final": np.full((self.depth, 3), np.nan) if gone else result.percentiles[-1],  # (L, 3)
            "grad_norms_init": result.grad_norms[0],       # (L + 1,) first minibatch, untrained model
            "grad_norms_final": np.full(self.depth + 1, np.nan) if gone else result.grad_norms[-1],
            "similarity_final": np.full(self.depth, np.nan) if gone else layer_similarities(model, train_mode=False),
        }

    @classmethod
    def grid(cls) -> list[DepthConfig]:
        """Every depth of :data:`GRID_DEPTHS` x activation x norm x (default, He) init, and the learning-rate
        controls :data:`LR_CONTROLS`."""
        grid = [cls(depth=depth, activation=activation, norm=norm, init=init)
                for depth in GRID_DEPTHS for activation in ACTIVATIONS for norm in DEPTH_NORMS
                for init in GRID_INITS]
        return grid + [cls(depth=depth, norm=norm, init=init, lr=lr) for depth, norm, init, lr in LR_CONTROLS]


def mean_cosine_similarity(h: torch.Tensor) -> float:
    """Mean cosine similarity over all pairs of distinct rows of ``h`` (N, D); rows that are all zero are left
    out (a cosine needs a direction); NaN when fewer than two rows are left.

    Uses sum_{i != j} <u_i, u_j> = ||sum_i u_i||^2 - N for unit rows u_i, so no N x N matrix is formed.
    """
    h = h.double()
    norms = torch.linalg.vector_norm(h, dim=1)
    units = h[norms > 0] / norms[norms > 0, None]
    n = units.shape[0]
    if n < 2:
        return float("nan")
    return float((units.sum(dim=0).square().sum() - n) / (n * (n - 1)))


def layer_similarities(model, train_mode: bool) -> np.ndarray:
    """(L,) mean cosine similarity between test examples of each hidden layer's output (after its
    nonlinearity), on a copy of ``model`` in training or eval mode.

    Near 1: the layer maps every image to nearly the same direction (rank collapse, Daneshmand et al. 2020),
    so the layers above cannot tell the images apart. Independent ReLU features give about 1/pi = 0.32.
    """
    outputs = hidden_layer_outputs(model, mnist().x_test, train_mode)
    return np.array([mean_cosine_similarity(out) for out in outputs])


def zero_gradient_layers(runs: SeedRuns) -> list[int]:
    """The weight layers (1-based) whose gradient at initialization is exactly 0 in every seed that has one:
    the signal underflowed to 0 in float32 on its way through the net, so those layers cannot learn."""
    grads = runs.values("grad_norms_init")  # (S, L + 1)
    zero = np.all((grads == 0) | ~np.isfinite(grads), axis=0) & np.any(np.isfinite(grads), axis=0)
    return [int(i) + 1 for i in np.flatnonzero(zero)]


def describe_runs(runs: SeedRuns) -> str:
    """A depth setting's result in words: each seed's accuracy, diverged seeds, layers whose gradient
    underflowed to 0, and a run stuck at chance."""
    words = [runs.headline()]
    zero = zero_gradient_layers(runs)
    if zero:
        span = f"{zero[0]}" if len(zero) == 1 else f"{zero[0]}-{zero[-1]}" if zero == list(
            range(zero[0], zero[-1] + 1)) else ", ".join(map(str, zero))
        words.append(f"gradient exactly 0 at init in layer{'s' if len(zero) > 1 else ''} {span} "
                     f"(float32 underflow)")
    accuracies = runs.final_accuracies()
    trained = accuracies[np.isfinite(accuracies)]
    if trained.size and np.all(trained < 0.2):
        words.append("stuck near chance (0.1)")
    return "; ".join(words)


DEPTH_SETTINGS = {  # label -> (norm, init): the lines of the lecture's summary figure
    "no norm": ("none", "default"),
    "BN": ("batch", "default"),
    "LayerNorm": ("layer", "default"),
    "no norm, He init": ("none", "he"),
}


def depth_sweep(base: DepthConfig = DepthConfig(), depths: tuple[int, ...] = GRID_DEPTHS,
                activations: tuple[str, ...] = ACTIVATIONS, *, cached_only: bool = False,
                skip_missing: bool = False, progress: bool | None = None
                ) -> dict[str, dict[str, dict[int, SeedRuns]]]:
    """``sweep[activation][setting][depth]``: runs of every depth for each activation and each of
    :data:`DEPTH_SETTINGS` (what :func:`bnlab.plots.plot_depth_sweep` draws)."""
    return {activation: {label: sweep({depth: replace(base, depth=depth, activation=activation, norm=norm,
                                                      init=init) for depth in depths},
                                      cached_only=cached_only, skip_missing=skip_missing, progress=progress)
                         for label, (norm, init) in DEPTH_SETTINGS.items()}
            for activation in activations}
