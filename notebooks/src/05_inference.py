# %% [markdown]
# # Lecture 5 — Inference: running statistics, momentum, precise BN, folding
#
# **Learning goals.** After this lecture you can
# 1. explain why a trained batch norm layer must not use batch statistics at test time, and what it uses instead
#    (Algorithm 2);
# 2. compute one running-statistics update by hand in the conventions of PyTorch, Keras and the paper;
# 3. explain why PyTorch stores the *unbiased* variance in `running_var`, and what `momentum=None` does;
# 4. recompute population statistics exactly ("precise BN") and fold an inference-mode batch norm into the layer
#    before it.
#
# **Prerequisites.** Lecture 2 (the training forward).
#
# **Practise it.** [Exercise 1](../exercises/ex1_forward.ipynb) (`batchnorm_inference`) and
# [Exercise 3: a numpy layer with running statistics](../exercises/ex3_numpy_layer.ipynb).

# %%
import numpy as np
import torch

import bnlab.notebook
import bnlab.plots as plots
from bnlab.data import load_mnist_subset
from bnlab.functional import batchnorm_forward, batchnorm_inference
from bnlab.layers import BatchNorm
from bnlab.models import build_mlp
from bnlab.nn import batchnorm_layers, fold_batchnorm_sequential, recompute_batchnorm_statistics
from bnlab.running_stats import ema_update
from bnlab.train import evaluate, train

bnlab.notebook.setup()

# %% [markdown]
# ## A prediction must not depend on the rest of the batch
#
# In training, an example's output depends on every other example in its batch, through $\mu_\mathcal{B}$ and
# $\sigma^2_\mathcal{B}$. That is fine for learning, and wrong for prediction: the answer for one image would
# change with whatever happened to be batched with it, and a batch of one could not be normalized at all.

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
print("training mode, output changes with the batch:", not np.allclose(train_a, train_b))
print("inference mode, same output alone or batched:", np.array_equal(eval_a, eval_alone))

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
# carries the factor $m/(m-1)$: the biased batch variance underestimates the population variance by $(m-1)/m$ on
# average, so the average of biased batch variances must be corrected. A quick check with batches of 4 drawn
# from a distribution of variance 4:

# %%
# NBVAL_CHECK_OUTPUT
batches = rng.normal(0.0, 2.0, size=(20_000, 4))       # 20,000 batches of m = 4, true variance 4
biased = batches.var(axis=1, ddof=0).mean()
unbiased = batches.var(axis=1, ddof=1).mean()
print(f"average biased batch variance   (expect 4 * 3/4 = 3): {biased:.1f}")
print(f"average unbiased batch variance (expect 4):           {unbiased:.1f}")

# %% [markdown]
# ## Running statistics: three conventions for one idea
#
# Frameworks do not store every batch; they keep an exponential moving average updated after each training
# batch. The conventions differ in what "momentum" means:
#
# | | update | default | meaning of momentum |
# |---|---|---|---|
# | PyTorch | $r \leftarrow (1-\text{momentum})\,r + \text{momentum}\cdot s_\mathcal{B}$ | 0.1 | weight of the **new** batch |
# | Keras / TF | $r \leftarrow \text{momentum}\cdot r + (1-\text{momentum})\,s_\mathcal{B}$ | 0.99 | weight of the **old** average |
# | paper | $r = $ plain average over all batches | — | (PyTorch's `momentum=None`) |
#
# So Keras' 0.99 is PyTorch's 0.01 — ten times slower than PyTorch's default. Porting a model between frameworks
# with the number copied across is a classic silent bug. One update, computed exactly, starting from the
# initial $r_\mu = 0$, $r_{\sigma^2} = 1$ with the batch $\{1, 3\}$ (mean 2, unbiased variance 2):

# %%
# NBVAL_CHECK_OUTPUT
batch = np.array([[1.0], [3.0]])
pytorch_layer = BatchNorm(1, momentum=0.1)
pytorch_layer(batch)
cumulative_layer = BatchNorm(1, momentum=None)
cumulative_layer(batch)
keras_mean = ema_update(0.0, 2.0, momentum=0.99, convention="keras")
keras_var = ema_update(1.0, 2.0, momentum=0.99, convention="keras")
print(f"PyTorch, momentum 0.1 : running_mean {pytorch_layer.running_mean[0]:.3f}  running_var {pytorch_layer.running_var[0]:.3f}")
print(f"Keras,   momentum 0.99: moving_mean  {keras_mean:.3f}  moving_var  {keras_var:.3f}")
print(f"paper / momentum=None : running_mean {cumulative_layer.running_mean[0]:.3f}  running_var {cumulative_layer.running_var[0]:.3f}")

# %% [markdown]
# (Keras also uses $\epsilon = 10^{-3}$ by default, PyTorch $10^{-5}$: a second number to translate.) With
# `momentum=None` PyTorch weights batch $k$ by $1/k$, which keeps an exact running average of all batches so far
# — the paper's Algorithm 2:

# %%
# NBVAL_CHECK_OUTPUT
layer = BatchNorm(3, momentum=None)
seen = [rng.standard_normal((n, 3)) * 2 + 1 for n in (8, 5, 12)]
for x in seen:
    layer(x)
print("running_mean = average of batch means:          ",
      np.allclose(layer.running_mean, np.mean([x.mean(axis=0) for x in seen], axis=0)))
print("running_var  = average of unbiased batch vars:  ",
      np.allclose(layer.running_var, np.mean([x.var(axis=0, ddof=1) for x in seen], axis=0)))

# %% [markdown]
# ## When the moving average lags: precise BN
#
# The moving average mixes statistics computed while the weights were still changing. A layer's batch means drift
# as the layers below it learn; the figure follows one channel whose batch mean drifts from 0 to 1. A large
# momentum tracks the drift but keeps the noise of the last few batches; a small one is smooth but remembers
# batches from long ago, and ends far from the final network's statistic.

# %%
plots.plot_running_average_lag();

# %% [markdown]
# With a small momentum the running statistics describe a network that no longer exists. Wu & Johnson (2021) recommend **precise BN**: after training,
# freeze the weights and recompute each layer's statistics over a number of batches with equal weights.
#
# Here: a 3×100 ReLU network with batch norm, trained 300 steps with momentum 0.001, then evaluated with its
# moving averages and again after recomputing them over 50 training batches.

# %%
digits = load_mnist_subset()
model = build_mlp(depth=3, width=100, activation="relu", norm="batch", init="he", seed=0)
for _, bn in batchnorm_layers(model):
    bn.momentum = 0.001                                 # a very slow moving average
train(model, digits, steps=300, batch_size=60, lr=0.1, record_every=300, progress=False)
ema_accuracy = evaluate(model, digits.x_test, digits.y_test)[1]

order = torch.randperm(len(digits.x_train), generator=torch.Generator().manual_seed(0))
recompute_batchnorm_statistics(model, [digits.x_train[order[i:i + 60]] for i in range(0, 3000, 60)])
precise_accuracy = evaluate(model, digits.x_test, digits.y_test)[1]
print(f"test accuracy with the moving averages: {ema_accuracy:.3f}\n"
      f"test accuracy with precise statistics:  {precise_accuracy:.3f}")

# %%
# NBVAL_CHECK_OUTPUT
print("precise statistics beat the lagging moving average by > 0.02:", precise_accuracy - ema_accuracy > 0.02)

# %% [markdown]
# With PyTorch's default momentum 0.1 the gap disappears on this problem (try it: change 0.001 above). Precise BN
# matters when the moving average is slow, when training is short, or when the statistics must be exact.
#
# ## Folding batch norm away
#
# In inference mode a batch norm after a linear layer computes $\text{scale}\odot(Wx + b) + \text{shift}$ with
# $\text{scale} = \gamma/\sqrt{\mathrm{Var}+\epsilon}$ and $\text{shift} = \beta - \text{scale}\odot\mathrm{E}$. That is
# again a linear layer:
#
# $$ W' = \operatorname{diag}(\text{scale})\,W, \qquad b' = \text{scale}\odot b + \text{shift}. $$
#
# Deployment tools fold every batch norm into the layer before it, so it costs nothing at inference.

# %%
# NBVAL_CHECK_OUTPUT
model.eval()
folded = fold_batchnorm_sequential(model).eval()
with torch.no_grad():
    difference = (model(digits.x_test) - folded(digits.x_test)).abs().max().item()
print("batch norm layers before / after folding:", len(list(batchnorm_layers(model))), "/",
      len(list(batchnorm_layers(folded))))
print("folded network gives the same logits (max difference < 1e-4):", difference < 1e-4)

# %% [markdown]
# ## Summary
#
# - At inference batch norm uses population statistics and becomes a fixed affine map per channel, so a
#   prediction never depends on the rest of the batch (and a batch of one works).
# - PyTorch keeps an exponential moving average with momentum = weight of the new batch (0.1); Keras' momentum
#   is the weight of the old average (0.99 = PyTorch 0.01). `running_var` holds the unbiased variance.
# - `momentum=None` gives the paper's equal-weight average; precise BN recomputes it after training.
# - An inference-mode batch norm folds into the preceding linear or convolutional layer.
#
# ## Questions
#
# 1. A model trained in PyTorch with default settings is ported to Keras with `momentum=0.1` copied over. What
#    goes wrong, and when would you notice?
# 2. Why can folding only be done in inference mode?
# 3. Precise BN above used 50 batches of 60. What would go wrong with batches of 2?
#
# Next: [Lecture 6 — batch norm in PyTorch](06_pytorch_layer.ipynb).
