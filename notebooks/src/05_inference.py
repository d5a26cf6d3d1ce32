# %% [markdown]
# # Lecture 5 — Inference: running statistics, momentum, precise BN, folding
#
# **Learning goals.** After this lecture you can
# 1. explain why a trained batch norm layer must not use batch statistics at test time, and what the paper's
#    Algorithm 2 uses instead (population statistics, averaged *after* training with the weights frozen);
# 2. compute one running-statistics update by hand in the conventions of PyTorch, Keras 3, CS231n and d2l, and
#    say which batch variance each one stores and what that costs at small $m$;
# 3. compute how much of a running average is still its initial value after $t$ batches, and remove that share
#    (bias correction);
# 4. record what a layer's running variance is fed during training, split the gap between the stored and the
#    exact value into initial-value bias and lag, and recompute exact population statistics (precise BN, which
#    is Algorithm 2 run after training);
# 5. fold an inference-mode batch norm into the layer before it, and say when that is impossible.
#
# **Prerequisites.** Lecture 2 (the training forward).
#
# **Practise it.** [Exercise 1](../exercises/ex1_forward.ipynb) (`batchnorm_inference`) and
# [Exercise 3: a numpy layer with running statistics](../exercises/ex3_numpy_layer.ipynb).
#
# **How numbers are printed**: as in lecture 4, a checked line shows a value and, in brackets, the bound it must
# stay within; differences made of rounding errors print as an order of magnitude ("below 1e-14", "< 1e-05").

# %%
import copy
import math

import numpy as np
import torch
from IPython.display import Markdown

import bnlab.notebook
from bnlab.data import load_mnist_subset
from bnlab.functional import batchnorm_forward, batchnorm_inference
from bnlab.lessons.inference import (RECENT_STEPS, after_activation_folding, convention_rows, convention_table,
                                     folding_check, long_run_running_var, measure_lag, precise_bn_study)
from bnlab.nn import recompute_batchnorm_statistics
from bnlab.plots.inference import plot_measured_lag, plot_precise_bn
from bnlab.report import within
from bnlab.running_stats import bias_corrected, initial_value_share
from bnlab.widgets.running import RunningAveragesDashboard

bnlab.notebook.setup()

# %% [markdown]
# ## A prediction must not depend on the rest of the batch
#
# In training, an example's output depends on every other example in its batch, through $\mu_\mathcal{B}$ and
# $\sigma^2_\mathcal{B}$. That is fine for learning, and wrong for prediction: the answer for one image would
# change with whatever happened to be batched with it, and a batch of one could not be normalized at all.
# Below, one example is normalized in two different batches of 8, in training mode and in inference mode (with
# fixed statistics mean 3, variance 1).

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(0)
example = rng.standard_normal((1, 4)) + 3
company_a, company_b = rng.standard_normal((7, 4)), rng.standard_normal((7, 4)) * 5 - 2
gamma, beta = np.ones(4), np.zeros(4)

train_a = batchnorm_forward(np.vstack([example, company_a]), gamma, beta)[0][0]
train_b = batchnorm_forward(np.vstack([example, company_b]), gamma, beta)[0][0]
mean, var = np.full(4, 3.0), np.ones(4)
eval_a = batchnorm_inference(np.vstack([example, company_a]), gamma, beta, mean, var)[0]
eval_alone = batchnorm_inference(example, gamma, beta, mean, var)[0]
print(f"training mode,  output of the example in batch A vs batch B: "
      f"max change {np.abs(train_a - train_b).max():.2f} (> 0.1)")
print(f"inference mode, output of the example in batch A vs alone:   "
      f"max change {within(np.abs(eval_a - eval_alone).max(), 1e-12)}")

# %% [markdown]
# ## Algorithm 2: population statistics, computed after training
#
# The paper's Algorithm 2 first trains the network (step 6), then takes the "inference BN network with frozen
# parameters" (step 7), and only then (step 10) processes training mini-batches $\mathcal B_1,\dots,\mathcal B_K$
# of size $m$ through it and averages their statistics with equal weights:
#
# $$
# \mathrm{E}[x] = \frac1K\sum_k \mu_{\mathcal B_k}, \qquad
# \mathrm{Var}[x] = \frac{m}{m-1}\cdot\frac1K\sum_k \sigma^2_{\mathcal B_k}, \qquad
# y = \frac{\gamma}{\sqrt{\mathrm{Var}[x]+\epsilon}}\,x + \Big(\beta - \frac{\gamma\,\mathrm{E}[x]}{\sqrt{\mathrm{Var}[x]+\epsilon}}\Big).
# $$
#
# Every batch statistic in these averages comes from the *final* weights. Frameworks do something else: they
# keep a running average while training runs (the paper mentions moving averages only as a way to track a
# model's accuracy during training, Sec. 3.1). Wu & Johnson (2021, "Rethinking 'Batch' in BatchNorm", Sec. 3)
# recommend the after-training average again, as *PreciseBN*, over the running average; this lecture measures
# when the two differ, and why.
#
# Two things to notice in the formula. The layer becomes **one affine map per channel**, a scale and a shift.
# And the variance carries the factor $m/(m-1)$: the biased batch variance (divide by $m$, what training
# normalizes with) underestimates the population variance by $(m-1)/m$ on average, so the average of biased batch
# variances must be corrected. A check with 20,000 batches of $m = 4$ drawn from a distribution of variance 4:

# %%
# NBVAL_CHECK_OUTPUT
batches = rng.normal(0.0, 2.0, size=(20_000, 4))       # 20,000 batches of m = 4, true variance 4
biased = batches.var(axis=1, ddof=0).mean()
unbiased = batches.var(axis=1, ddof=1).mean()
print(f"average biased batch variance   {biased:.2f}  (expected 4 * 3/4 = 3; |difference| < 0.05)")
print(f"average unbiased batch variance {unbiased:.2f}  (expected 4;          |difference| < 0.05)")

# %% [markdown]
# ## Running statistics: one idea, several conventions
#
# Frameworks do not store every batch; they keep a running average $r$ of each statistic, updated after each
# training batch with the batch's statistic $s_\mathcal{B}$. Two ways of writing the same update are in use:
#
# $$
# \text{PyTorch, d2l:}\quad r \leftarrow (1-\text{momentum})\,r + \text{momentum}\cdot s_\mathcal{B}, \qquad
# \text{Keras, CS231n:}\quad r \leftarrow \text{momentum}\cdot r + (1-\text{momentum})\,s_\mathcal{B}.
# $$
#
# So PyTorch's momentum is the weight of the **new** batch, Keras' the weight of the **old** average: Keras' 0.99
# is PyTorch's 0.01. The codes also differ in which batch variance they feed in, where $r$ starts, and
# $\epsilon$.
#
# **Predict, then run.** One update with the batch $\{1, 3\}$ (mean 2, biased variance 1, unbiased variance 2),
# from each code's initial values. Before running the next cell, write down PyTorch's `running_mean` and
# `running_var` at its default momentum 0.1, and Keras 3's `moving_mean` and `moving_variance` at its default
# 0.99. Is Keras' variance the same as PyTorch's at momentum 0.01?
#
# The PyTorch rows are run by `torch.nn.BatchNorm1d` itself. The Keras, CS231n and d2l rows are bnlab's model of
# each rule (`bnlab.running_stats.CONVENTIONS`, with the place in each source where the rule is written);
# `tests/test_running_stats.py` runs Keras 3 itself against bnlab's Keras model.

# %%
# NBVAL_CHECK_OUTPUT
Markdown(convention_table(convention_rows((1.0, 3.0))))

# %% [markdown]
# What to notice:
#
# - **Momentum's meaning.** Keras at 0.99 and PyTorch at 0.01 move the mean identically (0.020): the same weight
#   0.01 for the new batch. Porting a model between frameworks with the number copied across is a classic
#   silent bug, and so is $\epsilon$ (Keras $10^{-3}$, the others $10^{-5}$; the paper gives no value).
# - **The variance estimator.** PyTorch feeds the unbiased batch variance (2) and gets 1.010 at momentum 0.01;
#   Keras 3 feeds the biased one from `ops.moments` (1) and stays at 1.000. CS231n and d2l feed the biased one
#   too: with PyTorch's momentum, d2l gets 1.000 where PyTorch has 1.100. (Older d2l editions write Keras' form
#   with 0.9, source [4]: the same numbers, the opposite meaning of "momentum".)
# - **The initial value.** CS231n starts its running variance at 0, so after one batch it is 0.100, where the
#   others are near 1.
#
# [Lecture 6](06_pytorch_layer.ipynb) ends with the full convention sheet (modes, $m$ for images, the flags of
# `torch.nn.BatchNorm`).
#
# ### What a biased running variance costs
#
# A running average settles at the expectation of what it is fed. Fed the biased batch variance, it settles at
# $\frac{m-1}{m}$ of the population variance, and at inference the network divides by $\sqrt{(m-1)/m}$ times
# the true standard deviation. The next cell feeds the same 4000 batches of $m$ values (true variance 4) to
# PyTorch's, Keras 3's and d2l's rule, each with the newest batch weighted 0.002 (so the initial value keeps a
# share $0.998^{4000} = 3\cdot 10^{-4}$, and batch noise averages out over about 1000 batches).
#
# **Predict, then run.** At $m = 2$, where does Keras 3's running variance end?

# %%
# NBVAL_CHECK_OUTPUT
print(f"true variance 4; running variance after 4000 batches, newest weighted 0.002 "
      f"(initial value's share {initial_value_share(0.002, 4000):.0e})")
print("    m   PyTorch (unbiased)   Keras 3 (biased)   d2l (biased)   4 (m-1)/m")
worst = 0.0
for m in (2, 16, 256):
    ends = {name: long_run_running_var(name, m) for name in ("pytorch", "keras", "d2l")}
    expected = 4 * (m - 1) / m
    worst = max(worst, abs(ends["pytorch"] / 4 - 1), abs(ends["keras"] / expected - 1),
                abs(ends["d2l"] / expected - 1))
    print(f"  {m:3d}   {ends['pytorch']:18.2f}   {ends['keras']:16.2f}   {ends['d2l']:12.2f}   {expected:9.2f}")
print(f"largest |ratio to its expectation - 1|: {worst:.3f} (< 0.1)")

# %% [markdown]
# At $m = 256$ the factor $(m-1)/m = 0.996$ is negligible; at $m = 2$ it halves the stored variance. For an
# image batch $m = N\cdot H\cdot W$ is large even for small $N$; it matters for small batches of vectors. Keras 3
# and d2l end at the same value: with the same weight, only the variance estimator matters in the long run.
#
# ### Equal weights: `momentum=None`
#
# With `momentum=None` PyTorch weights batch $k$ by $1/k$, which keeps an exact average of all the batches the
# layer has seen, each with the same weight. Three batches of 8, 5 and 12 examples through
# `torch.nn.BatchNorm1d`:

# %%
# NBVAL_CHECK_OUTPUT
layer = torch.nn.BatchNorm1d(3, momentum=None).double()
seen = [torch.tensor(rng.standard_normal((n, 3)) * 2 + 1) for n in (8, 5, 12)]
for x in seen:
    layer(x)
average_mean = torch.stack([x.mean(dim=0) for x in seen]).mean(dim=0)
average_var = torch.stack([x.var(dim=0, unbiased=True) for x in seen]).mean(dim=0)
print(f"after 3 batches, max |difference| from the equal-weight average: running_mean "
      f"{within((layer.running_mean - average_mean).abs().max(), 1e-12)}, running_var (unbiased) "
      f"{within((layer.running_var - average_var).abs().max(), 1e-12)}")

# %% [markdown]
# Which batches those are decides what the average means. Run **after** training, on frozen weights, over
# training batches of one size $m$, `momentum=None` computes Algorithm 2's averages: that is precise BN, below.
# Left on **during** training, it averages the statistics of every network along the way, the untrained one
# included: the same formula, but not Algorithm 2.
#
# ## What a running average remembers: its initial value
#
# Unroll PyTorch's update $r_t = (1-w)\,r_{t-1} + w\,s_t$ (weight $w$ = momentum) from its initial value $r_0$:
#
# $$
# r_t = \underbrace{(1-w)^t\, r_0}_{\text{initial value}} + \sum_{k=1}^{t} w\,(1-w)^{t-k}\, s_k ,
# \qquad \sum_{k=1}^{t} w\,(1-w)^{t-k} = 1 - (1-w)^t .
# $$
#
# After $t$ batches the initial value ($r_0 = 0$ for the mean, $1$ for the variance in PyTorch) still has the
# weight $f = (1-w)^t \approx e^{-wt}$; the batches share the rest. To forget it down to 1% takes
# $t_{1\%} = \ln 0.01 / \ln(1-w) \approx 4.6/w$ batches:

# %%
# NBVAL_CHECK_OUTPUT
print("momentum   share of the initial value after 300 batches   batches until below 1%")
for w in (0.1, 0.01, 0.001):
    print(f"{w:<8g}   {initial_value_share(w, 300):>43.2g}   {math.ceil(math.log(0.01) / math.log(1 - w)):>22d}")

# %% [markdown]
# At PyTorch's default the initial value is gone after 44 batches. At 0.001 (Keras' 0.999) it needs 4603
# batches: a 300-step run ends with three quarters of every running statistic still being the initial 0 or 1.
#
# Adam has the same problem with its moment estimates (started at 0) and divides it away (Kingma & Ba 2015,
# Sec. 3). With a nonzero start, first remove the initial value's share, then rescale:
#
# $$ \hat r_t = \frac{r_t - (1-w)^t\, r_0}{1 - (1-w)^t}, $$
#
# which is the weighted average of the batch statistics alone (weights $w(1-w)^{t-k}/(1-(1-w)^t)$, summing to 1;
# for $t \ll 1/w$ they are nearly equal, so $\hat r_t$ is close to the equal-weight average).

# %%
bnlab.notebook.show_source(bias_corrected)

# %% [markdown]
# ### Two meanings of "lag"
#
# A running average is a weighted mean of past batches, so on a statistic that changes it trails behind. Two
# cases carry the same word:
#
# - **Window lag.** For $t \gg 1/w$ an EMA averages over a window of about $1/w$ recent batches; their mean age
#   is $(1-w)/w$ steps (9 at PyTorch's 0.1, 999 at 0.001), and the average trails a drifting statistic by about
#   that much.
# - **Trajectory averaging.** An average whose weights are (nearly) equal over the whole run, such as
#   `momentum=None` during training, or a bias-corrected EMA with $t \ll 1/w$, is the mean of the statistic over
#   every network of the run, early ones included, not the final network's value.
#
# In a 300-step run at momentum 0.001 the window (1000 batches) is longer than the run, so the lag is of the
# second kind.
#
# ### Explore: momentum, run length and a drifting statistic
#
# **Predict, then run.** A channel's true variance is 2.7 and PyTorch's running variance starts at 1. With
# momentum 0.001, where is the raw running variance after 300 batches? (Use $f$ from the cell above.) And the
# bias-corrected one?
#
# The dashboard is a **synthetic model**, not a measurement. Its truth is
#
# $$ v_t = F\,\big(1 - d\, e^{-(t-1)/60}\big), \qquad t = 1, 2, \dots $$
#
# with final value $F = 2.7$ for the variance (about layer 1 of the network trained below) or $F = 1$ for the
# mean, *drift* $d \in [0, 1]$ (the truth starts at $(1-d)\,F$: 1.35 at the default $d = 0.5$; $d = 0$ is a
# statistic that never changes) and a settling time of 60 steps. Each step draws a batch of 60 normal values
# with that truth and feeds its mean or unbiased variance to PyTorch's update (a real layer's measured
# trajectory follows below). Move *momentum* and *steps*; set *drift* to 0 to see the initial value's share
# alone.

# %%
RunningAveragesDashboard()

# %% [markdown]
# What to notice:
#
# - At momentum 0.001 and 300 steps the raw average (blue) has covered only a quarter of the way from its
#   initial value 1. The bias-corrected one (orange) and the equal-weight one (green) sit on top of each other,
#   among the batches.
# - With drift, those two still end below the truth: they weight early batches, taken when the statistic was
#   smaller, about as much as late ones (trajectory averaging), a smaller effect here than the initial value.
# - Raise the momentum to 0.1: the raw and corrected curves coincide after a few dozen steps and follow the truth
#   with a window lag of about 9 steps and the noise of the last ~10 batches. At momentum 1 the average is the
#   last batch.
# - Move *steps* to 3000 at momentum 0.001: the title shows how much of the initial value is left, the drift is
#   long over, and the corrected average sits on the truth within the batch noise.
#
# ## Precise BN: Algorithm 2 after training
#
# The experiment: the lecture's network (3 hidden layers of 100 ReLU units, batch norm before each ReLU, He
# init) trained 300 steps of SGD (batch 60, learning rate 0.1) on 4,000 MNIST digits. Training runs with
# momentum 0.001 for three seeds (weights, batch order), and for seed 0 twice more as controls: with PyTorch's
# 0.1, and with `momentum=None` during training. The momentum changes only the running statistics, never
# training (the forward normalizes with batch statistics), so the runs of one seed end with the same weights.
# During training a forward hook records, at every step, the batch mean and unbiased batch variance each batch
# norm layer is fed.
#
# For each run three sets of statistics are compared: the EMA as training left it; the EMA bias-corrected
# (initial values 0 and 1, the layer's momentum, `num_batches_tracked` = 300); and **precise** statistics,
# Algorithm 2 with the final weights over 50 training batches of 60.

# %%
digits = load_mnist_subset()
slow_runs = [precise_bn_study(digits, 0.001, seed=seed) for seed in (0, 1, 2)]
slow = slow_runs[0]
default, during = precise_bn_study(digits, 0.1), precise_bn_study(digits, None)

# %% [markdown]
# Precise BN is short enough to write out. Every batch norm layer gets fresh running statistics and
# `momentum=None`; the network runs in training mode (so each layer normalizes with the batch's statistics, as
# in training, and updates its running ones) but without gradients or an optimizer, so the weights stay frozen.
# (Algorithm 2's pseudo-code can also be read layer by layer, gathering layer $k$'s statistics after layers
# $1, \dots, k-1$ already use theirs; for layer 1, the one measured below, both readings give the same numbers.)

# %%
model = copy.deepcopy(slow.model)          # the trained network of seed 0
norms = [block.norm for block in model.hidden_layers]
for norm in norms:
    norm.reset_running_stats()             # running_mean 0, running_var 1, num_batches_tracked 0
    norm.momentum = None                   # batch k gets the weight 1/k: an equal-weight average
model.train()                              # batch statistics in the forward, running statistics updated
with torch.no_grad():                      # no gradients, no optimizer step: the weights stay frozen
    for batch in slow.batches:             # 50 training batches of 60 digits
        model(batch)

# %% [markdown]
# `bnlab.nn.recompute_batchnorm_statistics` does the same for any model, and restores each layer's momentum and
# the model's mode afterwards:

# %%
# NBVAL_CHECK_OUTPUT
library = copy.deepcopy(slow.model)
used = recompute_batchnorm_statistics(library, slow.batches)
library_norms = [block.norm for block in library.hidden_layers]
difference = max(max((ours.running_mean - lib.running_mean).abs().max().item(),
                     (ours.running_var - lib.running_var).abs().max().item())
                 for ours, lib in zip(norms, library_norms))
print(f"{used} batches; max |difference| of the running statistics, the loop above vs the library: "
      f"{within(difference, 1e-12)}")
same = max(np.abs(slow.running_var["precise"] - other.running_var["precise"]).max() for other in (default, during))
print(f"seed 0 trained with momentum 0.001, 0.1 and None: max |difference| of their precise variances "
      f"{within(same, 1e-6)} (the same network)")

# %% [markdown]
# ## Measuring the gap: initial value and lag
#
# **Predict, then run.** After 300 steps at momentum 0.001 the initial 1 keeps the share $f$ of the table above.
# If every batch had had the precise variance, where would the stored value end, as a fraction of the way from 1
# to the precise value? And would `momentum=None` during training store more or less than the precise value?
#
# `measure_lag` replays PyTorch's update on the layer-1 batch variances recorded during training and compares
# the result with what the layer stored; it also compares the bias-corrected value with the exponentially
# weighted mean of the recorded values (weights $w(1-w)^{300-k}$, normalized), and what `momentum=None` stored
# with their equal-weight mean. One line checks all three replays.

# %%
# NBVAL_CHECK_OUTPUT
lag = measure_lag(slow)
fed_equal = slow.batch_var[:, 0, :].mean(axis=0)                    # equal-weight mean per unit
stored_none = during.running_var["ema"][0]                          # what momentum=None stored in training
replays = max(lag.replay_error, lag.weighted_error, np.abs(fed_equal / stored_none - 1).max())
print(f"replays vs what the layers stored (EMA, bias-corrected EMA, momentum=None): max rel. difference over "
      f"units {within(replays, 1e-3, floor=1e-4)}")
print(f"layer 1, mean over units: batch variance fed {lag.batch[:10].mean():.2f} in the first 10 steps, "
      f"{lag.recent:.2f} in the last {RECENT_STEPS} (|that - precise| {abs(lag.recent - lag.precise):.2f} < 0.05); "
      f"momentum=None stored {stored_none.mean():.2f}")

# %%
plot_measured_lag(lag);

# %% [markdown]
# What to notice:
#
# - The gray dots are measured: layer 1's batch variance rose from 1.56 to 2.74 as the network learned. The
#   dashboard's synthetic truth (dotted) is only a rough model of it: the measured variances rise faster over
#   the first 50 steps and more slowly after.
# - The stored EMA (blue) is the replay of those dots from 1, to float32 rounding. It ends far below them
#   because three quarters of it is still the initial 1.
# - The bias-corrected EMA (orange) *is* the exponentially weighted mean of the dots; with $t \ll 1/w$ its
#   weights are nearly flat (right panel; the legend gives each average's mean age in steps), so it nearly
#   coincides with the equal-weight mean (green), the 2.44 that `momentum=None` stored. Both end well below the
#   last dots: trajectory averaging.
# - The last 30 batches agree with the precise value (star): the recorded statistics end where Algorithm 2 on
#   the final weights puts them. At momentum 0.1 (red, right) $1 - 0.9^{20} = 88\%$ of the weight sits in the
#   last 20 batches: window lag.
#
# The gap between precise and stored splits exactly into the two parts:
#
# $$
# \underbrace{\text{precise} - r_t}_{\text{gap}}
# = \underbrace{(\hat r_t - r_t)}_{\text{initial value's share}}
# + \underbrace{(\text{precise} - \hat r_t)}_{\text{lag}} .
# $$

# %%
# NBVAL_CHECK_OUTPUT
print("layer-1 running_var, mean over units; momentum 0.001, 300 steps")
print("seed   untrained   stored   corrected   precise    gap  = initial value's share + lag")
shares = []
for study in slow_runs:
    part = measure_lag(study)
    shares.append(part.initial_bias / part.gap)
    print(f"{study.seed:4d}   {part.untrained:9.2f}   {part.stored:6.2f}   {part.stored_corrected:9.2f}   "
          f"{part.precise:7.2f}   {part.gap:5.2f} = {part.initial_bias:5.2f} ({shares[-1]:.0%})          "
          f"+ {part.lag:4.2f}")
print(f"initial value's part of the gap: {min(shares):.0%} to {max(shares):.0%} (> 67% in every seed)")

# %% [markdown]
# The accuracy follows the statistics. The test accuracy of each run with each set of statistics loaded (1,000
# test digits, so 0.001 is one digit). Brackets: at momentum 0.001 the stored EMA is below precise by more than
# 0.02 in every seed; bias-corrected and precise differ by less than 0.01; at momentum 0.1 stored and precise
# differ by less than 0.01.

# %%
# NBVAL_CHECK_OUTPUT
print(f"{'test accuracy':<24}{'stored EMA':>12}{'bias-corrected':>16}{'precise':>9}")
for label, study in [(f"momentum 0.001, seed {run.seed}", run) for run in slow_runs] + [
        ("momentum 0.1,   seed 0", default), ("momentum None,  seed 0", during)]:
    acc = study.accuracy
    corrected = "—" if study.momentum is None else f"{acc['corrected']:.3f}"
    print(f"{label:<24}{acc['ema']:>12.3f}{corrected:>16}{acc['precise']:>9.3f}")
slow_gaps = [s.accuracy["precise"] - s.accuracy["ema"] for s in slow_runs]
corrected_gaps = [abs(s.accuracy["precise"] - s.accuracy["corrected"]) for s in slow_runs]
print(f"momentum 0.001: precise - stored {min(slow_gaps):.3f} to {max(slow_gaps):.3f} (> 0.02); "
      f"|precise - corrected| at most {max(corrected_gaps):.3f} (< 0.01)")
print(f"momentum 0.1: |precise - stored| {abs(default.accuracy['precise'] - default.accuracy['ema']):.3f} "
      f"(< 0.01)")

# %%
plot_precise_bn([slow, default]);

# %% [markdown]
# What to notice:
#
# - At momentum 0.001 each unit's stored running variance (blue) is mostly the initial 1: with no lag it would lie
#   on the dotted line $f\cdot 1 + (1-f)\cdot$precise. The dots sit just below that line, further below at large
#   variance: the offset is $(1-f)\,(\hat r_t - \text{precise})$, the lag scaled by $1-f$. Bias correction
#   (orange) removes the initial value's share and moves them back towards the diagonal, and most of the
#   accuracy with them; what remains below the diagonal is the lag.
# - The control: at momentum 0.1 the same network's stored statistics already sit on the diagonal (the initial
#   value's share is $0.9^{300} \approx 2\cdot 10^{-14}$, and the window of ~10 batches comes from nearly the
#   final weights), and stored and precise accuracy agree.
#
# So for a short run with a slow momentum, most of the gap is the initial value: the running statistics still
# describe mostly *no* network. Bias correction removes that part with no extra pass over the data; precise BN
# removes both parts, at the cost of one pass over a few dozen training batches with the final weights. Which
# part dominates depends on $wt$: the initial value keeps $(1-w)^t \approx e^{-wt}$, large at $wt = 0.3$ here,
# below 1% from $wt \approx 4.6$. In long runs like Wu & Johnson's ImageNet trainings $wt$ is in the hundreds or
# more, the initial value is long forgotten, and the gap between EMA and precise statistics *is* lag (or, at a
# fast momentum, the noise of averaging few batches).
#
# ## Folding batch norm away
#
# In inference mode a batch norm after a linear layer computes $\text{scale}\odot(Wx + b) + \text{shift}$ with
# $\text{scale} = \gamma/\sqrt{\mathrm{Var}+\epsilon}$ and $\text{shift} = \beta - \text{scale}\odot\mathrm{E}$. That is
# again a linear layer:
#
# $$ W' = \operatorname{diag}(\text{scale})\,W, \qquad b' = \text{scale}\odot b + \text{shift}. $$
#
# Two conditions are hidden in that line. The batch norm must be in **eval mode** (in training mode it uses the
# batch's statistics, which no fixed $W'$, $b'$ can reproduce), and it must **directly follow** the linear or
# convolutional layer: $\text{scale}\odot\mathrm{ReLU}(Wx) + \text{shift}$ is not $\mathrm{ReLU}(W'x + b')$. In
# this lecture's network every batch norm follows a Linear, so `bnlab.nn.fold_batchnorm_sequential` folds all
# three. The logits are float32 and of order 10, so rounding differences below $10^{-5}$ are expected.

# %%
# NBVAL_CHECK_OUTPUT
check = folding_check(slow.model, digits.x_test)
print(f"batch norm layers before / after folding: {check.norms_before} / {check.norms_after}")
print(f"eval mode:     max |logit difference| {within(check.eval_difference, 1e-4, floor=1e-5)} (float32 rounding)")
print(f"training mode: max |logit difference| {check.train_difference:.2f} (> 0.1: the unfolded network uses "
      f"batch statistics)")

# %% [markdown]
# Now the same network with batch norm *after* each ReLU (Linear → ReLU → BN), given population statistics of 10
# training batches. No batch norm follows a Linear, so nothing folds into the layer before it; forcing it anyway
# (folding the BN into the Linear across the ReLU) changes the block's output. It can still vanish *forward*:
# the next Linear sees $\text{scale}\odot a + \text{shift}$, and
# $W(\text{scale}\odot a + \text{shift}) + b = (W\operatorname{diag}(\text{scale}))\,a + (W\,\text{shift} + b)$.

# %%
# NBVAL_CHECK_OUTPUT
after = after_activation_folding(digits)
print(f"batch norm layers before / after fold_batchnorm_sequential: {after.norms_before} / {after.norms_after}")
print(f"folded into the Linear before it, across the ReLU: max |change| of the block's output "
      f"{after.backward_difference:.2f} (outputs up to {after.output_scale:.1f}; > 5% of that)")
print(f"folded forward into the next Linear: max |difference| {within(after.forward_difference, 1e-4, floor=1e-5)}")

# %% [markdown]
# ## Summary
#
# - At inference batch norm uses population statistics and becomes a fixed affine map per channel, so a
#   prediction never depends on the rest of the batch (and a batch of one works).
# - The paper's Algorithm 2 computes them **after** training, with frozen weights, as equal-weight averages over
#   training batches (unbiased variance). That is precise BN (Wu & Johnson 2021): reset, `momentum=None`,
#   training mode without gradients, a few dozen batches.
# - Frameworks keep running averages during training instead. PyTorch's momentum is the weight of the new batch
#   and it stores the **unbiased** variance; Keras' momentum is the weight of the old average and Keras 3 feeds
#   the **biased** variance, as do CS231n (running variance starting at 0) and d2l. A biased running variance
#   settles at $(m-1)/m$ of the truth: negligible for large $m$, half at $m = 2$.
# - After $t$ batches a running average still holds $(1-w)^t$ of its initial value. In this lecture's 300-step
#   runs at momentum 0.001 that share is 80-84% of the gap to the precise value (three seeds), and lag
#   (trajectory averaging) the rest. Bias correction, as in Adam, removes the first part and most of the lost
#   accuracy; precise BN removes both. In long runs the initial value is forgotten and the gap is lag.
# - An inference-mode batch norm folds into a Linear or convolution directly before it; one after an activation
#   does not fold backward (it can fold forward into a following Linear).
#
# ## Questions
#
# 1. A model trained in PyTorch with default settings is ported to Keras with `momentum=0.1` copied over. What
#    weight does each new batch get in Keras, what do the moving statistics then describe, and when would you
#    notice? What else must you copy by hand?
# 2. A network trained 200 steps with momentum 0.01 does worse in eval mode than in training mode. What share of
#    its running statistics is still the initial value? Name two fixes that need no retraining.
# 3. Keras trains a BN layer on batches of 4 vectors. By what factor is its moving variance off, and how does that
#    change the size of the layer's outputs at inference?
# 4. A colleague sets `momentum=None` for the whole of training "to get the paper's Algorithm 2". What does the
#    layer store after 300 steps here, and what one change makes it Algorithm 2?
# 5. Why can folding only be done in inference mode, and why not into the layer before a batch norm that follows a
#    ReLU?
# 6. Precise BN above used 50 batches of 60. What would go wrong with batches of 2? (Think of what the deeper
#    layers see while the statistics are recomputed in training mode.)
#
# Next: [Lecture 6 — batch norm in PyTorch](06_pytorch_layer.ipynb), which ends with a one-page convention sheet
# for all of this.
