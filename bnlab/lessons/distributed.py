"""The numbers lecture 13 states: batch norm on a batch split over processes, against the full batch.

The processes come from a :class:`~bnlab.distributed.launcher.ProcessGroupPool`; what runs on them is in
:mod:`bnlab.distributed.workers`. The functions here prepare the inputs, call the pool, and compare what the
ranks return with batch norm on the whole (concatenated) batch computed in this process by
``torch.nn.BatchNorm1d/2d``, the reference.

Conventions: ``sizes[k]`` is the number of examples rank k holds (consecutive, in rank order); a *share* is
one rank's part of the batch; *local* statistics are a rank's own, *global* ones those of the whole batch. An
error between two arrays is :func:`bnlab.gradcheck.rel_error`: the largest absolute difference relative to the
larger array's largest magnitude.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bnlab._validation import check_int
from bnlab.distributed import workers
from bnlab.distributed.launcher import ProcessGroupPool
from bnlab.gradcheck import rel_error

__all__ = [
    "LocalStatistics",
    "StepCosts",
    "compare_with_full_batch",
    "data_parallel_agreement",
    "even_sizes",
    "example_tensors",
    "first_layer_inputs",
    "full_batch_reference",
    "local_statistics",
    "mnist_batch",
    "predicted_mean_spread",
    "predicted_var_ratio",
    "probe_torch_sync_batchnorm",
    "split_statistics",
    "spread_by_share",
    "sync_batchnorm_kernels_on_cpu",
    "training_step_costs",
]


# ------------------------------------------------------------------------------------------------ inputs


def mnist_batch(size: int = 64, seed: int = 0, dtype: torch.dtype = torch.float64
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` training examples of the course's MNIST subset in a seeded order: x (size, 784), y (size,)."""
    from bnlab.data import load_mnist_subset

    size = check_int(size, "size", 2)
    data = load_mnist_subset()
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(seed))[:size]
    return data.x_train[order].to(dtype), data.y_train[order]


def first_layer_inputs(x: torch.Tensor, seed: int = 0, width: int = 100) -> torch.Tensor:
    """(N, width) the inputs of the first batch norm of the untrained 3 x ``width`` ReLU+BN MLP of seed ``seed``
    (:func:`bnlab.models.build_mlp`): ``x @ W1.T`` for the batch ``x`` (N, 784), in x's dtype."""
    from bnlab.models import build_mlp

    model = build_mlp(depth=3, width=width, activation="relu", norm="batch", seed=seed).to(x.dtype)
    with torch.no_grad():
        return model.hidden1.linear(x)


def even_sizes(total: int, world_size: int) -> tuple[int, ...]:
    """``total`` examples over ``world_size`` ranks as evenly as possible (the first ranks get the extra)."""
    total, world_size = check_int(total, "total", 0), check_int(world_size, "world_size", 1)
    base, extra = divmod(total, world_size)
    return tuple(base + (k < extra) for k in range(world_size))


def example_tensors(shape: tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, dout, weight, bias) for a gradient comparison: x of ``shape`` with a different mean and scale per
    channel (so a wrong reduction axis shows), a random upstream gradient (never all ones, which makes the
    true dx zero), gamma in [0.5, 1.5) and a random beta."""
    generator = torch.Generator().manual_seed(seed)
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    offset = torch.linspace(-3.0, 3.0, c, dtype=torch.float64).view(view)
    scale = torch.linspace(0.5, 2.0, c, dtype=torch.float64).view(view)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * scale + offset
    dout = torch.randn(shape, generator=generator, dtype=torch.float64)
    weight = torch.rand(c, generator=generator, dtype=torch.float64) + 0.5
    bias = torch.randn(c, generator=generator, dtype=torch.float64)
    return x.to(dtype), dout.to(dtype), weight.to(dtype), bias.to(dtype)


# ------------------------------------------------------------------------------------- local statistics


@dataclass(frozen=True)
class LocalStatistics:
    """Each rank's own statistics of its share, next to the full batch's.

    Attributes:
        sizes: (W,) examples per rank.
        counts: (W,) values per channel per rank (examples times spatial positions).
        mean, var: (W, C) each rank's per-channel mean and biased variance.
        full_mean, full_var: (C,) the whole batch's.
        out: (N, C, ...) the ranks' shares normalized by their own statistics, concatenated in rank order.
    """

    sizes: tuple[int, ...]
    counts: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    full_mean: np.ndarray
    full_var: np.ndarray
    out: np.ndarray

    def mean_deviation(self) -> np.ndarray:
        """(W, C) how far each rank's mean is from the full batch's, in full-batch standard deviations."""
        return (self.mean - self.full_mean) / np.sqrt(self.full_var)

    def var_ratio(self) -> np.ndarray:
        """(W, C) each rank's variance over the full batch's."""
        return self.var / self.full_var

    def rms_mean_deviation(self) -> np.ndarray:
        """(W,) root mean square over the channels of :meth:`mean_deviation`."""
        return np.sqrt(np.mean(self.mean_deviation() ** 2, axis=1))

    def mean_var_ratio(self) -> float:
        """Mean over ranks and channels of :meth:`var_ratio` (to compare with :func:`predicted_var_ratio`)."""
        return float(np.mean(self.var_ratio()))

    def weighted_deviation_sum(self) -> np.ndarray:
        """(C,) ``sum_k n_k (mean_k - mean) / (n * std)``: 0 up to rounding, since the full mean is the
        count-weighted mean of the ranks' means."""
        return (self.counts[:, None] * self.mean_deviation()).sum(0) / self.counts.sum()


def _assemble(x: torch.Tensor, sizes: Sequence[int], answers: Sequence[dict[str, Any]]) -> LocalStatistics:
    """A :class:`LocalStatistics` from the shares' :func:`~bnlab.distributed.workers.share_statistics`."""
    dims = (0,) + tuple(range(2, x.dim()))
    return LocalStatistics(sizes=tuple(sizes), counts=np.array([a["count"] for a in answers], dtype=np.float64),
                           mean=np.stack([a["mean"] for a in answers]).astype(np.float64),
                           var=np.stack([a["var"] for a in answers]).astype(np.float64),
                           full_mean=x.mean(dims).double().numpy(),
                           full_var=x.var(dims, correction=0).double().numpy(),
                           out=np.concatenate([a["out"] for a in answers]))


def local_statistics(pool: ProcessGroupPool, x: torch.Tensor, sizes: Sequence[int]) -> LocalStatistics:
    """Run :func:`bnlab.distributed.workers.local_statistics` on every rank and compare with the full batch."""
    return _assemble(x, sizes, pool.run(workers.local_statistics, x, tuple(sizes)))


def split_statistics(x: torch.Tensor, sizes: Sequence[int]) -> LocalStatistics:
    """The single-process twin of :func:`local_statistics`: the same per-share computation
    (:func:`bnlab.distributed.workers.share_statistics`) on consecutive shares of ``sizes[k]`` examples, in this
    process, for any number of shares (what the dashboard explores without starting processes)."""
    sizes = workers.check_sizes(sizes, len(x), len(sizes))
    starts = np.cumsum((0, *sizes))
    return _assemble(x, sizes, [workers.share_statistics(x[a:b]) for a, b in itertools.pairwise(starts)])


def predicted_mean_spread(share: int, total: int) -> float:
    """Root mean square of (mean of ``share`` values - mean of all ``total``) / (std of all ``total``) when the
    share is drawn at random from the batch without replacement: ``sqrt((N - n) / (n (N - 1)))``.

    (The variance of a sample mean without replacement is sigma^2 / n * (N - n) / (N - 1), with sigma^2 the
    batch's variance computed with N - 1; with the biased sigma^2 of batch norm the factor is (N - n) / (n (N - 1)).)
    """
    share, total = check_int(share, "share", 1), check_int(total, "total", 2)
    if share > total:
        raise ValueError(f"share must be at most total ({total}), got {share}")
    return math.sqrt((total - share) / (share * (total - 1)))


def predicted_var_ratio(share: int, total: int) -> float:
    """Expected (biased) variance of ``share`` values drawn at random without replacement from ``total``, over
    the (biased) variance of all ``total``: ``(n - 1) / n * N / (N - 1)``; below 1, so small shares normalize
    with too small a variance on average (1/2 for a pair from a large batch)."""
    share, total = check_int(share, "share", 1), check_int(total, "total", 2)
    if share > total:
        raise ValueError(f"share must be at most total ({total}), got {share}")
    return (share - 1) / share * total / (total - 1)


def spread_by_share(x: torch.Tensor, shares: Sequence[int], splits: int = 50, seed: int = 0) -> dict[int, float]:
    """``{n: measured RMS mean deviation}`` for a share of n examples, over ``splits`` random splits of ``x`` into
    two shares (n, N - n), computed in this process (:func:`split_statistics`, the same per-share computation as
    the ranks'; each split is a seeded random permutation of the batch, then consecutive shares).

    Both shares of every split are pooled (``splits`` x C values for n and as many for N - n). With two shares
    ``n d_0 = -(N - n) d_1`` exactly, so the ratio measured / predicted is the same for n and N - n: the
    returned values for N - n are not independent of those for n.
    """
    total = len(x)
    generator = torch.Generator().manual_seed(seed)
    out: dict[int, list[float]] = {}
    for share in shares:
        for _ in range(check_int(splits, "splits", 1)):
            order = torch.randperm(total, generator=generator)
            deviations = split_statistics(x[order], (share, total - share)).mean_deviation()
            out.setdefault(share, []).extend(deviations[0] ** 2)
            out.setdefault(total - share, []).extend(deviations[1] ** 2)
    return {n: float(np.sqrt(np.mean(v))) for n, v in sorted(out.items())}


# --------------------------------------------------------------------------- synchronized vs full batch


def full_batch_reference(x: torch.Tensor, dout: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                         momentum: float = 0.1, eps: float = 1e-5) -> dict[str, np.ndarray]:
    """One training step of ``torch.nn.BatchNorm1d`` (2-D/3-D x) or ``BatchNorm2d`` (4-D) on the whole batch:
    ``{"out", "dx", "dgamma", "dbeta", "running_mean", "running_var"}`` as numpy arrays in x's dtype."""
    layer_type = torch.nn.BatchNorm2d if x.dim() == 4 else torch.nn.BatchNorm1d
    layer = layer_type(x.shape[1], eps=eps, momentum=momentum, dtype=x.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    inputs = x.clone().requires_grad_()
    out = layer(inputs)
    out.backward(dout)
    return {"out": out.detach().numpy(), "dx": inputs.grad.numpy(), "dgamma": layer.weight.grad.numpy(),
            "dbeta": layer.bias.grad.numpy(), "running_mean": layer.running_mean.numpy(),
            "running_var": layer.running_var.numpy()}


QUANTITIES = ("out", "dx", "dgamma", "dbeta", "running_mean", "running_var")


def compare_with_full_batch(pool: ProcessGroupPool, x: torch.Tensor, dout: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor, sizes: Sequence[int], synchronize: bool = True
                            ) -> dict[str, float]:
    """Errors of one forward and backward of batch norm on the ranks' shares against the full batch.

    Returns ``{quantity: rel_error}`` for ``out`` and ``dx`` (the ranks' shares concatenated), ``dgamma`` and
    ``dbeta`` (summed over the ranks, as the data-parallel gradient all-reduce sums them) and
    ``running_mean``/``running_var`` after the step (the worst rank's: every rank keeps its own copy). With
    ``synchronize=False`` the ranks use their own statistics: the control.
    """
    answers = pool.run(workers.sync_forward_backward, x, dout, tuple(sizes), weight, bias, synchronize)
    reference = full_batch_reference(x, dout, weight, bias)
    got = {"out": np.concatenate([a["out"] for a in answers]), "dx": np.concatenate([a["dx"] for a in answers]),
           "dgamma": sum(a["dgamma"] for a in answers), "dbeta": sum(a["dbeta"] for a in answers)}
    errors = {name: rel_error(got[name], reference[name]) for name in got}
    for name in ("running_mean", "running_var"):
        errors[name] = max(rel_error(a[name], reference[name]) for a in answers)
    return errors


def data_parallel_agreement(pool: ProcessGroupPool, x: torch.Tensor, y: torch.Tensor, sizes: Sequence[int],
                            synchronize: bool = True, lr: float = 0.1) -> dict[str, float]:
    """One data-parallel SGD step of the 3 x 100 ReLU+BN MLP (seed 0) against one step on the whole batch.

    Returns ``{"update": e, "beta_update": e, "running_var": e}``: the error of the parameter update (after
    minus before, all parameters flattened together), of the update of the BN layers' beta alone (their
    ``norm.bias``), and of the BN layers' running variances (the worst rank's), against the same step taken in
    this process on the whole batch with ``torch.nn.BatchNorm1d``.
    """
    answers = pool.run(workers.data_parallel_step, x, y, tuple(sizes), synchronize, lr=lr)
    reference = workers.data_parallel_step(x, y, (len(x),), None, lr=lr)["state"]
    before = {k: v.detach().numpy() for k, v in workers.bn_mlp(3, 100, 0, None, x.dtype).state_dict().items()}
    params = [k for k in reference if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]

    betas = [k for k in params if k.endswith("norm.bias")]

    def update(state: dict[str, np.ndarray], names: Sequence[str] = tuple(params)) -> np.ndarray:
        return np.concatenate([(state[k] - before[k]).ravel() for k in names])

    variances = [k for k in reference if k.endswith("running_var")]
    return {"update": max(rel_error(update(a["state"]), update(reference)) for a in answers),
            "beta_update": max(rel_error(update(a["state"], betas), update(reference, betas)) for a in answers),
            "running_var": max(rel_error(np.concatenate([a["state"][k] for k in variances]),
                                         np.concatenate([reference[k] for k in variances])) for a in answers)}


# ------------------------------------------------------------------------------- torch's SyncBatchNorm


def probe_torch_sync_batchnorm(pool: ProcessGroupPool, x: torch.Tensor) -> dict[str, Any]:
    """What ``torch.nn.SyncBatchNorm`` does with CPU tensors: inside the pool's gloo group (training mode: its
    error; its CUDA kernel on CPU: its error; eval mode: error against ``torch.nn.BatchNorm1d``'s eval mode with
    the same running statistics), and in this process,
    outside any group, in training mode (error against ``torch.nn.BatchNorm1d`` on the same batch).

    Returns ``{"train_error", "kernel_error", "eval_error", "outside_group_error"}`` (rank 0's messages; the two
    errors are ``rel_error`` values).
    """
    c = x.shape[1]
    generator = torch.Generator().manual_seed(0)
    running_mean = torch.randn(c, generator=generator, dtype=x.dtype)
    running_var = torch.rand(c, generator=generator, dtype=x.dtype) + 0.5
    answer = pool.run(workers.torch_sync_batchnorm_probe, x, running_mean, running_var)[0]
    sync, plain = torch.nn.SyncBatchNorm(c, dtype=x.dtype), torch.nn.BatchNorm1d(c, dtype=x.dtype)
    with torch.no_grad():
        outside = rel_error(sync(x).numpy(), plain(x).numpy())
    return {"train_error": answer["train_error"], "kernel_error": answer["kernel_error"],
            "eval_error": rel_error(answer["eval_out"], answer["plain_eval_out"]),
            "outside_group_error": outside}


def sync_batchnorm_kernels_on_cpu() -> dict[str, str | None]:
    """``{kernel: error or None}`` for the five kernels ``torch.nn.SyncBatchNorm``'s autograd Function is built
    from, each called on small CPU tensors: the exception's type for one that has no CPU implementation
    (``"NotImplementedError"``), None for one that ran."""
    x, mean, invstd = torch.randn(4, 3), torch.zeros(3), torch.ones(3)
    counts = torch.tensor([4], dtype=torch.int32)
    calls = {
        "batch_norm_stats": lambda: torch.batch_norm_stats(x, 1e-5),
        "batch_norm_gather_stats_with_counts": lambda: torch.batch_norm_gather_stats_with_counts(
            x, mean[None], invstd[None], None, None, 0.1, 1e-5, counts.to(x.dtype)),
        "batch_norm_elemt": lambda: torch.batch_norm_elemt(x, None, None, mean, invstd, 1e-5),
        "batch_norm_backward_reduce": lambda: torch.batch_norm_backward_reduce(x, x, mean, invstd, None, True,
                                                                               True, True),
        "batch_norm_backward_elemt": lambda: torch.batch_norm_backward_elemt(x, x, mean, invstd, None, mean, mean,
                                                                             counts),
    }
    out: dict[str, str | None] = {}
    for name, call in calls.items():
        try:
            call()
            out[name] = None
        except Exception as error:  # noqa: BLE001 - the error is the result
            out[name] = type(error).__name__
    return out


# ----------------------------------------------------------------------------------------------- cost


@dataclass(frozen=True)
class StepCosts:
    """Timing and communication of a data-parallel training step, with synchronized and with local BN.

    Attributes:
        ms: ``{"sync": (R,), "local": (R,)}`` rank 0's step times in milliseconds (the ranks wait for each other
            in every all-reduce, so rank 1's are alike).
        collective_ms: ``{"sync": (R,), "local": (R,)}`` the part of each of those steps spent inside
            all-reduce calls (transfer, and waiting for the other rank to arrive).
        calls: ``{"sync": (forward, step), "local": (forward, step)}`` all-reduce calls of one forward pass and
            of one whole step (forward, backward, gradient all-reduce, update).
        numels: elements of each all-reduce call of one synchronized step, in order.
        local_numels: the same for a step with local BN (the parameter gradients only).
        bn_layers: batch norm layers in the model.
        all_reduce_ms: median time of one bare all-reduce of one layer's statistics table.
        bare_ms: ``{numel: median ms}`` of bare all-reduces (back to back, after a barrier each) of a backward
            pair (2C), a statistics table (W(2C + 1)) and all parameter gradients: latency against size.
    """

    ms: dict[str, np.ndarray]
    collective_ms: dict[str, np.ndarray]
    calls: dict[str, tuple[int, int]]
    numels: tuple[int, ...]
    local_numels: tuple[int, ...]
    bn_layers: int
    all_reduce_ms: float
    bare_ms: dict[int, float]

    def median_ms(self, variant: str) -> float:
        return float(statistics.median(self.ms[variant]))

    def median_outside_ms(self, variant: str) -> float:
        """Median over the steps of the time spent outside all-reduce calls (computing)."""
        return float(np.median(self.ms[variant] - self.collective_ms[variant]))

    def median_inside_ms(self, variant: str) -> float:
        """Median over the steps of the time spent inside all-reduce calls."""
        return float(np.median(self.collective_ms[variant]))

    def ratio(self) -> float:
        """Median step time with synchronized BN over the median with local BN."""
        return self.median_ms("sync") / self.median_ms("local")

    def extra_inside_share(self) -> float:
        """Of the extra median step time of synchronized BN, the share spent inside all-reduce calls:
        (inside, sync - inside, local) / (step, sync - step, local)."""
        extra = self.median_ms("sync") - self.median_ms("local")
        return (self.median_inside_ms("sync") - self.median_inside_ms("local")) / extra

    def extra_numels(self) -> list[int]:
        """Sizes of the all-reduce calls a synchronized step makes beyond those of a local one (the BN layers')."""
        remaining = list(self.numels)
        for n in self.local_numels:
            remaining.remove(n)
        return remaining

    def measured_extra_ms(self) -> float:
        """Median step time with synchronized BN minus the median with local BN."""
        return self.median_ms("sync") - self.median_ms("local")

    def predicted_extra_ms(self) -> float:
        """The extra time that synchronizing alone would explain: for each extra call, the median time of a bare
        all-reduce of its size."""
        return float(sum(self.bare_ms[n] for n in self.extra_numels()))

    def calls_per_bn_layer(self) -> tuple[float, float]:
        """(forward, whole step): extra all-reduce calls of synchronized BN per BN layer."""
        forward = (self.calls["sync"][0] - self.calls["local"][0]) / self.bn_layers
        step = (self.calls["sync"][1] - self.calls["local"][1]) / self.bn_layers
        return forward, step


def training_step_costs(pool: ProcessGroupPool, x: torch.Tensor, y: torch.Tensor, sizes: Sequence[int],
                        repeats: int = 30, warmup: int = 5) -> StepCosts:
    """Run :func:`bnlab.distributed.workers.time_training_steps` (float32) on the pool."""
    answers = pool.run(workers.time_training_steps, x.float(), y, tuple(sizes), repeats, warmup)
    first = answers[0]
    return StepCosts(ms={k: np.asarray(v) for k, v in first["ms"].items()},
                     collective_ms={k: np.asarray(v) for k, v in first["collective_ms"].items()},
                     calls={k: tuple(v) for k, v in first["calls"].items()}, numels=tuple(first["numels"]["sync"]),
                     local_numels=tuple(first["numels"]["local"]),
                     bn_layers=int(first["bn_layers"]), all_reduce_ms=float(first["all_reduce_ms"]),
                     bare_ms={int(n): float(ms) for n, ms in first["bare_ms"].items()})
