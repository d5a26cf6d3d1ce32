# %% [markdown]
# # Lecture 4 — The closed-form backward
#
# **Learning goals.** After this lecture you can
# 1. collapse the staged backward of lecture 3 into one formula for $\partial L/\partial x$;
# 2. state and check its invariants, and explain what they say about the layer (including the role $\epsilon$
#    plays in the second one);
# 3. read batch norm's Jacobian and say why its gradient ignores two directions per channel;
# 4. measure why the closed form is worth deriving: fewer passes over memory.
#
# **Prerequisites.** Lecture 3 (the staged backward and gradient checking).
#
# **Practise it.** [Exercise 2: the backward pass](../exercises/ex2_backward.ipynb), part 2 (`batchnorm_backward_fused`).

# %%
import numpy as np
import torch
import torch.nn.functional as F

import bnlab.notebook
import bnlab.plots as plots
from bnlab.functional import batchnorm_backward, batchnorm_backward_fused, batchnorm_forward
from bnlab.gradcheck import rel_error
from bnlab.jacobian import channel_jacobian
from bnlab.timing import time_batchnorm_implementations

bnlab.notebook.setup()

# %% [markdown]
# ## Derivation
#
# Per channel, write $s=\sqrt{\sigma^2+\epsilon}$, $\delta_i = \partial L/\partial y_i$, and let sums run over the
# $m$ values of the channel. Lecture 3's graph gave
#
# $$
# \frac{\partial L}{\partial \hat x_i} = \gamma\delta_i,\qquad
# \frac{\partial L}{\partial \sigma^2} = -\frac{1}{2s^3}\sum_j \gamma\delta_j\, x_{c,j},\qquad
# \frac{\partial L}{\partial \mu} = -\frac{1}{s}\sum_j \gamma\delta_j
# \quad\Big(\text{the path through } \sigma^2 \text{ vanishes as } \textstyle\sum_j x_{c,j}=0\Big),
# $$
#
# $$
# \frac{\partial L}{\partial x_i} = \frac{1}{s}\frac{\partial L}{\partial \hat x_i}
#   + \frac{2x_{c,i}}{m}\frac{\partial L}{\partial \sigma^2} + \frac{1}{m}\frac{\partial L}{\partial \mu}.
# $$
#
# Substitute $x_{c,j} = s\,\hat x_j$ in the middle term:
# $\frac{2 s\hat x_i}{m}\cdot\left(-\frac{1}{2s^3}\right)\sum_j\gamma\delta_j s\hat x_j = -\frac{\gamma}{ms}\,\hat x_i\sum_j\delta_j\hat x_j$.
# The last term is $-\frac{\gamma}{ms}\sum_j\delta_j$. Collecting over the common factor $\frac{\gamma}{ms}$:
#
# $$
# \boxed{\;\frac{\partial L}{\partial x_i} = \frac{\gamma}{m\,s}\Big(m\,\delta_i - \sum_j \delta_j - \hat x_i \sum_j \delta_j\hat x_j\Big)\;}
# \qquad \frac{\partial L}{\partial\gamma} = \sum_j \delta_j \hat x_j, \qquad \frac{\partial L}{\partial\beta} = \sum_j\delta_j .
# $$
#
# The two sums are exactly $\partial L/\partial\beta$ and $\partial L/\partial\gamma$, which the backward computes
# anyway. So: two reductions, then one element-wise pass. The library evaluates it as
# $a\,\delta + b\,\hat x + c$ with per-channel coefficients, block by block so each block stays in cache:

# %%
bnlab.notebook.show_source(batchnorm_backward_fused)

# %% [markdown]
# It agrees with the staged version and with PyTorch, on lecture 3's example and on a 4-D batch:

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(0)
for shape in [(3, 2), (8, 4, 5, 5)]:
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, shape[1]) + (1,) * (len(shape) - 2)) + 2
    gamma, beta = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1])
    dout = rng.standard_normal(shape)
    _, cache = batchnorm_forward(x, gamma, beta)
    fused, staged = batchnorm_backward_fused(dout, cache), batchnorm_backward(dout, cache)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    torch_grads = torch.autograd.grad(F.batch_norm(xt, None, None, gt, bt, training=True), (xt, gt, bt),
                                      torch.tensor(dout))
    worst_staged = max(rel_error(f, s) for f, s in zip(fused, staged))
    worst_torch = max(rel_error(f, t.numpy()) for f, t in zip(fused, torch_grads))
    print(f"{str(shape):14s} fused = staged to 1e-12: {worst_staged < 1e-12},  fused = torch to 1e-12: "
          f"{worst_torch < 1e-12}")

# %% [markdown]
# ## Two invariants
#
# Sum the boxed formula over $i$: since $\sum_i \hat x_i = 0$,
#
# $$\sum_i \frac{\partial L}{\partial x_i} = \frac{\gamma}{ms}\Big(m\sum\delta - m\sum\delta - 0\Big) = 0 .$$
#
# Multiply by $\hat x_i$ first: since $\sum_i \hat x_i^2 = m\,\sigma^2/(\sigma^2+\epsilon)$,
#
# $$\sum_i \hat x_i\frac{\partial L}{\partial x_i} = \frac{\gamma}{ms}\sum_j\delta_j\hat x_j\Big(m - \sum_i\hat x_i^2\Big)
#   = \frac{\gamma}{s}\,\frac{\partial L}{\partial \gamma}\cdot\frac{\epsilon}{\sigma^2+\epsilon}.$$
#
# The first is exact: shifting a channel's inputs by a constant changes nothing downstream, so the gradient has
# no component along the constant direction. The second is *almost* zero: scaling a channel's inputs about
# their mean would change nothing either — if $\epsilon$ were 0. Textbooks often state both as exact; $\epsilon$
# breaks the second, by a factor $\epsilon/(\sigma^2+\epsilon)$ that is negligible unless the channel is nearly
# constant.

# %%
# NBVAL_CHECK_OUTPUT
x = rng.standard_normal((16, 3)) * np.array([2.0, 0.01, 0.001]) + 5   # the last channel's variance ~ eps/10
gamma, beta, dout = np.array([1.5, -0.7, 2.0]), np.zeros(3), rng.standard_normal((16, 3))
_, cache = batchnorm_forward(x, gamma, beta)
dx, dgamma, _ = batchnorm_backward_fused(dout, cache)
scale = np.abs(gamma) * cache.inv.ravel() * np.abs(dout).sum(axis=0)   # size of the terms that cancel
eps_term = gamma * cache.inv.ravel() * dgamma * cache.eps / (cache.batch_var + cache.eps)
print("sum of dx is 0 in every channel:               ", np.all(np.abs(dx.sum(axis=0)) < 1e-12 * scale))
print("sum of dx * xhat equals the eps term:          ",
      np.allclose((dx * cache.xhat).sum(axis=0), eps_term, rtol=1e-8, atol=1e-12 * scale.max()))
print("the factor eps / (var + eps), per channel:      ", (cache.eps / (cache.batch_var + cache.eps)).round(3))

# %% [markdown]
# For the first channel (variance 4) the second invariant holds to six digits; for the last one, whose variance
# is about a tenth of $\epsilon$, it fails completely — $\epsilon$ has taken over the normalization there, as in
# lecture 2's figure.
#
# ## The Jacobian
#
# For one channel the boxed formula is a matrix:
# $\;J = \frac{\partial y}{\partial x} = \frac{\gamma}{ms}\big(m I - \mathbf 1\mathbf 1^\top - \hat x\hat x^\top\big)$.
# It is symmetric, sends the constant vector to zero, and (for $\epsilon\to 0$) also $\hat x$. For lecture 2's
# feature 0, the values $1, 2, 6$ with $\gamma = 2$:

# %%
plots.plot_jacobian([1.0, 2.0, 6.0], gamma=2.0);

# %%
# NBVAL_CHECK_OUTPUT
jacobian = channel_jacobian([1.0, 2.0, 6.0], gamma=2.0)
s = np.sqrt(np.var([1.0, 2.0, 6.0]) + 1e-5)
print("rows sum to zero:                  ", np.allclose(jacobian.sum(axis=1), 0, atol=1e-12))
eigenvalues = np.sort(np.linalg.eigvalsh(jacobian) / (2.0 / s)).round(4) + 0.0   # + 0.0 turns -0.0 into 0.0
print("eigenvalues in units of gamma / s: ", eigenvalues)

# %% [markdown]
# With three examples, batch norm passes gradient along **one** direction per channel: the two others
# (shift and scale) are projected out. With $m=2$ it passes none — a batch of two always outputs $\pm 1$,
# whatever the input (lecture 2). This projection is the algebra behind lecture 9's result that batch norm makes
# the loss invariant to the scale of the weights before it.
#
# ## What the closed form buys: speed
#
# The staged backward materializes a full-size array at nearly every node; the fused one reads `dout` and
# `xhat` a couple of times and writes `dx` once. Measured live on this machine, backward only (float32, one
# thread; `benchmarks/bench_batchnorm.py` measures forward + backward too, more carefully):

# %%
for shape in [(256, 1024), (64, 64, 32, 32)]:
    timings = time_batchnorm_implementations(shape, repeats=5, backward_only=True, rounds=2)
    plots.plot_timings(timings, shape, what="backward")

# %% [markdown]
# **What to notice.** On the large 4-D batch every pass over its 16 MiB costs milliseconds, so the number of
# passes decides the time. PyTorch's C++ kernel fuses further still (lecture 6 builds a torch version of the
# closed form). Timings vary from machine to machine and run to run; the ratios are what carry over.
#
# ## Summary
#
# - $\frac{\partial L}{\partial x} = \frac{\gamma}{ms}\big(m\delta - \sum\delta - \hat x\sum\delta\hat x\big)$:
#   the two sums are $\partial L/\partial\beta$ and $\partial L/\partial\gamma$.
# - Per channel, $\sum\partial L/\partial x = 0$ exactly, and $\sum \hat x\,\partial L/\partial x = 0$ up to a
#   factor $\epsilon/(\sigma^2+\epsilon)$.
# - The Jacobian projects out the shift and scale directions; the fused form is also much faster.
#
# ## Questions
#
# 1. Show that $J$ is symmetric. Is the Jacobian of layer norm symmetric too?
# 2. Why does a batch of two make the gradient with respect to $x$ vanish (up to $\epsilon$)? What does that mean
#    for training with tiny batches (lecture 8)?
# 3. Our fused backward makes about three trips through memory. What is the least any backward could do, given
#    what it must read and write?
#
# Next: [Lecture 5 — inference and running statistics](05_inference.ipynb).
