"""Recognize batch norm layers, torch's and bnlab's alike, inside any model."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.nn.modules import BatchNormBase

__all__ = ["is_batchnorm", "batchnorm_layers"]

BATCHNORM_TYPES: tuple[type, ...] = (_BatchNorm, BatchNormBase)


def is_batchnorm(module: nn.Module) -> bool:
    """True for ``torch.nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``, the lazy variants and every bnlab batch norm."""
    return isinstance(module, BATCHNORM_TYPES)


def batchnorm_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, layer) for every batch norm layer in ``model``, itself included, in module order."""
    for name, module in model.named_modules():
        if is_batchnorm(module):
            yield name, module
