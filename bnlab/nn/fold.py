"""Fold an inference-mode batch norm into the preceding Linear or convolution.

In eval mode batch norm is one affine map per channel, ``y = z * s + t`` with ``s = gamma / sqrt(var + eps)``
and ``t = beta - running_mean * s``. If ``z = W x + b`` comes from a Linear or convolution, then
``y = (s * W) x + (s * b + t)``: scale each output channel's weights by ``s`` and fold the shift into the
bias (created if the layer had none). The folded layer equals ``bn(layer(x))`` for a layer in eval mode,
to float rounding, and saves a pass over the activations at inference.

Supported: ``nn.Linear`` and ``nn.Conv1d/2d/3d`` (not transposed convolutions, whose weight is laid out
(in, out, ...)), followed by any torch or bnlab batch norm with running statistics. The arithmetic is done in
float64 and cast back to the layer's dtype.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from bnlab.nn.find import is_batchnorm

__all__ = ["fold_batchnorm", "fold_batchnorm_sequential"]

FOLDABLE_TYPES: tuple[type, ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _check_pair(layer: nn.Module, bn: nn.Module) -> int:
    if not isinstance(layer, FOLDABLE_TYPES):
        raise TypeError(f"fold_batchnorm folds into nn.Linear or nn.Conv1d/2d/3d, got {type(layer).__name__}")
    if not is_batchnorm(bn):
        raise TypeError(f"fold_batchnorm expects a batch norm layer after the {type(layer).__name__}, "
                        f"got {type(bn).__name__}")
    out_channels = layer.weight.shape[0]
    if bn.num_features != out_channels:
        raise ValueError(f"cannot fold {type(bn).__name__}({bn.num_features}) into a {type(layer).__name__} with "
                         f"{out_channels} output channels: expected the batch norm to have {out_channels} features")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fold {type(bn).__name__} with track_running_stats=False: in eval mode it "
                         f"normalizes with batch statistics, which are not a fixed affine map")
    return out_channels


@torch.no_grad()
def fold_batchnorm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A new layer computing ``bn(layer(x))`` with ``bn`` in eval mode; ``layer`` and ``bn`` are not modified.

    Args:
        layer: ``nn.Linear`` (weight (out, in)) or ``nn.Conv1d/2d/3d`` (weight (out, in/groups, *kernel)),
            with or without bias.
        bn: batch norm with ``num_features == out`` and running statistics (torch's or bnlab's).

    Returns:
        A copy of ``layer`` (same type, dtype, device, hyper-parameters) with folded weight and a bias.
    """
    out_channels = _check_pair(layer, bn)
    weight = layer.weight.detach().double()
    bias = layer.bias.detach().double() if layer.bias is not None else weight.new_zeros(out_channels)
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()

    folded = copy.deepcopy(layer)
    dtype = layer.weight.dtype
    folded_weight = weight * scale.view((out_channels,) + (1,) * (weight.dim() - 1))
    folded.weight = nn.Parameter(folded_weight.to(dtype), requires_grad=layer.weight.requires_grad)
    folded.bias = nn.Parameter((bias * scale + shift).to(dtype), requires_grad=layer.weight.requires_grad)
    return folded


def fold_batchnorm_sequential(model: nn.Sequential) -> nn.Sequential:
    """A new ``nn.Sequential`` in which every Linear/Conv directly followed by a batch norm is folded into one.

    Nested ``nn.Sequential`` children are folded recursively; every other module is deep-copied unchanged
    (names kept; a folded pair keeps the layer's name). ``model`` is not modified. The result equals
    ``model`` in eval mode and is meant for inference.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"fold_batchnorm_sequential expects an nn.Sequential, got {type(model).__name__}")
    items = list(model.named_children())
    folded: OrderedDict[str, nn.Module] = OrderedDict()
    index = 0
    while index < len(items):
        name, module = items[index]
        following = items[index + 1][1] if index + 1 < len(items) else None
        if isinstance(module, FOLDABLE_TYPES) and following is not None and is_batchnorm(following):
            folded[name] = fold_batchnorm(module, following)
            index += 2
            continue
        if isinstance(module, nn.Sequential):
            folded[name] = fold_batchnorm_sequential(module)
        else:
            folded[name] = copy.deepcopy(module)
        index += 1
    result = nn.Sequential(folded)
    result.train(model.training)
    return result
