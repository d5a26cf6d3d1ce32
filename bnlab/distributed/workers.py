"""The functions lecture 13 and its tests run on every rank of a :class:`~bnlab.distributed.launcher.ProcessGroupPool`.

They live in a module because a spawned process can only run what it can import. Each is called with the same
arguments on every rank, takes its own share of the batch with :func:`rank_share` (``sizes[k]`` examples for
rank k, consecutive, in rank order) and returns plain data (numpy arrays, floats, dicts) that pickles back to
the notebook. Nothing here starts processes; :mod:`bnlab.distributed.launcher` does.

* :func:`local_statistics`: each rank's own per-channel mean and variance, and its share normalized by them.
* :func:`sync_forward_backward`: one forward and backward of a synchronized (or local) BN layer on the rank's
  share: output, input gradient, gamma/beta gradients, running statistics.
* :func:`torch_sync_batchnorm_probe`: what ``torch.nn.SyncBatchNorm`` does on CPU tensors inside a gloo group.
* :func:`data_parallel_step`, :func:`time_training_steps`: one data-parallel SGD step of an MLP; the median
  time of such steps with and without synchronized BN, and the all-reduce calls each makes
  (:func:`counting_all_reduce`).
* :func:`raise_on_rank`, :func:`sleep_on_rank`, :func:`process_id`: for showing and testing how the pool
  ends its processes.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from bnlab.distributed.sync_bn import SyncBatchNorm, convert_to_sync_batchnorm

__all__ = [
    "AllReduceLog",
    "bn_mlp",
    "check_sizes",
    "counting_all_reduce",
    "data_parallel_step",
    "local_statistics",
    "process_id",
    "raise_on_rank",
    "rank_share",
    "share_statistics",
    "sleep_on_rank",
    "sync_forward_backward",
    "time_training_steps",
    "torch_sync_batchnorm_probe",
]


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_sizes(sizes: Sequence[int], batch: int, world_size: int) -> tuple[int, ...]:
    """``sizes`` must give every rank a number of examples >= 0, adding up to the batch."""
    sizes = tuple(sizes)
    if (len(sizes) != world_size or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0
                                        for s in sizes) or sum(sizes) != batch):
        raise ValueError(f"sizes must give each of the {world_size} ranks a count of examples >= 0, adding up to "
                         f"the batch of {batch}; got {sizes!r}")
    return tuple(int(s) for s in sizes)


def rank_share(x: Any, sizes: Sequence[int]) -> Any:
    """This rank's consecutive share ``x[start:start + sizes[rank]]`` of a batch split by ``sizes``."""
    rank, world = _rank_and_world()
    sizes = check_sizes(sizes, len(x), world)
    start = sum(sizes[:rank])
    return x[start:start + sizes[rank]]


def _numpy(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().cpu().numpy().copy()


# ----------------------------------------------------------------------------------------- the statistics


def share_statistics(share: torch.Tensor) -> dict[str, Any]:
    """What batch norm on ``share`` (N_k, C, ...) alone computes: ``{"count", "mean", "var", "out"}``, the
    values per channel, the per-channel mean and **biased** variance (C,), and the share normalized by them
    (training mode, gamma = 1, beta = 0, eps 1e-5), as plain ``torch.nn.BatchNorm`` does on each process of a
    data-parallel run. No communication: the same function serves a rank and the single-process twin
    (:func:`bnlab.lessons.distributed.split_statistics`)."""
    dims = (0,) + tuple(range(2, share.dim()))
    layer = SyncBatchNorm(share.shape[1], synchronize=False, dtype=share.dtype, affine=False,
                          track_running_stats=False)
    with torch.no_grad():
        out = layer(share)
    return {"count": share.numel() // share.shape[1], "mean": _numpy(share.mean(dims)),
            "var": _numpy(share.var(dims, correction=0)), "out": _numpy(out)}


def local_statistics(x: torch.Tensor, sizes: Sequence[int]) -> dict[str, Any]:
    """:func:`share_statistics` of this rank's share of ``x`` (N, C, ...), with ``{"rank"}``."""
    return {"rank": _rank_and_world()[0], **share_statistics(rank_share(x, sizes))}


def sync_forward_backward(x: torch.Tensor, dout: torch.Tensor, sizes: Sequence[int], weight: torch.Tensor,
                          bias: torch.Tensor, synchronize: bool = True, momentum: float = 0.1,
                          eps: float = 1e-5) -> dict[str, Any]:
    """One training-mode forward and backward of a :class:`SyncBatchNorm` layer on this rank's share.

    Args:
        x: the whole batch (N, C) or (N, C, *spatial); the rank uses ``rank_share(x, sizes)``; its dtype is the
            layer's.
        dout: (shape of x) upstream gradient of the whole batch; the rank uses its share.
        sizes: examples per rank.
        weight, bias: (C,) gamma and beta.
        synchronize: False: each rank's own statistics (the control).

    Returns ``{"out", "dx"}`` (the rank's share), ``{"dgamma", "dbeta"}`` (C,) over the rank's examples only,
    and ``{"running_mean", "running_var", "num_batches_tracked"}`` after the step.
    """
    share, upstream = rank_share(x, sizes), rank_share(dout, sizes)
    layer = SyncBatchNorm(x.shape[1], eps=eps, momentum=momentum, synchronize=synchronize, dtype=x.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    inputs = share.clone().requires_grad_()
    out = layer(inputs)
    out.backward(upstream)
    return {"out": _numpy(out), "dx": _numpy(inputs.grad), "dgamma": _numpy(layer.weight.grad),
            "dbeta": _numpy(layer.bias.grad), "running_mean": _numpy(layer.running_mean),
            "running_var": _numpy(layer.running_var), "num_batches_tracked": int(layer.num_batches_tracked)}


def torch_sync_batchnorm_probe(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor
                               ) -> dict[str, Any]:
    """What ``torch.nn.SyncBatchNorm`` does with CPU tensors inside this gloo process group.

    Returns ``{"train_error"}`` (the exception of a training-mode forward, as "Type: message", or None if it
    ran) and ``{"kernel_error"}`` (the first sentence of the error of ``torch.batch_norm_stats``, the kernel its
    training forward computes the local statistics with), both on the rank's part of an even split of ``x``;
    and ``{"eval_out"}``: its eval-mode output on the whole ``x`` with the given running statistics (eval mode
    needs no communication), next to ``{"plain_eval_out"}`` of ``torch.nn.BatchNorm1d``'s eval mode with the same
    running statistics.
    """
    _, world = _rank_and_world()
    c = x.shape[1]
    base, extra = divmod(len(x), world)
    half = rank_share(x, [base + (k < extra) for k in range(world)])  # this rank's part of an even split
    layer = torch.nn.SyncBatchNorm(c, dtype=x.dtype)
    try:
        layer(half)
        train_error = None
    except Exception as error:  # noqa: BLE001 - the error is the result
        train_error = f"{type(error).__name__}: {error}"
    try:
        torch.batch_norm_stats(half, 1e-5)
        kernel_error = None
    except Exception as error:  # noqa: BLE001
        kernel_error = f"{type(error).__name__}: {str(error).split(' backend.')[0]} backend."
    layer.eval()
    plain = torch.nn.BatchNorm1d(c, dtype=x.dtype).eval()
    with torch.no_grad():
        for module in (layer, plain):
            module.running_mean.copy_(running_mean)
            module.running_var.copy_(running_var)
        eval_out, plain_out = layer(x), plain(x)
    return {"train_error": train_error, "kernel_error": kernel_error, "eval_out": _numpy(eval_out),
            "plain_eval_out": _numpy(plain_out)}


# ------------------------------------------------------------------------------------ data-parallel steps


@dataclass
class AllReduceLog:
    """What :func:`counting_all_reduce` saw: per call, the tensor's number of elements and the seconds spent
    inside the call (waiting for the other ranks included). ``len(log)`` is the number of calls."""

    numels: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.numels)


@contextlib.contextmanager
def counting_all_reduce() -> Iterator[AllReduceLog]:
    """Count and time the calls of ``torch.distributed.all_reduce`` in this process while the block runs.

    Yields an :class:`AllReduceLog` that fills as calls are made. Works because :mod:`bnlab.distributed.sync_bn`
    and the training step here look the function up on the ``torch.distributed`` module at each call.
    """
    log = AllReduceLog()
    original = dist.all_reduce

    def counted(tensor, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(tensor, *args, **kwargs)
        finally:
            log.seconds.append(time.perf_counter() - start)
            log.numels.append(int(tensor.numel()))

    dist.all_reduce = counted
    try:
        yield log
    finally:
        dist.all_reduce = original


def bn_mlp(depth: int, width: int, seed: int, synchronize: bool | None, dtype: torch.dtype) -> torch.nn.Module:
    """A ReLU MLP with batch norm before each ReLU (:func:`bnlab.models.build_mlp`); its BN layers become
    :class:`SyncBatchNorm` (``synchronize`` True or False) or stay ``torch.nn.BatchNorm1d`` (None)."""
    from bnlab.models import build_mlp

    model = build_mlp(depth=depth, width=width, activation="relu", norm="batch", seed=seed).to(dtype)
    return model if synchronize is None else convert_to_sync_batchnorm(model, synchronize=synchronize)


def _sgd_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, total: int, lr: float) -> float:
    """One data-parallel SGD step on this rank's share (x, y) of a batch of ``total`` examples.

    The loss is the rank's summed cross-entropy divided by ``total``, so that the ranks' gradients add up to
    the gradient of the mean loss over the whole batch; one all-reduce (sum) of all parameter gradients
    flattened into one tensor (what DDP does in buckets) adds them; every rank then takes the same step.
    Returns the rank's loss contribution.
    """
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y, reduction="sum") / total
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(flat)
    with torch.no_grad():
        offset = 0
        for p in params:
            p -= lr * flat[offset:offset + p.numel()].view_as(p)
            offset += p.numel()
    return loss.item()


def data_parallel_step(x: torch.Tensor, y: torch.Tensor, sizes: Sequence[int], synchronize: bool | None = True,
                       depth: int = 3, width: int = 100, lr: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """One data-parallel SGD step of a depth x width ReLU+BN MLP (:func:`bnlab.models.build_mlp`, seed
    ``seed``, in x's dtype) on the batch (x (N, D), y (N,)), rank k taking ``sizes[k]`` of its examples.

    ``synchronize``: True (:class:`SyncBatchNorm`), False (each rank's own statistics) or None (torch's
    ``BatchNorm1d``; called in a single process this is the full-batch reference). Returns ``{"loss"}`` (the
    rank's share of the mean loss) and ``{"state"}``: the model's state dict after the step, as numpy arrays.
    """
    _, world = _rank_and_world()
    total = sum(check_sizes(sizes, len(x), world))
    model = bn_mlp(depth, width, seed, synchronize, x.dtype).train()
    loss = _sgd_step(model, rank_share(x, sizes), rank_share(y, sizes), total, lr)
    return {"loss": loss, "state": {k: _numpy(v) for k, v in model.state_dict().items()}}


def time_training_steps(x: torch.Tensor, y: torch.Tensor, sizes: Sequence[int], repeats: int = 30,
                        warmup: int = 5, depth: int = 3, width: int = 100, lr: float = 0.01,
                        seed: int = 0) -> dict[str, Any]:
    """Median time of one data-parallel training step (x's dtype) with synchronized BN and with local BN.

    Both variants are the same :class:`SyncBatchNorm` code on the same model and data (the MLP of
    :func:`data_parallel_step`, ``sizes[k]`` examples of (x, y) on rank k), with and without its all-reduces; both
    all-reduce the parameter gradients once per step. The two alternate step by step (so both see the same
    background load), each step starting after a barrier; the time spent inside all-reduce calls is logged
    for every step (:func:`counting_all_reduce`). Also counts the all-reduce calls of one step of each (forward
    alone, and the whole step) and times bare all-reduces of the three sizes a step sends: a backward pair (2 *
    width), a statistics table (W (2 * width + 1)) and all parameter gradients.

    Returns ``{"ms": {"sync": [...], "local": [...]}}`` (this rank's step times in ms, ``repeats`` each),
    ``{"collective_ms": {...}}`` (the time of each of those steps spent inside all-reduce calls),
    ``{"calls": {"sync": (forward, step), "local": (forward, step)}}``, ``{"numels": {...}}`` (elements per call
    of one step), ``{"bare_ms": {numel: median ms}}`` (bare all-reduces of those three sizes),
    ``{"all_reduce_ms"}`` (the table's entry of it) and ``{"bn_layers"}``.
    """
    _, world = _rank_and_world()
    total = sum(check_sizes(sizes, len(x), world))
    x, y = rank_share(x, sizes), rank_share(y, sizes)
    models = {"sync": bn_mlp(depth, width, seed, True, x.dtype).train(),
              "local": bn_mlp(depth, width, seed, False, x.dtype).train()}
    bn_layers = sum(isinstance(m, SyncBatchNorm) for m in models["sync"].modules())

    calls, numels = {}, {}
    for name, model in models.items():
        with counting_all_reduce() as forward_calls, torch.no_grad():
            model(x)
        with counting_all_reduce() as step_calls:
            _sgd_step(model, x, y, total, lr)
        calls[name], numels[name] = (len(forward_calls), len(step_calls)), step_calls.numels

    times: dict[str, list[float]] = {name: [] for name in models}
    inside: dict[str, list[float]] = {name: [] for name in models}
    for index in range(warmup + repeats):
        for name, model in models.items():
            dist.barrier()
            with counting_all_reduce() as log:
                start = time.perf_counter()
                _sgd_step(model, x, y, total, lr)
                elapsed = time.perf_counter() - start
            if index >= warmup:
                times[name].append(1e3 * elapsed)
                inside[name].append(1e3 * sum(log.seconds))

    parameters = sum(p.numel() for p in models["sync"].parameters())
    bare_ms = {}
    for numel in (2 * width, world * (2 * width + 1), parameters):   # a backward pair, a table, the gradients
        tensor, bare = torch.zeros(numel, dtype=x.dtype), []
        for index in range(warmup + repeats):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(tensor)
            if index >= warmup:
                bare.append(1e3 * (time.perf_counter() - start))
        bare_ms[numel] = statistics.median(bare)
    return {"ms": times, "collective_ms": inside, "calls": calls, "numels": numels,
            "all_reduce_ms": bare_ms[world * (2 * width + 1)], "bare_ms": bare_ms, "bn_layers": bn_layers}


# -------------------------------------------------------------------------- for the pool's failure handling


def raise_on_rank(rank: int, message: str = "a deliberate failure") -> int:
    """Raise ``ValueError(message)`` on rank ``rank``; the other ranks return their process id."""
    if _rank_and_world()[0] == rank:
        raise ValueError(message)
    return os.getpid()


def sleep_on_rank(rank: int | None, seconds: float) -> int:
    """Sleep ``seconds`` on rank ``rank`` (every rank when None), as a hung worker would; return the pid."""
    if rank is None or _rank_and_world()[0] == rank:
        time.sleep(seconds)
    return os.getpid()


def process_id() -> int:
    """This rank's process id."""
    return os.getpid()
