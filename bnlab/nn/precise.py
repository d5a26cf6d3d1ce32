"""Precise batch norm (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", arXiv 2105.07576, Sec. 3).

The running statistics that training leaves behind are an exponential moving average (EMA) over recent
batches, computed while the weights were still changing: with a small momentum they lag behind the final
model, with a large one they are noisy. Precise BN freezes the trained weights and recomputes each layer's
population statistics from scratch over N batches with **equal weights**:

    running_mean = (1/N) * sum_k mean_k,      running_var = (1/N) * sum_k unbiased_var_k,

where mean_k and unbiased_var_k (m_k - 1 in the denominator) are the statistics that the layer's input has
in batch k, with the model in training mode (so every batch norm layer normalizes with batch statistics,
exactly as during training). Each batch counts once whatever its size. This is what a layer with
``momentum=None`` (cumulative average) computes after ``reset_running_stats()``, which is how it is done here,
for torch's layers and bnlab's alike (ghost layers average over their ghost batches within each batch).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from bnlab._validation import check_int
from bnlab.nn.find import batchnorm_layers
from bnlab.nn.freeze import is_frozen

__all__ = ["recompute_batchnorm_statistics"]


def _model_input(batch: Any) -> Any:
    """A batch is the model's input, or a (input, target, ...) tuple/list whose first item is the input."""
    if isinstance(batch, (tuple, list)):
        if not batch:
            raise ValueError("a batch given as a tuple or list must hold the model input first, got an empty one")
        return batch[0]
    return batch


@torch.no_grad()
def recompute_batchnorm_statistics(
    model: nn.Module, batches: Iterable[Any], num_batches: int | None = None
) -> int:
    """Replace every batch norm layer's running statistics by equal-weight averages over batches (precise BN).

    Args:
        model: any module holding batch norm layers (torch's or bnlab's). Layers frozen with
            :func:`~bnlab.nn.freeze_batchnorm` and layers without running statistics are left alone.
        batches: iterable of model inputs, or of (input, target, ...) tuples (e.g. a DataLoader).
        num_batches: use the first ``num_batches`` batches (all of them when None). Fewer available raises.

    Returns:
        The number of batches used.

    Afterwards every module's training flag and every layer's momentum and ``num_batches_tracked`` are what
    they were before; only ``running_mean`` and ``running_var`` changed. Parameters are not touched (no
    gradients are computed). If anything raises, the old running statistics are restored too.
    """
    if num_batches is not None:
        num_batches = check_int(num_batches, "num_batches", 1, kind="a positive integer or None (all batches)")
    layers = [layer for _, layer in batchnorm_layers(model)
              if layer.running_mean is not None and not is_frozen(layer)]
    if not layers:
        raise ValueError(f"recompute_batchnorm_statistics found no batch norm layer with running statistics "
                         f"(and not frozen) in {type(model).__name__}")

    modes = {module: module.training for module in model.modules()}
    saved = {layer: (layer.momentum, layer.num_batches_tracked.clone(), layer.running_mean.clone(),
                     layer.running_var.clone()) for layer in layers}
    used = 0
    try:
        for layer in layers:
            layer.reset_running_stats()
            layer.momentum = None  # cumulative average: batch k gets weight 1/k, i.e. all batches equal
        model.train()
        selected = batches if num_batches is None else itertools.islice(batches, num_batches)
        for batch in selected:
            model(_model_input(batch))
            used += 1
        if used == 0:
            raise ValueError("recompute_batchnorm_statistics needs at least one batch, got none")
        if num_batches is not None and used < num_batches:
            raise ValueError(f"recompute_batchnorm_statistics expected {num_batches} batches, got only {used}")
    except BaseException:
        for layer, (_, _, mean, var) in saved.items():
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
        raise
    finally:
        for layer, (momentum, count, _, _) in saved.items():
            layer.momentum = momentum
            layer.num_batches_tracked.copy_(count)
        for module, mode in modes.items():
            module.training = mode
    return used
