"""Drive two batch norm modules through the same sequence of training and eval steps and compare everything.

Used by lecture 6 to show that ``bnlab.nn.BatchNorm1d/2d`` match ``torch.nn.BatchNorm1d/2d``, and by the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DEFAULT_STEPS: tuple[tuple[str, int], ...] = (("train", 8), ("train", 3), ("eval", 5), ("train", 16), ("eval", 1),
                                              ("train", 2))


def channel_batch(shape: Sequence[int], generator: torch.Generator, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A batch of ``shape`` (N, C, ...) whose channels have different means and scales."""
    channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    scale = torch.rand(channel, generator=generator, dtype=dtype) * 3 + 0.5
    offset = torch.rand(channel, generator=generator, dtype=dtype) * 10 - 5
    return torch.randn(tuple(shape), generator=generator, dtype=dtype) * scale + offset


def compare_modules(
    ours: nn.Module,
    theirs: nn.Module,
    sample_shape: Sequence[int],
    steps: Sequence[tuple[str, int]] = DEFAULT_STEPS,
    seed: int = 0,
) -> dict[str, float]:
    """Largest absolute differences between two batch norm modules over a train/eval sequence.

    Both modules must have the same dtype and ``num_features == sample_shape[0]``. Each step sets the mode,
    feeds the same batch of ``(n,) + sample_shape`` and the same random upstream gradient, and compares the
    outputs, the input gradients, the parameter gradients and every buffer.

    Returns:
        ``{"output": ..., "grad input": ..., "grad weight": ..., "grad bias": ..., "running_mean": ...,
        "running_var": ..., "num_batches_tracked": ...}`` (entries for absent parameters/buffers omitted).
    """
    generator = torch.Generator().manual_seed(seed)
    dtype = next(iter(theirs.state_dict().values())).dtype
    worst: dict[str, float] = {}

    def note(name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        worst[name] = max(worst.get(name, 0.0), (a.double() - b.double()).abs().max().item())

    for mode, n in steps:
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = channel_batch((n, *sample_shape), generator, dtype)
        upstream = torch.randn(x.shape, generator=generator, dtype=dtype)
        results = []
        for module in (ours, theirs):
            x_in = x.clone().requires_grad_()
            out = module(x_in)
            params = [p for p in (module.weight, module.bias) if p is not None]
            grads = torch.autograd.grad(out, [x_in, *params], upstream)
            results.append((out.detach(), grads))
        (out_a, grads_a), (out_b, grads_b) = results
        note("output", out_a, out_b)
        for name, ga, gb in zip(("grad input", "grad weight", "grad bias"), grads_a, grads_b):
            note(name, ga, gb)
        state_a, state_b = ours.state_dict(), theirs.state_dict()
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            if key in state_b:
                note(key, state_a[key], state_b[key])
    return worst
