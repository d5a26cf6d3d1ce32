"""Lecture 2's computations: the numbers behind its figures, checked cells and forward explorer.

* :func:`forward_explorer`: one batch of two correlated features through the training forward, with the
  statistics and correlations of each stage (the dashboard's data).
* :func:`identity_recovery`: gamma = std, beta = mean undoes batch norm for the batch those statistics came
  from, not for the next one; with fixed (population) statistics it undoes it for every batch.
* :func:`eps_gain`: how much the forward amplifies a nearly constant feature, eps inside or outside the root.
* :func:`variance_precision`, :func:`sequential_float32_mean` and :func:`running_sum_drift`: float32
  statistics far from zero, and where a float32 running sum loses its accuracy; :func:`torch_output_std`:
  which batch shapes make PyTorch's CPU kernel meet that drift.
* :func:`batch_dependence`: one fixed example's training-mode output over many random batches.

Everything runs :func:`bnlab.functional.batchnorm_forward` (or a catalogued mistake from :mod:`bnlab.mistakes`)
on plain numpy data; nothing here re-implements the forward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bnlab._validation import check_eps, check_float, check_int, check_seed
from bnlab.functional import batchnorm_forward, batchnorm_inference
from bnlab.gradcheck import rel_error
from bnlab.mistakes import forward_with
from bnlab.numerics import one_pass_variance, two_pass_variance

__all__ = ["EXPLORER_POOL_SIZE", "BatchDependence", "ExplorerResult", "RunningSumDrift", "batch_dependence",
           "correlation", "eps_gain", "explorer_pool", "forward_explorer", "identity_recovery",
           "running_sum_drift", "sequential_float32_mean", "torch_output_std", "variance_precision"]

EXPLORER_POOL_SIZE = 1024  # the largest batch the explorer draws


# ------------------------------------------------------------------------------------ the forward explorer


def explorer_pool(size: int = EXPLORER_POOL_SIZE, seed: int = 0) -> np.ndarray:
    """Two correlated features, shape (size, 2): the examples the explorer's batches are drawn from.

    Feature 0 is skewed and large (a gamma distribution shifted by 10: mean 14, std about 2.8). Feature 1 is
    nearly constant (mean 5, std 0.03), so eps visibly matters once eps reaches about its variance 1e-3; its
    correlation with feature 0 is about 0.8.
    """
    size, seed = check_int(size, "size", 2), check_seed(seed)
    rng = np.random.default_rng(seed)
    skewed = rng.gamma(2.0, 2.0, size)
    standardized = (skewed - 4.0) / np.sqrt(8.0)  # the gamma(2, 2) distribution's mean 4 and variance 8
    small = 5.0 + 0.03 * (0.8 * standardized + 0.6 * rng.standard_normal(size))
    return np.stack([skewed + 10.0, small], axis=1)


def correlation(values: np.ndarray) -> float | None:
    """Pearson correlation of the two columns of ``values`` (m, 2); None if a column is constant."""
    centred = values - values.mean(axis=0)
    spread = np.sqrt((centred**2).sum(axis=0))
    if np.any(spread == 0):
        return None
    return float((centred[:, 0] * centred[:, 1]).sum() / (spread[0] * spread[1]))


@dataclass(frozen=True)
class ExplorerResult:
    """One batch through the training forward, stage by stage (all arrays (m, 2) or (2,)).

    ``stages`` maps ``"x"``, ``"xhat"``, ``"y"`` to the batch at that stage; ``mean``, ``std`` (population
    std, dividing by m) and ``corr`` (None where a feature is constant) describe each stage. ``gain`` is each
    feature's 1/sqrt(var + eps): how much the normalization multiplies a deviation from the mean.
    """

    gamma: np.ndarray
    beta: np.ndarray
    eps: float
    m: int
    stages: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    std: dict[str, np.ndarray]
    corr: dict[str, float | None]
    gain: np.ndarray


def forward_explorer(gamma: float = 1.0, beta: float = 0.0, eps: float = 1e-5, m: int = 64,
                     seed: int = 0) -> ExplorerResult:
    """The first ``m`` examples of :func:`explorer_pool` through :func:`bnlab.functional.batchnorm_forward`.

    ``gamma`` and ``beta`` are feature 0's; feature 1 keeps gamma = 1, beta = 0, so the two can be compared.
    Any finite gamma (including 0 and negative values) and beta are allowed; eps > 0; 2 <= m <= 1024.
    """
    gamma = check_float(gamma, "gamma", -math.inf)
    beta = check_float(beta, "beta", -math.inf)
    eps = check_eps(eps)
    m = check_int(m, "m", 2, kind=f"an integer in [2, {EXPLORER_POOL_SIZE}] (training-mode batch norm needs "
                                  "at least 2 values per feature)")
    if m > EXPLORER_POOL_SIZE:
        raise ValueError(f"m must be an integer in [2, {EXPLORER_POOL_SIZE}], got {m!r}")
    x = explorer_pool(EXPLORER_POOL_SIZE, seed)[:m]
    gammas, betas = np.array([gamma, 1.0]), np.array([beta, 0.0])
    y, cache = batchnorm_forward(x, gammas, betas, eps)
    stages = {"x": x, "xhat": cache.xhat, "y": y}
    return ExplorerResult(
        gamma=gammas, beta=betas, eps=eps, m=m, stages=stages,
        mean={name: values.mean(axis=0) for name, values in stages.items()},
        std={name: values.std(axis=0) for name, values in stages.items()},
        corr={name: correlation(values) for name, values in stages.items()},
        gain=cache.inv.reshape(-1))


# ------------------------------------------------------------------------------- gamma and beta as identity


def identity_recovery(m: int = 32, eps: float = 1e-5, seed: int = 0) -> dict[str, float]:
    """Relative errors of "BN with gamma = std, beta = mean gives back x", two batches A and B.

    Both batches, (m, 2), come from one population (means 3 and -1, stds 2 and 0.5).

    * ``"train A"``, ``"train B"``: training mode with gamma = sqrt(var_A + eps), beta = mu_A, the statistics
      of batch A. Exact on A; on B the output is B normalized with B's statistics and rescaled with A's.
    * ``"eval A"``, ``"eval B"``: inference mode with the population statistics as running statistics and
      gamma = sqrt(running_var + eps), beta = running_mean: a fixed affine map and its inverse, so every
      batch comes back.
    """
    m, eps, seed = check_int(m, "m", 2), check_eps(eps), check_seed(seed)
    rng = np.random.default_rng(seed)
    population_mean, population_var = np.array([3.0, -1.0]), np.array([4.0, 0.25])
    batch_a, batch_b = (population_mean + np.sqrt(population_var) * rng.standard_normal((2, m, 2)))

    _, cache_a = batchnorm_forward(batch_a, np.ones(2), np.zeros(2), eps)
    gamma, beta = cache_a.std.reshape(-1), cache_a.batch_mean  # A's statistics
    errors = {f"train {name}": rel_error(batchnorm_forward(batch, gamma, beta, eps)[0], batch)
              for name, batch in (("A", batch_a), ("B", batch_b))}

    gamma, beta = np.sqrt(population_var + eps), population_mean  # fixed statistics
    errors.update({f"eval {name}": rel_error(batchnorm_inference(batch, gamma, beta, population_mean,
                                                                 population_var, eps), batch)
                   for name, batch in (("A", batch_a), ("B", batch_b))})
    return errors


# -------------------------------------------------------------------------------------------- eps's gain


def eps_gain(spreads: np.ndarray, eps: float = 1e-5) -> dict[str, np.ndarray]:
    """Measured gain of the normalization for features holding the three values 1 - s, 1, 1 + s.

    For each spread s in ``spreads`` (K,) the gain is the output at 1 + s divided by the input deviation s,
    for the right forward (eps inside the root: 1/sqrt(var + eps), at most 1/sqrt(eps)) and the catalogued
    mistake ``eps_outside_sqrt`` (1/(std + eps), up to 1/eps). Returns ``{"std": (K,), "inside": (K,),
    "outside": (K,)}``, std being each feature's standard deviation s * sqrt(2/3).
    """
    spreads = np.asarray(spreads, dtype=np.float64).reshape(-1)
    if spreads.size == 0 or not np.all(spreads > 0) or not np.all(np.isfinite(spreads)):
        raise ValueError(f"spreads must be a non-empty array of positive finite numbers, got {spreads!r}")
    eps = check_eps(eps)
    x = np.stack([1 - spreads, np.ones_like(spreads), 1 + spreads])  # (3, K): one feature per spread
    inside = batchnorm_forward(x, np.ones(spreads.size), np.zeros(spreads.size), eps)[0][2]
    outside = forward_with("eps_outside_sqrt", x, eps=eps)[2]
    return {"std": spreads * np.sqrt(2 / 3), "inside": inside / spreads, "outside": outside / spreads}


# ------------------------------------------------------------------------------------ float32 statistics


def variance_precision(offsets: np.ndarray | None = None, n: int = 10_000,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """One-pass and two-pass float32 variances of n values of N(offset, 1), for each offset.

    The same n standard normal draws are shifted by every offset (default: 21 offsets from 1 to 1e5,
    log-spaced), the shifted data rounded to float32. Returns arrays of shape (K,): ``offsets``, ``exact``
    (float64 variance of the float32 data), ``one_pass`` and ``two_pass`` (:mod:`bnlab.numerics`, in float32),
    and their relative errors ``one_pass_error``, ``two_pass_error``.
    """
    offsets = np.logspace(0, 5, 21) if offsets is None else np.asarray(offsets, dtype=np.float64).reshape(-1)
    n, seed = check_int(n, "n", 2), check_seed(seed)
    noise = np.random.default_rng(seed).standard_normal((n, 1))
    exact, one_pass, two_pass = [], [], []
    for offset in offsets:
        x32 = (noise + offset).astype(np.float32)
        exact.append(float(x32.astype(np.float64).var()))
        one_pass.append(float(one_pass_variance(x32)[0]))
        two_pass.append(float(two_pass_variance(x32)[0]))
    exact_a, one_a, two_a = np.array(exact), np.array(one_pass), np.array(two_pass)
    return {"offsets": offsets, "exact": exact_a, "one_pass": one_a, "two_pass": two_a,
            "one_pass_error": np.abs(one_a - exact_a) / exact_a,
            "two_pass_error": np.abs(two_a - exact_a) / exact_a}


def sequential_float32_mean(x: np.ndarray) -> float:
    """Mean of x (any shape) summed the naive way: one float32 running sum, one addition after another.

    Once the running sum is large its float32 spacing is coarse (64 between 2^29 and 2^30), so each added
    value is rounded to a multiple of it and the errors accumulate. numpy's ``mean`` sums pairwise, and
    :mod:`bnlab.functional` in float64, which avoids this.
    """
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    return float(np.cumsum(flat, dtype=np.float32)[-1]) / flat.size


@dataclass(frozen=True)
class RunningSumDrift:
    """Where a plain float32 running sum loses accuracy: its rounding, grouped by the size of the sum.

    The additions are grouped by the running sum *before* each one, into the ranges ``[edges[k], edges[k+1])``
    (with 0 and infinity added at the ends). For range k: ``fraction[k]`` of all additions happened there,
    ``spacing[k]`` is float32's spacing at the range's start, ``typical_step[k]`` is the median amount one
    addition actually added, and ``mean_shift[k]`` is that range's summed rounding error divided by the number
    of values: its contribution to the error of the mean. ``mean`` is the running sum's mean and ``exact_mean``
    the float64 mean, so ``mean - exact_mean`` equals ``mean_shift.sum()`` (to float64 rounding).
    """

    edges: np.ndarray
    fraction: np.ndarray
    spacing: np.ndarray
    typical_step: np.ndarray
    mean_shift: np.ndarray
    mean: float
    exact_mean: float


def running_sum_drift(x: np.ndarray, edges: tuple[float, ...] = (2.0**28, 2.0**29)) -> RunningSumDrift:
    """Split the error of :func:`sequential_float32_mean` of x (any shape) by the size of the running sum.

    Each float32 addition rounds once, so its error is exactly ``new_sum - old_sum - value`` computed in
    float64. With ``edges = (2**28, 2**29)`` the ranges are below 2**28 (spacing up to 16), 2**28 to 2**29
    (spacing 32) and above 2**29 (spacing 64); the result arrays have one entry per range.
    """
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    if flat.size < 2:
        raise ValueError(f"x needs at least 2 values, got {flat.size}")
    inner = np.asarray(edges, dtype=np.float64).reshape(-1)
    if inner.size == 0 or np.any(inner <= 0) or np.any(np.diff(inner) <= 0):
        raise ValueError(f"edges must be increasing positive numbers, got {edges!r}")
    sums = np.cumsum(flat, dtype=np.float32).astype(np.float64)
    before = np.concatenate([[0.0], sums[:-1]])
    added = sums - before  # what each addition really added, exact in float64
    rounding = added - flat.astype(np.float64)
    bounds = np.concatenate([[0.0], inner, [np.inf]])
    group = np.searchsorted(inner, np.abs(before), side="right")  # range index of each addition
    fraction, spacing, typical, shift = [], [], [], []
    for k in range(bounds.size - 1):
        here = group == k
        fraction.append(here.mean())
        spacing.append(float(np.spacing(np.float32(bounds[k]))))
        typical.append(float(np.median(added[here])) if here.any() else float("nan"))
        shift.append(rounding[here].sum() / flat.size)
    return RunningSumDrift(edges=bounds, fraction=np.array(fraction), spacing=np.array(spacing),
                           typical_step=np.array(typical), mean_shift=np.array(shift),
                           mean=float(sums[-1]) / flat.size, exact_mean=float(flat.astype(np.float64).mean()))


def torch_output_std(shape: tuple[int, ...], offset: float = 1000.0, seed: int = 0) -> float:
    """Std of channel 0 of PyTorch's training-mode batch norm output on float32 N(offset, 1) data (1 is right).

    The data have ``shape`` (N, C, ...) and are the draws :func:`bnlab.numerics.torch_kernel_statistics` makes
    for as many rows, in the same order: ``(1_000_000, 1)`` and ``(256, 1, 64, 64)`` hold the same million
    values. ``torch.nn.functional.batch_norm`` runs with eps 1e-5, no gamma or beta, and torch's current thread
    count (the result depends on it when the kernel's float32 sums drift).
    """
    import torch
    import torch.nn.functional as F

    shape = tuple(check_int(n, "each entry of shape", 1) for n in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be (N, C) or (N, C, *spatial), got {shape!r}")
    offset, seed = check_float(offset, "offset", -math.inf), check_seed(seed)
    x = (np.random.default_rng(seed).standard_normal(shape) + offset).astype(np.float32)
    out = F.batch_norm(torch.from_numpy(x), None, None, training=True, eps=1e-5)
    return float(out[:, 0].double().std(unbiased=False))


# ------------------------------------------------------------------------------ batch dependence as noise


@dataclass(frozen=True)
class BatchDependence:
    """One example's training-mode output over random batches, for each batch size m.

    ``outputs[m]`` is (batches,): the output of the fixed example in each batch; ``spreads[m]`` its standard
    deviation; ``slope`` the least-squares slope of log(spread) against log(m) (-0.5 for 1/sqrt(m));
    ``population_output`` the example's output with population statistics (what eval mode gives).
    """

    x0: float
    outputs: dict[int, np.ndarray]
    spreads: dict[int, float]
    slope: float
    population_output: float


def batch_dependence(x0: float = 1.0, batch_sizes: tuple[int, ...] = (4, 16, 64, 256), batches: int = 4000,
                     eps: float = 1e-5, seed: int = 0) -> BatchDependence:
    """The training-mode output of one fixed example (value ``x0``) when its m - 1 batch-mates are random.

    Batch-mates are drawn from N(0, 1), so the example sits x0 population standard deviations above the
    mean, and with population statistics its output would be x0 / sqrt(1 + eps). For each m the draws form an
    (m, batches) array whose first row is the example: as a (N, C) input each column is one batch of one
    feature, so :func:`bnlab.functional.batchnorm_forward` normalizes every batch with its own statistics.
    """
    x0 = check_float(x0, "x0", -math.inf)
    sizes = tuple(check_int(m, "batch size", 2) for m in batch_sizes)
    if len(sizes) < 2:
        raise ValueError(f"batch_sizes needs at least two sizes to fit a slope, got {batch_sizes!r}")
    batches, eps = check_int(batches, "batches", 2), check_eps(eps)
    rng = np.random.default_rng(check_seed(seed))
    outputs = {}
    for m in sizes:
        batch = np.vstack([np.full((1, batches), x0), rng.standard_normal((m - 1, batches))])
        outputs[m] = batchnorm_forward(batch, np.ones(batches), np.zeros(batches), eps)[0][0]
    spreads = {m: float(out.std()) for m, out in outputs.items()}
    slope = float(np.polyfit(np.log(sizes), np.log([spreads[m] for m in sizes]), 1)[0])
    return BatchDependence(x0=x0, outputs=outputs, spreads=spreads, slope=slope,
                           population_output=x0 / math.sqrt(1 + eps))
