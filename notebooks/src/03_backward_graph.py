# %% [markdown]
# # Lecture 3 — The backward pass, along the computational graph
#
# **Learning goals.** After this lecture you can
# 1. draw batch norm's computational graph and write the local derivative on every edge;
# 2. backpropagate through it node by node, summing where a value feeds two nodes and where a per-channel
#    statistic feeds the whole batch;
# 3. check a gradient in a way that cannot be fooled, and explain why an all-ones upstream gradient and
#    float32 each prove nothing.
#
# **Prerequisites.** Lecture 2 (the forward pass and its cache); the chain rule.
#
# **Practise it.** [Exercise 2: the backward pass](../exercises/ex2_backward.ipynb) asks for the numbers at the
# checkpoints below before you write the code.

# %%
import numpy as np
import torch
import torch.nn.functional as F

import bnlab.notebook
import bnlab.plots as plots
from bnlab.functional import batchnorm_backward, batchnorm_forward
from bnlab.gradcheck import check_forward_backward, numerical_gradient, rel_error
from bnlab.variants import backward_with_constant_statistics

bnlab.notebook.setup()

# %% [markdown]
# ## The graph
#
# Break the forward pass into nodes that each do one simple thing. Everything below is per channel; $m$ is the
# number of values that share the channel's statistics.

# %%
plots.draw_batchnorm_graph();

# %% [markdown]
# Two rules turn this picture into a backward pass. Given the upstream gradient $\delta = \partial L/\partial y$:
#
# 1. **Multiply along an edge**: the gradient at a node's input is its output gradient times the local derivative.
# 2. **Sum where paths meet**: $x$ feeds both $x_c$ and $\mu$; $x_c$ feeds both $x_c^2$ and $\hat x$. Their
#    gradients are the sums over both branches. A per-channel quantity ($\mu$, $\sigma^2$, $r$, $\gamma$, $\beta$)
#    is used by every example of the batch, so its gradient also **sums over the batch**.
#
# Walking the graph from right to left (sums run over the $m$ values of a channel):
#
# | node | forward | backward |
# |---|---|---|
# | $\beta,\gamma$ | $y = \gamma\hat x + \beta$ | $\frac{\partial L}{\partial\beta} = \sum_i \delta_i,\quad \frac{\partial L}{\partial\gamma} = \sum_i \delta_i\hat x_i,\quad \frac{\partial L}{\partial \hat x_i} = \gamma\,\delta_i$ |
# | $r$ | $\hat x = x_c\,r$ | $\frac{\partial L}{\partial r} = \sum_i \frac{\partial L}{\partial \hat x_i}\,x_{c,i}$, and the first branch $\frac{\partial L}{\partial x_{c,i}} \mathrel{+}= \frac{\partial L}{\partial \hat x_i}\, r$ |
# | $s$ | $r = 1/s$ | $\frac{\partial L}{\partial s} = -\frac{1}{s^2}\frac{\partial L}{\partial r}$ |
# | $\sigma^2$ | $s=\sqrt{\sigma^2+\epsilon}$ | $\frac{\partial L}{\partial \sigma^2} = \frac{1}{2s}\frac{\partial L}{\partial s}$ |
# | $x_c$ | $\sigma^2 = \frac1m\sum x_c^2$ | second branch: $\frac{\partial L}{\partial x_{c,i}} \mathrel{+}= \frac{2x_{c,i}}{m}\frac{\partial L}{\partial \sigma^2}$ |
# | $\mu$ | $x_c = x-\mu$ | $\frac{\partial L}{\partial \mu} = -\sum_i \frac{\partial L}{\partial x_{c,i}}$ |
# | $x$ | $x_c = x - \mu,\ \mu=\frac1m\sum x$ | $\frac{\partial L}{\partial x_i} = \frac{\partial L}{\partial x_{c,i}} + \frac1m \frac{\partial L}{\partial \mu}$ |
#
# Here is the library's staged backward. Read it next to `batchnorm_forward` in lecture 2: the same names, the
# steps in reverse, one local derivative per line.

# %%
bnlab.notebook.show_source(batchnorm_backward)

# %% [markdown]
# ### Checkpoint: the tiny example
#
# Back to lecture 2's batch, with an upstream gradient. Compute $\partial L/\partial\sigma^2$ and
# $\partial L/\partial\mu$ for feature 0 yourself before running the cell (exercise 2 asks for them).
# $\mu$ reaches the loss along two paths: directly through $x_c$, and through $\sigma^2$ (which depends on
# $x_c$). The second path contributes $\frac{\partial L}{\partial\sigma^2}\cdot\frac{-2}{m}\sum_i x_{c,i}$, and that
# is exactly 0 because centred values sum to zero — a fact the closed form of lecture 4 exploits.

# %%
# NBVAL_CHECK_OUTPUT
x = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 30.0]])
gamma, beta = np.array([2.0, 0.5]), np.array([1.0, -1.0])
dout = np.array([[0.5, -1.0], [1.0, 0.0], [-2.0, 3.0]])

out, cache = batchnorm_forward(x, gamma, beta)
dxhat = dout * gamma
dvar = np.sum(dxhat * cache.xc, axis=0) * -0.5 * (cache.batch_var + cache.eps) ** -1.5
dmu = -np.sum(dxhat * cache.inv, axis=0) - dvar * 2 * np.mean(cache.xc, axis=0)
print("dL/dvar:", dvar.round(4))
print("dL/dmu: ", dmu.round(4))
dx, dgamma, dbeta = batchnorm_backward(dout, cache)
print("dx:\n", dx.round(4))

# %% [markdown]
# Does it agree with PyTorch's autograd on the same numbers?

# %%
# NBVAL_CHECK_OUTPUT
xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
reference = torch.autograd.grad(F.batch_norm(xt, None, None, gt, bt, training=True), (xt, gt, bt),
                                torch.tensor(dout))
for name, ours, theirs in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta), reference):
    print(f"{name:6s} agrees with torch to 1e-12:", rel_error(ours, theirs.numpy()) < 1e-12)

# %% [markdown]
# ## Gradient checking done right
#
# Agreement with a reference is the best check when one exists. When it does not — your own layer, a new
# idea — compare with finite differences. For the loss $L(x) = \sum y(x)\cdot\delta$, the centred difference
#
# $$ \frac{\partial L}{\partial x_j} \approx \frac{L(x + h e_j) - L(x - h e_j)}{2h} $$
#
# has error $O(h^2)$ from truncation plus $O(\text{machine eps}/h)$ from rounding. Two traps make this check
# pass broken code.
#
# ### Trap 1: an all-ones upstream gradient
#
# Many people test a backward by calling `y.sum().backward()`, i.e. $\delta = 1$. For batch norm that loss is
# $\sum_i(\gamma\hat x_i + \beta) = m\beta$ because $\hat x$ sums to zero in every channel: **it does not depend
# on $x$ at all**. The true gradient is exactly zero, so a backward that returns zeros passes.

# %%
# NBVAL_CHECK_OUTPUT
ones = np.ones_like(x)
numeric = numerical_gradient(lambda v: batchnorm_forward(v, gamma, beta)[0], x.copy(), ones)
print("true dx for dout = 1 is zero (max |dx| < 1e-8):", np.abs(numeric).max() < 1e-8)
zeros_backward = np.zeros_like(x)
print("a backward returning zeros matches it to 1e-8: ", np.abs(zeros_backward - numeric).max() < 1e-8)

# %% [markdown]
# ### Trap 2: float32
#
# Rounding error scales like machine epsilon over $h$. In float64 ($\approx 10^{-16}$) a step of $10^{-5}$ gives
# agreement to about $10^{-10}$; in float32 ($\approx 10^{-7}$) no step gets below about $10^{-4}$, which cannot
# tell a right backward from a slightly wrong one.

# %%
plots.plot_gradient_check_vs_step();

# %% [markdown]
# ### A check that cannot be fooled
#
# `bnlab.gradcheck.check_forward_backward` uses float64, a random upstream gradient, a $\gamma$ with a zero and
# negative entries (so a missing or misplaced $\gamma$ shows), a non-zero $\beta$, and channels with different
# means and scales (so a reduction over the wrong axis shows). The staged backward passes; the classic mistake
# of treating $\mu$ and $\sigma^2$ as constants — $\partial L/\partial x = \gamma\,\delta / s$ — fails by a
# relative error of order one.

# %%
# NBVAL_CHECK_OUTPUT
right = check_forward_backward(batchnorm_forward, batchnorm_backward, shape=(6, 4))
wrong = check_forward_backward(batchnorm_forward, backward_with_constant_statistics, shape=(6, 4))
print("staged backward passes:                     ", right.passed)
print("constant-statistics backward fails:         ", not wrong.passed)
print("its dx relative error is of order one (>0.1):", wrong.errors["dx"] > 0.1)

# %% [markdown]
# What it cannot catch: a forward and backward that agree on a *wrong convention*. Use the unbiased variance in
# both and the gradient check passes, because the backward is the true derivative of that (wrong) forward.
# Only comparison with reference values, as above, catches that — which is why the graded exercises check both.
#
# ## Summary
#
# - Backpropagation through a graph: multiply local derivatives along edges, sum where paths meet and over the
#   batch for per-channel quantities.
# - Batch norm's input reaches the output three ways (directly, through $\mu$, through $\sigma^2$); dropping the
#   last two is the most common mistake and is wrong by order one.
# - Check gradients with random upstream gradients in float64, and also against reference values.
#
# ## Questions
#
# 1. The path from $\mu$ through $\sigma^2$ contributed nothing to $\partial L/\partial\mu$. Would that still hold
#    if the forward used a variance computed around some other centre than the batch mean?
# 2. With $\delta = 1$, we showed $\partial L/\partial x = 0$. Which *other* upstream gradients give a zero
#    $\partial L/\partial x$ for every input?
# 3. Why does the gradient check use a $\gamma$ containing a zero?
#
# Next: [Lecture 4 — the closed form](04_closed_form.ipynb).
