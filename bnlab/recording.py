"""What the training loop measures on a recording step: pre-activation percentiles, weight and gradient norms.

Nothing here runs on ordinary training steps. :class:`PreActivationRecorder` registers its hooks only for the
evaluation pass of a recording step and removes them afterwards, so unrecorded steps pay nothing.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from bnlab.models import Network

__all__ = [
    "PERCENTILE_LEVELS",
    "PreActivationRecorder",
    "gradient_norms",
    "unit_weight_norms",
    "hidden_activations",
    "hidden_layer_outputs",
    "named_weight_layers",
    "nonlinearity_inputs",
    "weight_norms",
]

PERCENTILE_LEVELS = (15.0, 50.0, 85.0)  # as in figure 1(b, c) of Ioffe & Szegedy (2015)
_MAX_VALUES_PER_EXAMPLE = 256  # wider layers (conv feature maps) are subsampled with a fixed stride


def hidden_activations(model: nn.Module) -> list[nn.Module]:
    """The nonlinearity module of each hidden layer of a :class:`~bnlab.models.Network` ([] for other models)."""
    return [block.activation for block in model.hidden_layers] if isinstance(model, Network) else []


def nonlinearity_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The input z (N, C) of each hidden layer's nonlinearity when ``model`` runs on x in its current mode (no
    gradients), input side first. Pass a copy to leave a model's running statistics untouched."""
    captured: list[torch.Tensor] = []
    handles = [act.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].detach()))
               for act in hidden_activations(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def hidden_layer_outputs(model: Network, x: torch.Tensor, train_mode: bool) -> list[torch.Tensor]:
    """Each hidden layer's output (after its nonlinearity), (N, width) per layer, input side first, when ``x``
    passes through a copy of ``model`` in training or eval mode (the model's running statistics and mode stay
    untouched)."""
    import copy

    probe = copy.deepcopy(model).train(train_mode)
    outputs: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda module, args, out: outputs.append(out.detach()))
             for block in probe.hidden_layers]
    try:
        with torch.no_grad():
            probe(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def named_weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` for each Linear/Conv layer: ``hidden1 .. output`` for a Network, module names otherwise."""
    if isinstance(model, Network):
        return model.named_weight_layers()
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def weight_norms(layers: list[tuple[str, nn.Module]]) -> np.ndarray:
    """Frobenius norm of each layer's weight (biases and norm parameters excluded), shape (num_layers,)."""
    with torch.no_grad():
        return np.array([float(torch.linalg.vector_norm(layer.weight)) for _, layer in layers])


def unit_weight_norms(layers: list[tuple[str, nn.Module]]) -> np.ndarray:
    """15th/50th/85th percentiles over each layer's output units of one unit's weight norm, (num_layers, 3).

    A unit's weights are one row of a Linear weight (one output channel's kernel of a Conv2d). Batch norm
    makes a layer's output invariant to each unit's weight scale separately, so this is the norm that sets a
    unit's effective learning rate.
    """
    with torch.no_grad():
        return np.array([np.percentile(torch.linalg.vector_norm(layer.weight.flatten(1), dim=1).double().numpy(),
                                       PERCENTILE_LEVELS) for _, layer in layers])


def gradient_norms(layers: list[tuple[str, nn.Module]]) -> np.ndarray:
    """Frobenius norm of each layer's weight gradient (the loss gradient, before weight decay), (num_layers,).

    A layer without a gradient (not reached by backward) gives NaN. The norm is taken in float64: in float32
    the squares of gradients below about 1e-19 underflow to 0, and a tiny gradient would read as exactly 0.
    """
    return np.array([float(torch.linalg.vector_norm(layer.weight.grad.double())) if layer.weight.grad is not None
                     else math.nan for _, layer in layers])


class PreActivationRecorder:
    """Collects the input of each given activation module during the forward passes inside a ``with`` block.

    Per layer it keeps two samples: values pooled over the layer's units (at most 256 per example, taken
    with a fixed stride for wide conv layers), and the values of one tracked unit (an MLP column, or one CNN
    channel at every position, likewise capped). Paper's figure 1(b, c) plots one unit; pooled values show
    the whole layer.

    Usage::

        with PreActivationRecorder(activations, tracked_unit=0) as recorder:
            model(x_test)
        pooled, unit = recorder.percentiles()   # each (num_layers, 3)
    """

    def __init__(self, activations: list[nn.Module], tracked_unit: int = 0,
                 levels: tuple[float, ...] = PERCENTILE_LEVELS):
        self.activations = list(activations)
        self.tracked_unit = tracked_unit
        self.levels = levels
        self._pooled: list[list[torch.Tensor]] = [[] for _ in self.activations]
        self._unit: list[list[torch.Tensor]] = [[] for _ in self.activations]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, index: int):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            per_example = x.reshape(x.shape[0], -1)
            stride = max(1, math.ceil(per_example.shape[1] / _MAX_VALUES_PER_EXAMPLE))
            self._pooled[index].append(per_example[:, ::stride].reshape(-1).clone())
            unit = x[:, min(self.tracked_unit, x.shape[1] - 1)].reshape(x.shape[0], -1)
            stride = max(1, math.ceil(unit.shape[1] / _MAX_VALUES_PER_EXAMPLE))
            self._unit[index].append(unit[:, ::stride].reshape(-1).clone())
        return record

    def __enter__(self) -> PreActivationRecorder:
        self._handles = [module.register_forward_pre_hook(self._hook(i))
                         for i, module in enumerate(self.activations)]
        return self

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def percentiles(self) -> tuple[np.ndarray, np.ndarray]:
        """``(pooled, unit)``, each of shape (num_layers, len(levels)); NaN for a layer that saw no data."""
        def summarize(chunks_per_layer: list[list[torch.Tensor]]) -> np.ndarray:
            out = np.full((len(chunks_per_layer), len(self.levels)), np.nan)
            for i, chunks in enumerate(chunks_per_layer):
                if chunks:
                    values = torch.cat(chunks).numpy()
                    if np.all(np.isfinite(values)):  # a diverging model's NaNs would make percentile warn
                        out[i] = np.percentile(values, self.levels)
            return out
        return summarize(self._pooled), summarize(self._unit)
