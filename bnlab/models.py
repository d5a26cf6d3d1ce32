"""MLP and small CNN builders with every knob the course's experiments turn.

A built model is a :class:`Network` (an ``nn.Sequential``) whose hidden layers are :class:`HiddenLayer`
blocks, themselves ``nn.Sequential`` with named children in forward order::

    placement="before" (the paper):  linear -> norm -> act        (CNN: conv -> norm -> act -> pool)
    placement="after":               linear -> act  -> norm       (CNN: conv -> act  -> norm -> pool)

followed by a plain ``output`` layer (never normalized). ``print(model)`` shows the order. The training loop
finds each hidden layer's pre-activation (the input of ``act``, what figure 1(b, c) of Ioffe & Szegedy plots)
through ``HiddenLayer.activation`` and its weight through ``HiddenLayer.weight_layer``.

Batch norm subtracts the batch mean, so a bias in the layer right before it is cancelled exactly: that layer
is built without one. Layer and group norm subtract a per-example mean instead, which does not cancel a
per-feature bias, so those layers keep theirs.

Construction is seeded: every weight is drawn from one ``torch.Generator`` in forward order, so the same
seed gives the same weights and building a model never touches torch's global random state (unless no seed
and no generator are given, in which case one seed is drawn from it, the way torch layers behave).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from bnlab._validation import check_choice, check_float, check_int, check_seed

__all__ = [
    "ACTIVATIONS",
    "INITS",
    "NORMS",
    "PLACEMENTS",
    "HiddenLayer",
    "ModelSpec",
    "Network",
    "build_cnn",
    "build_mlp",
    "build_model",
]

ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")
NORMS = ("none", "batch", "ghost", "layer", "group")
PLACEMENTS = ("before", "after")
INITS = ("default", "he", "gaussian")
KINDS = ("mlp", "cnn")

_MAX_DEFAULT_GROUPS = 32  # Wu & He's default group count


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines an architecture (hashable, so experiments can cache on it).

    ``input_shape`` is (D,) for an MLP and (C, H, W) for a CNN. ``width`` is units per hidden layer (MLP) or
    channels per conv layer (CNN). ``num_groups`` is resolved (never None) when ``norm == "group"``.
    """

    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    depth: int
    width: int
    activation: str
    norm: str
    placement: str
    init: str
    init_std: float
    ghost_batch_size: int | None = None
    num_groups: int | None = None
    kernel_size: int = 3

    @property
    def drops_bias_before_norm(self) -> bool:
        """True when batch statistics directly follow the weight layer, which makes its bias redundant."""
        return self.norm in ("batch", "ghost") and (self.placement == "before" or self.activation == "linear")


class HiddenLayer(nn.Sequential):
    """One hidden layer: children ``linear``/``conv``, optional ``norm``, ``act`` (and ``pool``), in order."""

    @property
    def weight_layer(self) -> nn.Linear | nn.Conv2d:
        """The Linear or Conv2d layer whose weight this block owns."""
        return self[0]

    @property
    def norm_layer(self) -> nn.Module | None:
        """The normalization module, or None when the block has no norm."""
        return getattr(self, "norm", None)

    @property
    def activation(self) -> nn.Module:
        """The nonlinearity; its input is the block's pre-activation."""
        return self.act


class Network(nn.Sequential):
    """A built model: ``hidden1 .. hidden{depth}`` blocks, then (CNN only) ``flatten``, then ``output``.

    Input (N, D) for an MLP or (N, C, H, W) for a CNN; output (N, num_classes) logits.
    """

    def __init__(self, spec: ModelSpec, modules: dict[str, nn.Module]):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self.spec = spec

    @property
    def hidden_layers(self) -> list[HiddenLayer]:
        """The hidden blocks in forward order (``depth`` of them)."""
        return [module for module in self if isinstance(module, HiddenLayer)]

    @property
    def output_layer(self) -> nn.Linear:
        return self.output

    def named_weight_layers(self) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
        """``[("hidden1", layer), ..., ("output", layer)]``: every layer with a weight matrix or kernel."""
        named = [(f"hidden{i}", block.weight_layer) for i, block in enumerate(self.hidden_layers, start=1)]
        return named + [("output", self.output)]


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------


def _activation(name: str) -> nn.Module:
    return {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU, "linear": nn.Identity}[name]()


def _norm(spec: ModelSpec, channels: int) -> nn.Module:
    """The normalization module for ``channels`` features (MLP) or channels (CNN)."""
    image = spec.kind == "cnn"
    if spec.norm == "batch":
        return nn.BatchNorm2d(channels) if image else nn.BatchNorm1d(channels)
    if spec.norm == "ghost":
        try:
            from bnlab.nn import GhostBatchNorm1d, GhostBatchNorm2d  # lazy: bnlab.nn is a separate module
        except ImportError as error:
            raise ImportError(f"norm='ghost' needs bnlab.nn.GhostBatchNorm1d/2d, which could not be imported "
                              f"({error})") from error
        ghost = GhostBatchNorm2d if image else GhostBatchNorm1d
        return ghost(channels, ghost_batch_size=spec.ghost_batch_size)
    if spec.norm == "layer":
        # Over all of an example's features; for images that is GroupNorm with one group (per-channel affine).
        return nn.GroupNorm(1, channels) if image else nn.LayerNorm(channels)
    if spec.norm == "group":
        return nn.GroupNorm(spec.num_groups, channels)
    raise AssertionError(f"unhandled norm {spec.norm!r}")


def _hidden_layer(spec: ModelSpec, in_size: int, pool: bool) -> HiddenLayer:
    bias = not spec.drops_bias_before_norm
    # skip_init: allocate without the default init, so the global RNG is untouched (we init everything below).
    if spec.kind == "cnn":
        weight_name = "conv"
        weight = nn.utils.skip_init(nn.Conv2d, in_size, spec.width, spec.kernel_size,
                                    padding=spec.kernel_size // 2, bias=bias)
    else:
        weight_name = "linear"
        weight = nn.utils.skip_init(nn.Linear, in_size, spec.width, bias=bias)
    children: list[tuple[str, nn.Module]] = [(weight_name, weight)]
    norm = None if spec.norm == "none" else ("norm", _norm(spec, spec.width))
    act = ("act", _activation(spec.activation))
    children += [c for c in ((norm, act) if spec.placement == "before" else (act, norm)) if c is not None]
    if pool:
        children.append(("pool", nn.MaxPool2d(2)))
    block = HiddenLayer()
    for name, module in children:
        block.add_module(name, module)
    return block


def _initialize(layer: nn.Linear | nn.Conv2d, spec: ModelSpec, generator: torch.Generator) -> None:
    """Draw one layer's weight (then bias) from ``generator`` according to ``spec.init``."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        if spec.init == "default":  # exactly what torch's reset_parameters draws, from our generator
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
            if layer.bias is not None:
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
            return
        if spec.init == "he":
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / fan_in), generator=generator)
        else:  # gaussian
            nn.init.normal_(layer.weight, 0.0, spec.init_std, generator=generator)
        if layer.bias is not None:
            layer.bias.zero_()


def _resolve_generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        return generator
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())  # follows torch.manual_seed, like torch layers
    return torch.Generator().manual_seed(check_seed(seed))


def build_model(spec: ModelSpec, *, seed: int | None = None, generator: torch.Generator | None = None
                ) -> Network:
    """Build the network a (validated) :class:`ModelSpec` describes; see :func:`build_mlp`."""
    gen = _resolve_generator(seed, generator)
    modules: dict[str, nn.Module] = {}
    if spec.kind == "mlp":
        size = spec.input_shape[0]
        for i in range(1, spec.depth + 1):
            modules[f"hidden{i}"] = _hidden_layer(spec, size, pool=False)
            size = spec.width
        modules["output"] = nn.utils.skip_init(nn.Linear, size, spec.num_classes)
    else:
        channels, height, width = spec.input_shape
        for i in range(1, spec.depth + 1):
            pool = min(height, width) >= 2
            modules[f"hidden{i}"] = _hidden_layer(spec, channels, pool=pool)
            channels = spec.width
            if pool:
                height, width = height // 2, width // 2
        modules["flatten"] = nn.Flatten()
        modules["output"] = nn.utils.skip_init(nn.Linear, channels * height * width, spec.num_classes)
    network = Network(spec, modules)
    for _, layer in network.named_weight_layers():
        _initialize(layer, spec, gen)
    return network


# ----------------------------------------------------------------------------------------------------------
# Public builders: validate, then build
# ----------------------------------------------------------------------------------------------------------


def _default_num_groups(width: int) -> int:
    """The largest group count <= 32 that divides ``width`` and leaves at least 2 channels per group."""
    candidates = [g for g in range(1, min(width // 2, _MAX_DEFAULT_GROUPS) + 1) if width % g == 0]
    return max(candidates, default=1)


def _make_spec(kind: str, input_shape: tuple[int, ...], num_classes: int, depth: int, width: int,
               activation: str, norm: str, placement: str, init: str, init_std: float,
               ghost_batch_size: int | None, num_groups: int | None, kernel_size: int) -> ModelSpec:
    check_choice(kind, "kind", KINDS)
    input_shape = tuple(check_int(s, "input shape entries", minimum=1) for s in input_shape)
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    depth = check_int(depth, "depth (number of hidden layers)", minimum=0)
    width = check_int(width, "width", minimum=1)
    check_choice(activation, "activation", ACTIVATIONS)
    check_choice(norm, "norm", NORMS)
    check_choice(placement, "placement", PLACEMENTS)
    check_choice(init, "init", INITS)
    init_std = check_float(init_std, "init_std", 0.0, inclusive=False)
    kernel_size = check_int(kernel_size, "kernel_size", minimum=1)
    if kind == "cnn" and kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd (so padding keeps the image size), got {kernel_size}")
    if norm == "ghost":
        if ghost_batch_size is None:
            raise ValueError("norm='ghost' needs ghost_batch_size (examples per ghost batch), got None")
        ghost_batch_size = check_int(ghost_batch_size, "ghost_batch_size", minimum=1)
    if norm == "group":
        if num_groups is None:
            num_groups = _default_num_groups(width)
        num_groups = check_int(num_groups, "num_groups", minimum=1)
        if width % num_groups:
            raise ValueError(f"num_groups must divide width {width}, got {num_groups}")
        if kind == "mlp" and width // num_groups < 2:
            raise ValueError(f"num_groups={num_groups} leaves one feature per group, which group norm maps to 0 "
                             f"in an MLP; use at most {width // 2} groups")
    return ModelSpec(kind=kind, input_shape=input_shape, num_classes=num_classes, depth=depth, width=width,
                     activation=activation, norm=norm, placement=placement, init=init, init_std=init_std,
                     ghost_batch_size=ghost_batch_size if norm == "ghost" else None,
                     num_groups=num_groups if norm == "group" else None, kernel_size=kernel_size)


def build_mlp(in_features: int = 784, num_classes: int = 10, *, depth: int = 3, width: int = 100,
              activation: str = "sigmoid", norm: str = "none", placement: str = "before", init: str = "default",
              init_std: float = 0.01, ghost_batch_size: int | None = None, num_groups: int | None = None,
              seed: int | None = None, generator: torch.Generator | None = None) -> Network:
    """A multilayer perceptron: ``depth`` hidden layers of ``width`` units, then a linear output layer.

    Args:
        in_features: D; the model maps (N, D) to (N, num_classes) logits.
        num_classes: outputs of the final layer (which never gets a norm).
        depth: number of hidden layers (0 gives logistic regression).
        width: units per hidden layer.
        activation: ``"sigmoid"``, ``"tanh"``, ``"relu"`` or ``"linear"`` (identity).
        norm: ``"none"``, ``"batch"``, ``"ghost"`` (needs ``ghost_batch_size``), ``"layer"`` or ``"group"``.
        placement: ``"before"`` the nonlinearity (Linear -> Norm -> act, as in the paper) or ``"after"``
            (Linear -> act -> Norm). With batch/ghost norm right after it, a Linear layer has no bias.
        init: ``"default"`` (torch's own), ``"he"`` (N(0, 2/fan_in)) or ``"gaussian"`` (N(0, init_std^2));
            he and gaussian set biases to 0. Applies to every Linear layer, the output layer included.
        init_std: the standard deviation for ``init="gaussian"``.
        ghost_batch_size: examples per ghost batch for ``norm="ghost"``; ignored otherwise.
        num_groups: groups for ``norm="group"`` (default: the largest divisor of width <= 32 leaving at least
            2 units per group); ignored otherwise.
        seed, generator: where the weights come from (one or neither).

    Returns:
        A :class:`Network`; its ``spec`` records every option.
    """
    spec = _make_spec("mlp", (in_features,), num_classes, depth, width, activation, norm, placement, init,
                      init_std, ghost_batch_size, num_groups, kernel_size=3)
    return build_model(spec, seed=seed, generator=generator)


def build_cnn(input_shape: tuple[int, int, int] = (1, 28, 28), num_classes: int = 10, *, depth: int = 3,
              width: int = 16, kernel_size: int = 3, activation: str = "relu", norm: str = "none",
              placement: str = "before", init: str = "default", init_std: float = 0.01,
              ghost_batch_size: int | None = None, num_groups: int | None = None, seed: int | None = None,
              generator: torch.Generator | None = None) -> Network:
    """A small CNN: ``depth`` blocks of a same-size conv with ``width`` channels, norm, activation, 2x2 max
    pool (while the image is at least 2 x 2), then flatten and a linear output layer.

    Input (N, C, H, W) with (C, H, W) = ``input_shape``; output (N, num_classes). Per-channel norms:
    ``"batch"``/``"ghost"`` use statistics over batch and positions, ``"layer"`` is GroupNorm with one
    group, ``"group"`` is GroupNorm (default groups: largest divisor of width <= 32 leaving 2 channels each).
    Other options as in :func:`build_mlp`.
    """
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {input_shape!r}")
    spec = _make_spec("cnn", tuple(input_shape), num_classes, depth, width, activation, norm, placement, init,
                      init_std, ghost_batch_size, num_groups, kernel_size)
    return build_model(spec, seed=seed, generator=generator)
