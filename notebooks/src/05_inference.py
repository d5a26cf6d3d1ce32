# %% [markdown]
# # Lecture 5 — Inference: running statistics, momentum, precise BN, folding
#
# **Learning goals.** After this lecture you can
# 1. explain why a trained batch norm layer must not use batch statistics at test time, and what it uses instead
#    (Algorithm 2);
# 2. compute one running-statistics update by hand in the conventions of PyTorch, Keras 3, CS231n, d2l and the
#    paper, and say which batch variance each one stores and what that costs at small $m$;
# 3. compute how much of a running average is still its initial value after $t$ batches, and remove that share
#    (bias correction);
# 4. tell the initial-value bias of a slow moving average from its lag behind changing weights, measure both in a
#    trained network, and recompute exact population statistics ("precise BN");
# 5. fold an inference-mode batch norm into the layer before it, and say when that is impossible.
#
# **Prerequisites.** Lecture 2 (the training forward).
#
# **Practise it.** [Exercise 1](../exercises/ex1_forward.ipynb) (`batchnorm_inference`) and
# [Exercise 3: a numpy layer with running statistics](../exercises/ex3_numpy_layer.ipynb).

# %%
import math

import numpy as np
import torch
from IPython.display import Markdown

import bnlab.notebook
from bnlab.data import load_mnist_subset
from bnlab.functional import batchnorm_forward, batchnorm_inference
from bnlab.lessons.inference import (after_activation_folding, convention_rows, convention_table, folding_check,
                                     long_run_running_var, precise_bn_study)
from bnlab.plots.inference import plot_precise_bn
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
      f"max change {np.abs(eval_a - eval_alone).max():.1f}  (= 0 exactly)")

# %% [markdown]
# ## Algorithm 2: population statistics
#
# At inference the paper replaces the batch statistics by population statistics, estimated from the training
# batches $\mathcal B_1,\dots,\mathcal B_K$ of size $m$:
#
# $$
# \mathrm{E}[x] = \frac1K\sum_k \mu_{\mathcal B_k}, \qquad
# \mathrm{Var}[x] = \frac{m}{m-1}\cdot\frac1K\sum_k \sigma^2_{\mathcal B_k}, \qquad
# y = \frac{\gamma}{\sqrt{\mathrm{Var}[x]+\epsilon}}\,x + \Big(\beta - \frac{\gamma\,\mathrm{E}[x]}{\sqrt{\mathrm{Var}[x]+\epsilon}}\Big).
# $$
#
# Two things to notice. The layer becomes **one affine map per channel** — a scale and a shift. And the variance
# carries the factor $m/(m-1)$: the biased batch variance (divide by $m$, what training normalizes with)
# underestimates the population variance by $(m-1)/m$ on average, so the average of biased batch variances must
# be corrected. A check with 20,000 batches of $m = 4$ drawn from a distribution of variance 4:

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
# training batch with the batch's statistic $s_\mathcal{B}$. The codes agree on the idea and differ in three
# details: what "momentum" means, which batch variance they feed in, and where $r$ starts.
#
# | | update | default momentum | momentum is the weight of | variance fed in | $r_{\sigma^2}$ starts at |
# |---|---|---|---|---|---|
# | PyTorch | $r \leftarrow (1-\text{momentum})\,r + \text{momentum}\cdot s_\mathcal{B}$ | 0.1 | the **new** batch | unbiased ($m-1$) | 1 |
# | Keras 3 | $r \leftarrow \text{momentum}\cdot r + (1-\text{momentum})\,s_\mathcal{B}$ | 0.99 | the **old** average | biased ($m$) | 1 |
# | CS231n assignment 2 | as Keras | 0.9 | the old average | biased | **0** |
# | d2l (PyTorch tab) | as PyTorch | 0.1 | the new batch | biased | 1 |
# | paper (Algorithm 2) | plain average over all batches | — | (PyTorch's `momentum=None`) | unbiased | — |
#
# So Keras' 0.99 gives the new batch the weight 0.01: PyTorch's 0.01, ten times slower than PyTorch's default.
# Porting a model between frameworks with the number copied across is a classic silent bug. Every running mean
# starts at 0, and $\epsilon$ differs too (Keras $10^{-3}$, the others $10^{-5}$).
#
# **Predict, then run.** One update with the batch $\{1, 3\}$ (mean 2, biased variance 1, unbiased variance 2),
# from each code's initial values. Before running the next cells, write down PyTorch's `running_mean` and
# `running_var` at its default momentum 0.1, and Keras 3's `moving_mean` and `moving_variance` at its default
# 0.99. Is Keras' variance the same as PyTorch's at momentum 0.01?
#
# The PyTorch rows below are run by `torch.nn.BatchNorm1d` itself. The Keras, CS231n and d2l rows are bnlab's
# model of each rule (`bnlab.running_stats.CONVENTIONS`, one `Convention` per code, with the place in its
# source where the rule is written); `tests/test_running_stats.py` runs Keras 3 itself against bnlab's Keras
# model.

# %%
rows = convention_rows((1.0, 3.0))
Markdown(convention_table(rows))

# %%
# NBVAL_CHECK_OUTPUT
for row in rows:
    print(f"{row.code:42s} running_mean {row.running_mean:.3f}  running_var {row.running_var:.3f}   "
          f"({row.produced_by})")

# %% [markdown]
# What to notice:
#
# - **Momentum's meaning.** Keras at 0.99 and PyTorch at 0.01 move the mean identically (0.020): the same
#   weight 0.01 for the new batch, written as $1 - 0.01$ in Keras.
# - **The variance estimator.** Their variances differ: PyTorch feeds the unbiased batch variance (2) and
#   gets 1.010; Keras 3 feeds the biased one from `ops.moments` (1) and stays at 1.000. d2l does the same with
#   PyTorch's momentum: 1.000 where PyTorch has 1.100.
# - **The initial value.** CS231n starts its running variance at 0, so after one batch it is 0.100, where the
#   others are near 1.
# - **Equal weights.** `momentum=None` gives the first batch the weight 1: both statistics are the batch's own
#   (mean 2, unbiased variance 2).
#
# ### What a biased running variance costs
#
# A running average settles at the expectation of what it is fed. Fed the biased batch variance, it settles at
# $\frac{m-1}{m}$ of the population variance, and at inference the network divides by $\sqrt{(m-1)/m}$ times
# the true standard deviation. The next cell feeds the same 4000 batches of $m$ values (true variance 4) to
# PyTorch's, Keras 3's and d2l's rule, each with the newest batch weighted 0.002 (so the initial value keeps a
# share $0.998^{4000} = 3\cdot 10^{-4}$, and batch noise averages out over about 1000 batches):

# %%
# NBVAL_CHECK_OUTPUT
lines = []
for m in (2, 16, 256):
    ends = {name: long_run_running_var(name, m) for name in ("pytorch", "keras", "d2l")}
    expected = 4 * (m - 1) / m
    lines.append(f"m = {m:3d}:  PyTorch {ends['pytorch']:.2f} (expected 4; ratio {ends['pytorch'] / 4:.2f})   "
                 f"Keras 3 / d2l {ends['keras']:.2f} / {ends['d2l']:.2f} (expected 4 * {m - 1}/{m} = {expected:.2f}; "
                 f"ratios {ends['keras'] / expected:.2f} / {ends['d2l'] / expected:.2f})")
print("\n".join(lines))
print(f"(share of the initial value 0.998^4000 = {initial_value_share(0.002, 4000):.0e}; every ratio in [0.9, 1.1])")

# %% [markdown]
# At $m = 256$ the factor $(m-1)/m = 0.996$ is negligible; at $m = 2$ it halves the stored variance. For an
# image batch $m = N\cdot H\cdot W$ is large even for small $N$; it matters for small batches of vectors. Keras 3
# and d2l end at the same value: with the same weight, only the variance estimator matters in the long run.
#
# ### The paper's equal weights: `momentum=None`
#
# With `momentum=None` PyTorch weights batch $k$ by $1/k$, which keeps an exact running average of all batches so
# far — the paper's Algorithm 2. Three batches of 8, 5 and 12 examples through `torch.nn.BatchNorm1d`:

# %%
# NBVAL_CHECK_OUTPUT
layer = torch.nn.BatchNorm1d(3, momentum=None).double()
seen = [torch.tensor(rng.standard_normal((n, 3)) * 2 + 1) for n in (8, 5, 12)]
for x in seen:
    layer(x)
average_mean = torch.stack([x.mean(dim=0) for x in seen]).mean(dim=0)
average_var = torch.stack([x.var(dim=0, unbiased=True) for x in seen]).mean(dim=0)
print("running_mean               ", layer.running_mean.numpy())
print("average of the batch means ", average_mean.numpy(),
      f" max |difference| {'< 1e-12' if (layer.running_mean - average_mean).abs().max() < 1e-12 else 'TOO LARGE'}")
print("running_var                ", layer.running_var.numpy())
print("average of unbiased vars   ", average_var.numpy(),
      f" max |difference| {'< 1e-12' if (layer.running_var - average_var).abs().max() < 1e-12 else 'TOO LARGE'}")

# %% [markdown]
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
# weight $f = (1-w)^t$; the batches share the rest. To forget it down to 1% takes $t_{1\%} = \ln 0.01 /
# \ln(1-w) \approx 4.6/w$ batches:

# %%
# NBVAL_CHECK_OUTPUT
for w in (0.1, 0.01, 0.001):
    print(f"momentum {w:<5g}: share of the initial value after 300 / 3000 batches "
          f"{initial_value_share(w, 300):.2g} / {initial_value_share(w, 3000):.2g};  "
          f"batches until it is below 1%: {math.ceil(math.log(0.01) / math.log(1 - w))}")

# %% [markdown]
# At PyTorch's default the initial value is gone after 44 batches. At 0.001 (Keras' 0.999) it needs 4603
# batches: a 300-step run ends with three quarters of every running statistic still being the initial 0 or 1,
# and even after 3000 steps 5% of it is.
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
# **Predict, then run.** A channel's true variance is 2.7 and PyTorch's running variance starts at 1. With
# momentum 0.001, where is the raw running variance after 300 batches? (Use $f$ from the cell above.) And the
# bias-corrected one?
#
# The dashboard feeds a synthetic batch statistic to the running averages: each step draws a batch of 60 values
# and hands its mean or unbiased variance to the same update PyTorch uses. *Drift* makes the truth start below its
# final value and settle towards it over the first few hundred steps, as a layer's statistics do while the
# network learns; at the default 0.5 the variance goes from 1.35 to 2.7, as layer 1 of the network trained below
# does (1.40 to 2.73, measured there). Move *momentum* and *steps*; set *drift* to 0 to see the initial value's
# share alone.

# %%
RunningAveragesDashboard()

# %% [markdown]
# What to notice:
#
# - At momentum 0.001 and 300 steps the raw average (blue) has covered only a quarter of the way from its
#   initial value 1 ($1 - f = 0.26$). The bias-corrected one (orange) and the equal-weight one (green) sit on top
#   of each other, among the batches.
# - With drift, those two still end below the truth: they weight early batches, taken when the statistic was
#   smaller, as much as late ones. *That* is lag behind a changing network, and it is a smaller effect than the
#   initial value here.
# - Raise the momentum to 0.1: the raw and corrected curves coincide after a few dozen steps and follow the truth,
#   with the noise of the last ~10 batches. At momentum 1 the average is the last batch.
# - At 3000 steps and momentum 0.001 the initial value's share is down to 0.05, and the drift is long over.
#
# ## Precise BN, and what the gap really is
#
# Wu & Johnson (2021, "Rethinking 'Batch' in BatchNorm", Sec. 3) recommend **precise BN**: after training, freeze
# the weights and recompute each layer's statistics over a number of training batches with equal weights
# (`bnlab.nn.recompute_batchnorm_statistics`, which runs the network in training mode with `momentum=None`).
#
# Here: the lecture's network (3 hidden layers of 100 ReLU units, batch norm before each ReLU, He init) trained
# 300 steps of SGD (batch 60, learning rate 0.1) on 4,000 MNIST digits, once with momentum 0.001 and once with
# PyTorch's 0.1 as the control. The momentum changes only the running statistics, never training (the forward
# normalizes with batch statistics), so both runs end with the same weights. For each run, the test accuracy is
# measured with three sets of statistics loaded: the EMA as training left it, the EMA bias-corrected (PyTorch's
# initial values 0 and 1, the layer's momentum and `num_batches_tracked` = 300), and precise statistics over 50
# training batches of 60.
#
# **Predict, then run.** The precise layer-1 variance comes out at about 2.7 (averaged over its 100 units). What
# will the stored running variance be at momentum 0.001?

# %%
digits = load_mnist_subset()
slow, default = precise_bn_study(digits, 0.001), precise_bn_study(digits, 0.1)

# %%
# NBVAL_CHECK_OUTPUT
v = {label: values[0].mean() for label, values in slow.running_var.items()}   # layer 1, mean over its units
share, gap = slow.initial_share, v["precise"] - v["ema"]
print(f"momentum 0.001, 300 steps: share of the initial value 0.999^300 = {share:.3f}")
print(f"layer-1 running_var, mean over units: untrained network {v['init']:.2f}, EMA {v['ema']:.2f}, "
      f"bias-corrected {v['corrected']:.2f}, precise {v['precise']:.2f}")
print(f"gap precise - EMA {gap:.2f}: the initial value's share explains {v['corrected'] - v['ema']:.2f} "
      f"({(v['corrected'] - v['ema']) / gap:.0%}), lag behind the changing network "
      f"{v['precise'] - v['corrected']:.2f}")
for study in (slow, default):
    acc = study.accuracy
    print(f"momentum {study.momentum:<5g}: test accuracy EMA {acc['ema']:.3f}, "
          f"bias-corrected {acc['corrected']:.3f}, precise {acc['precise']:.3f};  "
          f"precise - EMA {acc['precise'] - acc['ema']:+.3f}, "
          f"precise - corrected {acc['precise'] - acc['corrected']:+.3f}")
same = np.abs(slow.running_var["precise"] - default.running_var["precise"]).max()
print(f"the two runs end with the same network: max |difference| of their precise variances "
      f"{'< 1e-6' if same < 1e-6 else f'{same:.2g} (TOO LARGE)'}")

# %% [markdown]
# Brackets: at momentum 0.001 the EMA is below precise by more than 0.02; after bias correction, and at momentum
# 0.1 without it, the difference stays within 0.01 (10 of the 1,000 test digits).

# %%
# NBVAL_CHECK_OUTPUT
slow_gap = slow.accuracy["precise"] - slow.accuracy["ema"]
corrected_gap = slow.accuracy["precise"] - slow.accuracy["corrected"]
default_gap = default.accuracy["precise"] - default.accuracy["ema"]
print(f"momentum 0.001: precise - EMA {slow_gap:.3f} (> 0.02);  "
      f"|precise - corrected| {abs(corrected_gap):.3f} (< 0.01)")
print(f"momentum 0.1:   |precise - EMA| {abs(default_gap):.3f} (< 0.01)")

# %%
plot_precise_bn([slow, default]);

# %% [markdown]
# What to notice:
#
# - At momentum 0.001 the raw running variances (blue) lie along the dotted line $f\cdot 1 + (1-f)\cdot$precise
#   with $f = 0.74$: each is mostly the initial 1. Bias correction (orange) moves them back towards the diagonal,
#   and most of the accuracy with them.
# - What remains between corrected and precise is the real lag: the corrected average weights all 300 batches
#   almost equally (from $0.001\cdot 0.999^{299} = 0.00074$ to 0.001), including the early ones, when layer 1's
#   variance was nearer its untrained value (1.40). In this run it is about a fifth of the gap in layer 1's
#   variance, and a few test digits.
# - The control: at momentum 0.1 the same network's stored statistics already sit on the diagonal (the initial
#   value's share is $0.9^{300} \approx 2\cdot 10^{-14}$, and the last ~10 batches come from the final weights),
#   and EMA and precise accuracy agree.
#
# So "a slow moving average describes a network that no longer exists" is mostly the wrong diagnosis for a short
# run: it mainly still describes *no* network — its initial values. Bias correction removes that part with no
# extra pass over the data; precise BN removes both parts at once, at the cost of one pass over a few dozen
# training batches with the final weights.
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
# three:

# %%
# NBVAL_CHECK_OUTPUT
check = folding_check(slow.model, digits.x_test)
print(f"batch norm layers before / after folding: {check.norms_before} / {check.norms_after}")
print(f"eval mode:     max |logit difference| "
      f"{'< 1e-4' if check.eval_difference < 1e-4 else f'{check.eval_difference:.2g} (TOO LARGE)'} "
      f"(float32 rounding)")
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
print(f"folded forward into the next Linear: max |difference| "
      f"{'< 1e-4' if after.forward_difference < 1e-4 else f'{after.forward_difference:.2g} (TOO LARGE)'}")

# %% [markdown]
# ## Summary
#
# - At inference batch norm uses population statistics and becomes a fixed affine map per channel, so a
#   prediction never depends on the rest of the batch (and a batch of one works).
# - PyTorch keeps a running average with momentum = weight of the new batch (0.1) and stores the **unbiased**
#   variance. Keras 3 uses momentum = weight of the old average (0.99, i.e. 0.01 for the new batch) and feeds the
#   **biased** variance, as do CS231n (0.9, running variance starting at 0) and d2l (PyTorch's 0.1). A biased
#   running variance is $(m-1)/m$ of the truth: negligible at $m = 256$, half at $m = 2$.
# - `momentum=None` gives the paper's equal-weight average.
# - After $t$ batches a running average still holds $(1-\text{momentum})^t$ of its initial value (0.74 at
#   momentum 0.001 after 300 steps). Dividing it out (bias correction, as in Adam) recovers most of the accuracy
#   lost; what remains is lag behind the changing weights. Precise BN recomputes equal-weight statistics with the
#   final weights and removes both; at momentum 0.1 there was no gap to remove.
# - An inference-mode batch norm folds into a Linear or convolution directly before it; one after an activation
#   does not fold backward (it can fold forward into a following Linear).
#
# ## Questions
#
# 1. A model trained in PyTorch with default settings is ported to Keras with `momentum=0.1` copied over. What
#    weight does each new batch get in Keras, what do the moving statistics then describe, and when would you
#    notice?
# 2. A network trained 200 steps with momentum 0.01 does worse in eval mode than in training mode. What share of
#    its running statistics is still the initial value? Name two fixes that need no retraining.
# 3. Keras trains a BN layer on batches of 4 vectors. By what factor is its moving variance off, and how does that
#    change the size of the layer's outputs at inference?
# 4. Why can folding only be done in inference mode, and why not into the layer before a batch norm that follows a
#    ReLU?
# 5. Precise BN above used 50 batches of 60. What would go wrong with batches of 2? (Think of what the deeper
#    layers see while the statistics are recomputed in training mode.)
#
# Next: [Lecture 6 — batch norm in PyTorch](06_pytorch_layer.ipynb), which ends with a one-page convention sheet
# for all of this.
