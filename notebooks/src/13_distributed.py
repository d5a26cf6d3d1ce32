# %% [markdown]
# # Lecture 13 — Beyond one device: batch norm across processes
#
# **Learning goals.** After this lecture you can
# 1. start a few CPU processes joined by `torch.distributed` (gloo) from a notebook, run a function on each,
#    and say why that function must live in a module and how the processes are always ended;
# 2. measure how far each process's own ("local") batch statistics are from the statistics of the whole batch,
#    predict that distance from sampling, and recognize local statistics as lecture 8's ghost batch norm;
# 3. derive synchronized batch norm: combine the processes' counts, means and squared deviations exactly (the
#    parallel variance of Chan et al.), and find the two sums the backward needs from every process;
# 4. check that synchronized BN equals batch norm on the concatenated batch to float precision, forward,
#    backward and running statistics, with equal and unequal shares, and that a whole data-parallel SGD step
#    equals the full-batch step;
# 5. say what `torch.nn.SyncBatchNorm` does on a CPU, and why;
# 6. count what synchronizing costs in collective calls, and measure it in time.
#
# **Prerequisites.** [Lecture 4](04_closed_form.ipynb) (the closed-form backward and its two sums),
# [lecture 5](05_inference.ipynb) (running statistics, the unbiased running variance),
# [lecture 6](06_pytorch_layer.ipynb) (batch norm as an `autograd.Function`, matching `torch.nn.BatchNorm`),
# [lecture 8](08_batch_size.ipynb) (the normalization batch, ghost batch norm).
#
# **The setting.** Data-parallel training splits every SGD batch over several workers (GPUs, or here processes),
# each with a copy of the model. Plain `torch.nn.BatchNorm` in each copy normalizes with the statistics of that
# worker's share only. Here: **two processes** on this machine, one torch thread each, joined by
# `torch.distributed` with the gloo backend (CPU tensors over local sockets). The data are the inputs of the first
# batch norm of the untrained 3×100 ReLU+BN MLP of seed 0 on 64 MNIST training digits (100 channels), and, for the
# gradient checks, random inputs of shape (64, 100) and (8, 3, 4, 4) with a different mean and scale per
# channel. **Varied:** how the batch is split between the two processes (32 + 32, 24 + 40, 3 + 5, ...),
# synchronized or local statistics, float64 or float32 (and, in the explorer of section 2, which computes in
# the notebook's own process, the number of shares and their size). **Held fixed:** the data, the model, the
# seeds. The reference is always PyTorch's `torch.nn.BatchNorm1d/2d` applied to the whole batch in the
# notebook's own process.
#
# **How numbers are printed**: a checked line shows a value and, in brackets, the bound it must stay under;
# rounding-level errors print as an order of magnitude ("below 1e-14", "< 1e-06"). Timings are never checked.

# %%
import os

import numpy as np
import torch
import torch.nn.functional as F

import bnlab.notebook
from bnlab.distributed import workers
from bnlab.distributed.launcher import ProcessGroupPool, WorkerError, process_running
from bnlab.distributed.sync_bn import SyncBatchNormFunction
from bnlab.gradcheck import rel_error
from bnlab.lessons.distributed import (compare_with_full_batch, data_parallel_agreement, example_tensors,
                                      first_layer_inputs, local_statistics, mnist_batch, predicted_mean_spread,
                                      predicted_var_ratio, probe_torch_sync_batchnorm, split_statistics,
                                      spread_by_share, sync_batchnorm_kernels_on_cpu, training_step_costs)
from bnlab.nn import ghost_batch_norm
from bnlab.plots.distributed import plot_agreement, plot_local_statistics, plot_step_costs
from bnlab.report import bracketed, each_within, within
from bnlab.widgets.distributed import LocalStatisticsDashboard

bnlab.notebook.setup()
x_digits, y_digits = mnist_batch(64)      # 64 MNIST training digits (float64) and their labels
z = first_layer_inputs(x_digits)          # (64, 100): what the first batch norm of the MLP sees

# %% [markdown]
# ## 1. Starting processes from a notebook
#
# `ProcessGroupPool(2)` starts two Python processes and keeps them for the whole lecture (starting one costs a
# fresh interpreter and an `import torch`, a few seconds; everything after that takes milliseconds):
#
# - **spawn, not fork.** Each process is a fresh interpreter. Forking a Jupyter kernel, with its threads and an
#   initialized torch, is unsafe. The price: a spawned process cannot see anything defined in this notebook, so
#   the function it runs must be importable. The course's live in `bnlab.distributed.workers`; a function
#   defined in a cell is refused with an error saying so.
# - **rendezvous.** The processes must find each other. The pool binds a small key-value store
#   (`torch.distributed.TCPStore`) to 127.0.0.1 and port 0, so the operating system picks a free port, and keeps
#   it bound while the pool lives. Each process connects to it (with `MASTER_ADDR=127.0.0.1` and `MASTER_PORT`
#   set, the conventional names) and calls `init_process_group("gloo", rank=k, world_size=2)`. The process with
#   rank $k$ then takes part in *collectives*: `all_reduce(t)` replaces the tensor `t` in every process by the
#   sum over all processes, and returns only when every process has called it.
# - **every rank runs the same call**, `pool.run(f, *args)`, and the pool returns the ranks' return values
#   in rank order. A function finds its rank with `torch.distributed.get_rank()` and takes its share of the
#   batch: `sizes[k]` consecutive examples for rank $k$.
# - **the processes always end.** Closing the pool (or leaving a `with` block, or the kernel exiting) stops
#   them. A rank that raises, a rank that does not answer within a timeout, and an interrupt of the kernel all
#   close the pool and end every process (section 7 shows one).

# %%
pool = ProcessGroupPool(2)   # two ranks; a few seconds
pool

# %% [markdown]
# ## 2. Each process sees half the batch: local statistics
#
# Split the 64 digits into two shares of 32, one per process, and let each compute the per-channel mean and
# (biased) variance of its share, as plain batch norm does in each copy of a data-parallel model.
#
# How far should a share's mean $\bar x_k$ be from the batch's mean $\mu$? If the $n$ examples of a share are a
# random subset of the $N$ examples of the batch (the batch is shuffled, so they are), sampling without
# replacement gives
#
# $$ \mathrm{E}\big[(\bar x_k - \mu)^2\big] = \frac{\sigma^2}{n}\cdot\frac{N - n}{N - 1}, \qquad
#    \text{so} \qquad \text{RMS of } \frac{\bar x_k - \mu}{\sigma} = \sqrt{\frac{N-n}{n(N-1)}} , $$
#
# with $\sigma^2$ the batch's biased variance: for $n = 32$ of $N = 64$, $\sqrt{32/(32\cdot 63)} = 0.126$
# standard deviations. And because $\mu$ is the count-weighted mean of the shares' means,
# $\sum_k n_k(\bar x_k - \mu) = 0$ exactly: with two equal shares, one rank's error is the other's, mirrored.
#
# **What to look for.** (a) The two ranks' mean deviations per channel, mirror images; (b) their variances
# relative to the batch's; (c) for shares of every size $n$ (the other rank gets $64 - n$), the measured RMS
# deviation against the formula, over the 100 channels and 50 random splits of the 64 digits per size (computed
# in the notebook's process by `split_statistics`, the ranks' own per-share function; section "Explore" below).

# %%
local = local_statistics(pool, z, (32, 32))
spread = spread_by_share(z, (2, 4, 8, 16, 24, 32), splits=50)   # shares n and 64 - n: 2, 4, ..., 60, 62
plot_local_statistics(local, spread, total=64);

# %%
# NBVAL_CHECK_OUTPUT
rms = local.rms_mean_deviation()
print(f"RMS over channels of (mean_k - mean)/std, ranks 0 and 1: {each_within(rms, 0.09, 0.17, digits=3)}; "
      f"predicted {predicted_mean_spread(32, 64):.3f}")
largest = np.abs(local.mean_deviation()).max()
print(f"largest |mean_k - mean|/std over channels: {bracketed(largest, 0.2, 0.6, digits=2)}")
print(f"var_k / var over channels and ranks: {local.var_ratio().min():.2f} to {local.var_ratio().max():.2f} "
      f"(lowest {bracketed(local.var_ratio().min(), high=0.8, digits=2)}, "
      f"highest {bracketed(local.var_ratio().max(), low=1.2, digits=3)})")
print(f"sum_k n_k (mean_k - mean) / (n std), largest over channels: "
      f"{within(np.abs(local.weighted_deviation_sum()).max(), 1e-12)}")
independent = [n for n in sorted(spread) if n <= 32]   # n and 64 - n give the same ratio (see below)
ratios = [spread[n] / predicted_mean_spread(n, 64) for n in independent]
print(f"measured / predicted RMS, 50 random splits each, n = {', '.join(str(n) for n in independent)}:\n  "
      f"{each_within(ratios, 0.9, 1.1)}")
print(f"n = 24 and 64 - n = 40 give the same ratio: difference "
      f"{within(abs(spread[24] / predicted_mean_spread(24, 64) - spread[40] / predicted_mean_spread(40, 64)), 1e-12)}")
print(f"RMS at n = 4: {bracketed(spread[4], 0.4, 0.6, digits=2)}, predicted {predicted_mean_spread(4, 64):.2f}")

# %% [markdown]
# What to notice:
#
# - A share of 32 misplaces each channel's mean by about an eighth of a standard deviation (RMS; a third at
#   worst), and its variance lies between 0.56 and 1.38 times the batch's.
# - The sampling formula predicts the size of the mean's error: over 50 random splits per size, panel (c) follows
#   it from shares of 2 to shares of 62, measured 0.98 to 1.03 times the prediction. Only the six sizes up to 32
#   are independent numbers: with two shares, $n\,(\bar x_0 - \mu) = -(64-n)(\bar x_1 - \mu)$ exactly, so $n$
#   and $64 - n$ give the same ratio by construction (and a single split per size, as a first version of this
#   lecture used, leaves each number to one draw of the batch's order). A share of 4 misplaces the mean by about
#   0.48 standard deviations.
# - Nothing is lost on average: the two ranks' deviations cancel exactly (weighted by the counts). But each
#   rank *normalizes with its own*, so the same digit gets a different output depending on which process holds
#   it and with whom.
#
# How different? The outputs of the two local normalizations, against batch norm on all 64:

# %%
# NBVAL_CHECK_OUTPUT
full = F.batch_norm(z, None, None, training=True).numpy()          # batch norm on the whole batch
difference = np.abs(local.out - full)
print(f"|local BN output - full-batch BN output|: median {bracketed(np.median(difference), 0.03, 0.2, digits=2)}, "
      f"largest {bracketed(difference.max(), 0.3, 1.5, digits=2)}")
ghost = ghost_batch_norm(z, 32, None, None).numpy()                  # lecture 8, in this one process
print(f"local BN on 2 processes vs ghost BN with ghost batches of 32 on the whole batch: "
      f"{within(rel_error(local.out, ghost), 1e-12)}")

# %% [markdown]
# Local statistics on two processes are exactly lecture 8's ghost batch norm with a normalization batch of 32:
# the same arithmetic, split over processes instead of over slices of one tensor. So everything lecture 8 found
# about the normalization batch applies: what counts for batch norm is the number of examples *per process*,
# not the SGD batch. Sixteen workers with 2 examples each, whatever the SGD batch of 32 suggests: for an MLP
# they normalize pairs (lecture 8's failing case, where every output is $\pm 1$); for images, each channel's
# statistics cover $2\cdot H\cdot W$ values, correlated but more than two, which is the regime of the GroupNorm
# paper's "images per GPU" figure: there BN at 2 images per GPU degrades (34.7% ImageNet error against 23.6% at
# 32) without collapsing as pairs do (question 1 works out the difference).
#
# ### Explore: $W$ processes with $n$ examples each
#
# Because local statistics *are* a split of one batch, they can be explored without starting processes: the
# dashboard below splits $N = Wn$ digits into $W$ consecutive shares of $n$ in the notebook's own process (the
# same per-share function the ranks run) and shows every rank's and channel's mean deviation and variance
# ratio. Besides the mean's error, it shows a bias of the variance: a share's biased variance is on average
#
# $$ \mathrm E\big[\sigma_k^2\big] = \frac{n-1}{n}\cdot\frac{N}{N-1}\,\sigma^2 , $$
#
# below the batch's (for a pair from a large batch, half of it): a small share is stretched, its outputs given
# unit variance although its values spread less than the batch's. Try $n = 2$ with many processes, and the same
# $n$ with $W = 2$: which of the two numbers sets the size of the errors?

# %%
explorer = LocalStatisticsDashboard(processes=2, per_process=32)
explorer

# %%
# NBVAL_CHECK_OUTPUT
for world, share in ((2, 32), (64, 32), (16, 4), (64, 2)):
    split = split_statistics(first_layer_inputs(mnist_batch(world * share)[0]), (share,) * world)
    total = world * share
    rms_ratio = np.sqrt(np.mean(split.mean_deviation() ** 2)) / predicted_mean_spread(share, total)
    var_ratio = split.mean_var_ratio() / predicted_var_ratio(share, total)
    print(f"W = {world:2d}, n = {share:2d} (N = {total:4d}): RMS mean deviation "
          f"{np.sqrt(np.mean(split.mean_deviation() ** 2)):.3f}, predicted {predicted_mean_spread(share, total):.3f} "
          f"(ratio {bracketed(rms_ratio, 0.8, 1.2, digits=3)}); mean var_k/var {split.mean_var_ratio():.3f}, "
          f"predicted {predicted_var_ratio(share, total):.3f} (ratio {bracketed(var_ratio, 0.8, 1.2, digits=3)})")

# %% [markdown]
# Both predictions hold, from pairs to shares of 32. At $n = 32$, going from 2 to 64 processes raises the RMS
# error from 0.13 to 0.18 and no further: as $N$ grows it tends to $1/\sqrt n$ ($0.177$ for $n = 32$) and the
# variance factor to $(n-1)/n$. Shares of 4 and of 2 are off by about half and seven tenths of a standard
# deviation, whatever the number of processes. The examples per process set the size of the errors; the number
# of processes, and with it the SGD batch, hardly matter.
#
# ## 3. Synchronized statistics
#
# To normalize with the whole batch's statistics, the processes must exchange something. Per channel, rank $k$
# holds $n_k$ values (examples times spatial positions; $n_k$ may differ between ranks, and may be 0). It
# computes, from its own values only,
#
# $$ n_k, \qquad s_k = \sum_{i\in k} x_i, \qquad M_k = \sum_{i \in k}(x_i - \bar x_k)^2, \qquad
#    \bar x_k = s_k / n_k . $$
#
# **Combining them exactly.** With $n = \sum_k n_k$ and $\mu = \frac1n\sum_k s_k$, split each value's deviation
# from $\mu$ at its rank's mean: $x_i - \mu = (x_i - \bar x_k) + (\bar x_k - \mu)$. Squared and summed over rank
# $k$'s values, the cross term is $2(\bar x_k - \mu)\sum_{i\in k}(x_i - \bar x_k) = 0$, so
#
# $$ \sum_{i\in k} (x_i - \mu)^2 = M_k + n_k(\bar x_k - \mu)^2, \qquad
#    M = \sum_k M_k + \sum_k n_k(\bar x_k - \mu)^2, \qquad \sigma^2 = \frac{M}{n} . $$
#
# This is the parallel variance of Chan, Golub & LeVeque (1979). Every term is a sum of squares: nothing cancels,
# so it is as accurate as two passes over the concatenated batch. Two tempting shortcuts are wrong:
# $\sum_k M_k$ alone misses the spread *between* the ranks' means (the second sum), and adding up $\sum x^2$
# over the ranks is the one-pass $\mathrm E[x^2] - \mathrm E[x]^2$, which cancels catastrophically in float32
# far from zero (lecture 2).
#
# **One all-reduce.** The combination needs each rank's $(n_k, s_k, M_k)$, not only their sums. Each rank writes
# its numbers into *its own row* of a $(W, 2C + 1)$ table of zeros ($W$ ranks, $C$ channels) and all-reduces the
# table: a sum of tables that are zero except one row hands every rank every row. (PyTorch's `SyncBatchNorm`
# does the same with an `all_gather` of each rank's mean, $1/\text{std}$ and count.) Every rank then computes
# the same $\mu$ and $\sigma^2$, normalizes its own share, and moves its running statistics towards $\mu$ and
# the **unbiased** $M/(n-1)$ (lecture 5), so the copies of the buffers stay identical.
#
# **The backward.** Lecture 4's closed form, per channel, with $s = \sqrt{\sigma^2 + \epsilon}$ and
# $\delta = \partial L/\partial y$:
#
# $$ \frac{\partial L}{\partial x_i} = \frac{\gamma}{n\,s}\Big(n\,\delta_i - \sum_{\text{all}} \delta
#    - \hat x_i \sum_{\text{all}} \delta\,\hat x\Big). $$
#
# Rank $k$ has its own $\delta_i$ and $\hat x_i$; the only things it lacks are the two sums over the **whole**
# batch. Each rank sums over its share, and one all-reduce of the $(2, C)$ pair adds them up. The parameter
# gradients $\partial L/\partial\gamma = \sum \delta\hat x$ and $\partial L/\partial\beta = \sum\delta$ stay
# per rank, like every other parameter gradient: data-parallel training all-reduces the parameter gradients
# anyway (DDP does), and summing them here as well would count them twice.
#
# Here is the whole `autograd.Function`; with `group="local"` the same code skips both all-reduces (local BN).

# %%
bnlab.notebook.show_source(SyncBatchNormFunction)

# %% [markdown]
# ## 4. Synchronized batch norm equals batch norm on the whole batch
#
# Each rank runs one forward and backward of the layer on its share (`workers.sync_forward_backward`): the
# outputs and input gradients, concatenated in rank order, are compared with `torch.nn.BatchNorm1d/2d` on the
# whole batch, and so are $\partial L/\partial\gamma$ and $\partial L/\partial\beta$ summed over the ranks and
# each rank's running statistics after the step. The error is the largest absolute difference relative to the
# largest magnitude (`rel_error`). The control: the same layer with local statistics.
#
# **What to look for.** Green bars (synchronized) at the machine epsilon of their dtype, red bars (local) many
# orders of magnitude higher, except one.

# %%
settings = {                     # label: (shape, dtype, shares, synchronize)
    "sync, float64, 32 + 32": ((64, 100), torch.float64, (32, 32), True),
    "sync, float64, 24 + 40": ((64, 100), torch.float64, (24, 40), True),
    "sync, float64, (8, 3, 4, 4), 3 + 5": ((8, 3, 4, 4), torch.float64, (3, 5), True),
    "sync, float32, 24 + 40": ((64, 100), torch.float32, (24, 40), True),
    "sync, float32, (8, 3, 4, 4), 3 + 5": ((8, 3, 4, 4), torch.float32, (3, 5), True),
    "local, float64, 32 + 32 (control)": ((64, 100), torch.float64, (32, 32), False),
}
errors = {label: compare_with_full_batch(pool, *example_tensors(shape, dtype), sizes, synchronize)
          for label, (shape, dtype, sizes, synchronize) in settings.items()}
plot_agreement(errors);

# %%
# NBVAL_CHECK_OUTPUT
for label, each in errors.items():
    if label.startswith("sync"):
        bound = 1e-12 if "float64" in label else 1e-5
        print(f"{label:36s} largest of the 6 errors {within(max(each.values()), bound)}")
control = errors["local, float64, 32 + 32 (control)"]
print("local statistics (control):          "
      + ", ".join(f"{q} {bracketed(control[q], low=0.05, digits=2)}" for q in ("out", "dx", "dgamma")))
print("                                     "
      + ", ".join(f"{q} {bracketed(control[q], low=0.05, digits=2)}" for q in ("running_mean", "running_var")))
print(f"                                     dbeta {within(control['dbeta'], 1e-12)}")

# %% [markdown]
# What to notice:
#
# - Synchronized BN agrees with the full batch to rounding in float64 (errors of order $10^{-16}$, the machine
#   epsilon is $2.2\cdot 10^{-16}$) and to float32's rounding in float32, in every quantity: shares of unequal
#   size (24 + 40), a 4-D input whose statistics run over examples and positions (3 + 5 images of 4×4, 48 and
#   80 values per channel), the running mean and the unbiased running variance.
# - Local statistics are off by 11–25% of the largest value in the output, the input gradient,
#   $\partial L/\partial\gamma$ and the running mean and variance. Not in $\partial L/\partial\beta = \sum\delta$:
#   **for a given upstream gradient** $\delta$ it does not involve the statistics at all, so any split gives the
#   same sum. (A check of the isolated layer that looked only at $\partial L/\partial\beta$ would pass local BN.)
#   In a network $\delta$ itself comes from the layers above, which see the locally normalized outputs: there even
#   the $\beta$ update differs (next cell).
#
# ### A whole data-parallel SGD step
#
# The layer is one piece; the claim that matters is that a data-parallel step with synchronized BN **is** the
# full-batch step. Each rank runs the 3×100 ReLU+BN MLP of seed 0 (in float64) on its share of the 64 digits,
# with the loss $\frac1N\sum_{i\in k}\ell_i$ (its examples' share of the **mean over all $N$** examples), one
# all-reduce of all parameter gradients, and one SGD step ($\eta = 0.1$). The reference is the same model
# trained one step on all 64 digits in this process with `torch.nn.BatchNorm1d`. Shares 24 + 40:

# %%
# NBVAL_CHECK_OUTPUT
for synchronize in (True, False):
    step = data_parallel_agreement(pool, x_digits, y_digits, (24, 40), synchronize=synchronize)
    if synchronize:
        print(f"synchronized BN: parameter update {within(step['update'], 1e-12)}, "
              f"running variances {within(step['running_var'], 1e-12)}")
    else:
        print(f"local BN:        parameter update {bracketed(step['update'], low=0.05, digits=2)}, "
              f"running variances {bracketed(step['running_var'], low=1e-3, digits=2)}")
        print(f"                 update of the BN layers' beta alone {bracketed(step['beta_update'], low=0.05, digits=2)}")

# %% [markdown]
# With synchronized BN the two processes take exactly the full-batch step; with local BN the update is off by
# about a third of its size, and the update of the three BN layers' $\beta$ by about half: inside a network the
# upstream gradient $\delta$ of a BN layer depends on the statistics it (and the layers above) normalized with. Note the loss: had each rank used the mean over its *own* examples and the
# gradients been averaged over the ranks (what DDP does), the 24 examples of rank 0 would weigh $40/24$ times
# as much as those of rank 1. With equal shares the two are the same.
#
# And the running statistics: with local BN each rank's copy follows its own shares, so the copies drift apart.
# PyTorch's `DistributedDataParallel` hides this with `broadcast_buffers=True`, its default: at the start of
# every forward it overwrites every rank's buffers with rank 0's. The "local" running statistics of a DDP run are
# therefore rank 0's: an average over rank 0's shares only, moved by one share per step. Synchronized BN needs no
# broadcast: every rank's copy is already the full batch's.
#
# ## 5. `torch.nn.SyncBatchNorm` on a CPU
#
# PyTorch ships synchronized batch norm as `torch.nn.SyncBatchNorm`. Inside this process group, with CPU tensors:

# %%
# NBVAL_CHECK_OUTPUT
probe = probe_torch_sync_batchnorm(pool, z)
print(f"training mode, inside the gloo group:  {probe['train_error']}")
print(f"its statistics kernel on a CPU tensor: {probe['kernel_error']}")
kernels = sync_batchnorm_kernels_on_cpu()
missing = [name for name, error in kernels.items() if error == "NotImplementedError"]
print(f"its kernels without a CPU implementation: {len(missing)} of {len(kernels)} ({', '.join(missing)})")
print(f"eval mode, inside the group, against torch.nn.BatchNorm1d's eval mode: {within(probe['eval_error'], 1e-12)}")
print(f"training mode, in the notebook (no process group), against torch.nn.BatchNorm1d: "
      f"{within(probe['outside_group_error'], 1e-12)}")

# %% [markdown]
# It refuses, for two reasons, one behind the other. Its `forward` checks the device and accepts CUDA (and a few
# other accelerators: `hpu`, `xpu`, a registered private backend), never `cpu`. Behind the check, none of the
# five kernels it is built from (`batch_norm_stats` for the local mean and $1/\text{std}$,
# `batch_norm_gather_stats_with_counts` to combine the ranks' rows, `batch_norm_elemt` to normalize, and
# `batch_norm_backward_reduce`/`_elemt` for the backward) has a CPU implementation in torch 2.13: without the
# check it would fail at its first kernel. It *runs* wherever it does not synchronize: in eval mode
# (running statistics, no communication) and outside any process group, where it falls back to
# `F.batch_norm`; there it gives the same numbers as ordinary batch norm.
#
# Its algorithm is the one of section 3 (read in `torch/nn/modules/_functions.py`): in the forward, every rank's
# (mean, $1/\text{std}$, count) gathered to every rank with one `all_gather` (our table) and combined with the
# counts as weights; in the backward, one `all_reduce` of $\sum\delta$ and $\sum\delta\,(x-\mu)$, which is our
# $\sum\delta\hat x$ times $s$; and it leaves $\partial L/\partial\gamma$ and $\partial L/\partial\beta$ to DDP.
# Our `SyncBatchNorm` is that design in plain tensor operations instead of five GPU kernels, so it runs on the
# CPU.
#
# ## 6. What it costs
#
# Synchronized BN adds collectives: wrap `torch.distributed.all_reduce` with a counter and run one training
# step of the 3×100 MLP (3 BN layers) with synchronized and with local statistics. Then time steps of the two,
# alternating step by step (after a barrier each) so both see the same background load, float32, 32 + 32
# digits: 30 repeats each after 5 warm-up steps.
#
# **What to look for.** (a) every repeat's step time (dots), and the medians of the time spent outside and inside
# the all-reduce calls (bars); (b) where the all-reduce calls come from.

# %%
costs = training_step_costs(pool, x_digits, y_digits, (32, 32))
plot_step_costs(costs);

# %%
# NBVAL_CHECK_OUTPUT
forward, step = costs.calls_per_bn_layer()
print(f"all-reduce calls, one forward pass: synchronized {costs.calls['sync'][0]}, local {costs.calls['local'][0]}")
print(f"all-reduce calls, one training step: synchronized {costs.calls['sync'][1]}, local {costs.calls['local'][1]} "
      f"(the parameter gradients)")
print(f"extra calls per BN layer: {forward:.0f} in the forward, {step:.0f} per training step")
print(f"numbers per call of a synchronized step: {', '.join(str(n) for n in costs.numels)}")

# %%
# not checked: timings (this machine, this run)
print(f"median step: synchronized {costs.median_ms('sync'):.2f} ms, local {costs.median_ms('local'):.2f} ms; "
      f"ratio {costs.ratio():.2f}")
print("bare all-reduce, back to back (median): "
      + ", ".join(f"{n:,} numbers {ms:.3f} ms" for n, ms in sorted(costs.bare_ms.items())))
extra = costs.extra_numels()
print(f"extra time of a synchronized step: measured {costs.measured_extra_ms():.2f} ms; predicted from the "
      f"{len(extra)} extra calls x their bare all-reduce time {costs.predicted_extra_ms():.2f} ms")
print(f"time outside the calls (computing): synchronized {costs.median_outside_ms('sync'):.2f} ms, local "
      f"{costs.median_outside_ms('local'):.2f} ms; share of the extra time inside the calls "
      f"{costs.extra_inside_share():.2f}")
print(f"machine load while this ran (1-minute load average, 2 cores): {os.getloadavg()[0]:.1f}")

# %% [markdown]
# What to notice:
#
# - **Calls.** One all-reduce per BN layer in the forward (the statistics table, $2\cdot(2\cdot 100 + 1) = 402$
#   numbers) and one in the backward (the two sums, 200 numbers): two per layer and training step, six for this
#   MLP, on top of the one all-reduce of all 100,010 parameter gradients that data-parallel training makes
#   anyway. The messages do not grow with the batch: $W(2C + 1)$ and $2C$ numbers per layer, whatever the
#   shares.
# - **Latency, not bandwidth.** A bare all-reduce of 200 numbers and one of 402 take about the same time (0.3
#   to 0.5 ms in the runs made while writing this, never more than 0.06 ms apart), and one of all 100,010
#   gradients, 250 to 500 times as many numbers, only a few times as long (1.4 to 7 times in those runs): at the
#   sizes batch norm sends, a call costs its fixed latency (both processes meeting and exchanging a message), not
#   the bytes it carries.
# - **Time.** The six extra calls times their bare cost is the extra time synchronizing itself explains, about 2
#   to 3 ms. The measured extra time of a step has come out two to eight times larger in the runs made while
#   writing this (3.7 to 16 ms), nearly all of it inside the calls (the share printed): a call
#   inside a step is also where the rank that arrives first waits for the other, and on a busy machine the other
#   may be waiting for a core. The computing part grows a little too (the table and Chan's combination are a few
#   more small tensor operations per layer).
# - **This machine, this run.** The timings are measured while other jobs may share the machine's two cores
#   (the load average printed above; above 2, some process is always waiting for a core), and a process that
#   is not running cannot reach a meeting point: take the times and the ratio as this run's, not as a property
#   of synchronized BN; none of them is checked. The count of calls and their sizes are exact. (The course's
#   speed figures live in `benchmarks/`, as ratios.) Where synchronized BN is used in
#   practice, with one process per GPU, it is chosen when the images per GPU are few (object detection,
#   segmentation; MegDet, Peng et al. 2018, introduced it for detection), where local statistics would
#   normalize over one or two images.
#
# ## 7. When a process fails
#
# A rank that raises is the common failure: a bug, a shape that one share does not have. Its partners are then
# typically blocked in a collective that it will never join. The pool reports the failing rank and its
# exception, with the rank's traceback attached, and ends **every** process; the other ranks are not left
# waiting. Here rank 1 raises:

# %%
# NBVAL_CHECK_OUTPUT
pids = pool.pids
try:
    pool.run(workers.raise_on_rank, 1, "a shape this share does not have")
except WorkerError as error:
    print(str(error).splitlines()[0])
print(f"processes of the pool still running: {sum(process_running(pid) for pid in pids)} of {len(pids)}")
print(f"the pool: closed because of a {pool.closed_because}")
# The pool is closed from here on: to re-run a cell of sections 2 to 6, run the cell of section 1 again first.

# %% [markdown]
# The same happens when a rank does not answer within the pool's timeout (a deadlock, or a collective one rank
# skipped): a `WorkerTimeout` names the ranks that did not answer, and the processes are killed. An interrupt
# of the kernel (the stop button) ends them too before it stops the cell, and the processes exit on their own if
# the kernel itself dies. The tests of this lecture (`tests/test_lesson_distributed.py`) check each case,
# looking for leftover processes.
#
# The pool of this lecture is now closed: to re-run an earlier cell, run the cell of section 1 (`pool =
# ProcessGroupPool(2)`) again first.
#
# ## What the papers and the folklore claim, and what we measured
#
# | claim | source | here |
# |---|---|---|
# | with data parallelism, plain BN normalizes each worker's share: what counts is the examples per worker | Goyal et al. 2017 (BN statistics per worker); Wu & He 2018 (GN), "images per GPU" | **reproduced**: local BN on 2 processes is ghost BN with batches of 32 to $10^{-16}$; the mean's error follows the sampling formula (0.98 to 1.03 of it over 50 splits per share size) and is set by the share, hardly by the number of processes |
# | synchronized BN equals BN on the whole batch | Peng et al. 2018 (MegDet); `torch.nn.SyncBatchNorm` | **reproduced to rounding**: forward, backward, running statistics, unequal shares, images, float64 and float32; a data-parallel SGD step is the full-batch step ($10^{-16}$), against 0.35 for local BN |
# | $\partial L/\partial\beta$ does not depend on the statistics | lecture 4 | **only for the isolated layer and a given upstream gradient**; in a network local BN's $\beta$ update is off by about half |
# | `torch.nn.SyncBatchNorm` needs GPUs | PyTorch docs | **reproduced on torch 2.13**: a device check, and its five kernels have no CPU implementation; in eval mode and outside a group it is plain BN |
# | synchronizing costs latency, not bandwidth | common practice | **reproduced for the calls themselves**: 200, 402 and 100,010 numbers take 0.3–0.5, 0.3–0.5 and 0.5–2.4 ms here; the measured extra time of a step is two to eight times the extra calls' bare cost, nearly all of it spent waiting inside the calls (timings not checked) |
#
# ## Summary
#
# - In data-parallel training, plain batch norm normalizes each process's share by its own statistics: ghost
#   batch norm with a normalization batch of the share's size. A share of $n$ of $N$ examples misplaces each
#   mean by $\sqrt{(N-n)/(n(N-1))}$ standard deviations (RMS): 0.126 for 32 of 64, measured 0.130.
# - Synchronized BN exchanges each rank's count, sum and squared deviations, and combines them exactly:
#   $M = \sum_k M_k + \sum_k n_k(\bar x_k-\mu)^2$ (Chan et al.). Its backward needs two sums over the whole
#   batch, $\sum\delta$ and $\sum\delta\hat x$; $\partial L/\partial\gamma$ and $\partial L/\partial\beta$ stay
#   per rank for the gradient all-reduce.
# - It equals batch norm on the concatenated batch to float precision: forward, backward, running statistics,
#   with unequal shares and for images; a data-parallel SGD step with it is the full-batch step.
# - `torch.nn.SyncBatchNorm` is the same design but refuses CPU tensors: a device check, and five kernels without
#   a CPU implementation in torch 2.13.
# - The cost is two small all-reduces per BN layer and training step (one forward, one backward): latency, not
#   bandwidth (a bare all-reduce of 402 numbers costs a third or more of one of 100,010); in a step the measured
#   cost is larger, the processes waiting for each other at each meeting point.
# - Processes started from a notebook must be spawned, run importable functions, and be ended however a run
#   ends: success, an exception on one rank, a hang, an interrupt.
#
# ## Questions
#
# 1. With 8 processes holding 4 images each (of 32×32 positions) and local statistics, how many values per
#    channel does each normalization see? Compare with an MLP on 4 examples per process. Which of the two
#    needs synchronized BN more?
# 2. The table all-reduce sends $W(2C+1)$ numbers to give every rank every row. Design a forward that uses two
#    all-reduces of only $C + 1$ and $C$ numbers (hint: first the global mean). Which is better for 2 processes,
#    and which for 1,000?
# 3. A rank computes $\sum x^2$ in float32 and the ranks all-reduce $(n_k, \sum x, \sum x^2)$. For a channel
#    with mean 1,000 and standard deviation 1, what goes wrong, and for which mean would it start to matter
#    in float64?
# 4. For the isolated layer and a given upstream gradient, why does $\partial L/\partial\beta$ agree between local
#    and synchronized BN, but $\partial L/\partial\gamma$ not? Why does the $\beta$ update of a whole network's BN
#    layers differ after all (section 4's data-parallel step)? What would a gradient check that compares only
#    summed $\partial L/\partial\beta$ of one layer miss?
# 5. The backward all-reduce could be avoided if each rank used only its own sums $\sum_{i\in k}\delta$ and
#    $\sum_{i\in k}\delta\hat x$. Which function's gradient would it then compute, and why is that wrong for the
#    function the forward computed?
# 6. With shares 24 + 40 and each rank using the mean loss over its own examples, gradients averaged over the
#    two ranks: by how much is an example of rank 0 over-weighted? Which single change makes the step equal
#    the full-batch step again?
# 7. At evaluation time, does a model trained with synchronized BN need any communication? What must be true
#    of the running statistics on the ranks, and how did section 4 check it? With local BN under DDP's default
#    `broadcast_buffers=True`, whose statistics does the saved model hold, and over how many examples per step
#    were they averaged?
