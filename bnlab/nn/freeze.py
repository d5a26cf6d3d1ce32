"""Freeze batch norm layers: running statistics only, no updates, no trained weight/bias.

After :func:`freeze_batchnorm(model) <freeze_batchnorm>` every batch norm layer in the model (torch's, bnlab's,
ghost included)

* normalizes with its running statistics, as in eval mode, in every forward;
* never updates ``running_mean``, ``running_var`` or ``num_batches_tracked``;
* has ``weight.requires_grad = bias.requires_grad = False`` (and their ``.grad`` cleared), so optimizers
  leave them alone;
* **stays frozen after** ``model.train()``: a forward pre-hook puts the layer back in eval mode right before
  each forward. Between ``model.train()`` and the next forward, ``layer.training`` reads True for that moment;
  the behaviour is frozen regardless. Use :func:`is_frozen` to ask.

The state dict is unchanged (same keys and values), so a frozen model saves and loads like any other.
This is the usual recipe for fine-tuning with small batches, where fresh batch statistics would be noise.
:func:`unfreeze_batchnorm` undoes it (weight/bias trainable again, mode follows the model).
Layers without running statistics (``track_running_stats=False``) cannot be frozen: that raises.
"""

from __future__ import annotations

from torch import nn

from bnlab.nn.find import batchnorm_layers

__all__ = ["freeze_batchnorm", "unfreeze_batchnorm", "is_frozen"]

_HOOK_ATTRIBUTE = "_bnlab_freeze_hook"


def _stay_in_eval_mode(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a frozen layer (a module-level function, so models still pickle)."""
    module.training = False


def is_frozen(module: nn.Module) -> bool:
    """True when ``module`` was frozen by :func:`freeze_batchnorm` (and not unfrozen since)."""
    return getattr(module, _HOOK_ATTRIBUTE, None) is not None


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """Freeze every batch norm layer in ``model`` (itself included) in place; returns ``model``.

    Raises ValueError, before changing anything, if a layer has no running statistics, or if the model holds
    no batch norm layer at all.
    """
    layers = list(batchnorm_layers(model))
    if not layers:
        raise ValueError(f"freeze_batchnorm found no batch norm layer in {type(model).__name__}")
    untracked = [name or "<model>" for name, layer in layers if layer.running_mean is None]
    if untracked:
        raise ValueError(f"freezing needs running statistics, but these batch norm layers have "
                         f"track_running_stats=False: {untracked}")
    for _, layer in layers:
        if is_frozen(layer):
            continue
        for param in (layer.weight, layer.bias):
            if param is not None:
                param.requires_grad_(False)
                param.grad = None
        layer.eval()
        setattr(layer, _HOOK_ATTRIBUTE, layer.register_forward_pre_hook(_stay_in_eval_mode))
    return model


def unfreeze_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`freeze_batchnorm`: weight/bias trainable, the layer's mode follows ``model.training``."""
    for _, layer in batchnorm_layers(model):
        handle = getattr(layer, _HOOK_ATTRIBUTE, None)
        if handle is None:
            continue
        handle.remove()
        delattr(layer, _HOOK_ATTRIBUTE)
        for param in (layer.weight, layer.bias):
            if param is not None:
                param.requires_grad_(True)
        layer.train(model.training)
    return model
