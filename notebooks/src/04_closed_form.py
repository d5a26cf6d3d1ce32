# %% [markdown]
# # Lecture 4 — The closed-form backward
#
# **Learning goals.** After this lecture you can
# 1. collapse the staged backward of lecture 3 into one formula for $\partial L/\partial x$;
# 2. state and check its invariants, derive them from what the forward ignores, and explain the role
#    $\epsilon$ plays in the second one;
# 3. read batch norm's Jacobian and say why its gradient ignores two directions per channel;
# 4. measure what the closed form buys, and explain it by counting passes over memory.
#
# **Prerequisites.** Lecture 3 (the staged backward and gradient checking).
#
# **Practise it.** [Exercise 2: the backward pass](../exercises/ex2_backward.ipynb), part 2 (`batchnorm_backward_fused`).

# %%
import numpy as np

import bnlab.notebook
from bnlab.functional import batchnorm_backward, batchnorm_backward_fused, batchnorm_forward
from bnlab.gradcheck import rel_error
from bnlab.jacobian import channel_jacobian
from bnlab.lessons.backward import backward_invariants, time_staged_vs_fused, torch_gradients
from bnlab.report import error_text
from bnlab.plots.gradients import plot_jacobian, plot_staged_vs_fused

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
# anyway. So: two reductions, then one element-wise expression. The library writes the boxed formula as it
# stands:

# %%
bnlab.notebook.show_source(batchnorm_backward_fused)

# %% [markdown]
# **Predict, then run.** The fused and the staged backward compute the same derivative with different
# operations in a different order. In float64, how far apart do you expect them to be: $10^{-3}$, $10^{-8}$, or
# $10^{-15}$? The cell compares both with PyTorch on lecture 3's batch and on a random 4-D batch.

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(0)
lecture_3 = (np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 30.0]]), np.array([2.0, 0.5]), np.array([1.0, -1.0]),
             np.array([[0.5, -1.0], [1.0, 0.0], [-2.0, 3.0]]))
shape = (8, 4, 5, 5)
random_4d = (rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, 4, 1, 1)) + 2, rng.uniform(0.5, 2, 4),
             rng.standard_normal(4), rng.standard_normal(shape))
for name, (x, gamma, beta, dout) in (("lecture 3's (3, 2)", lecture_3), ("random (8, 4, 5, 5)", random_4d)):
    _, cache = batchnorm_forward(x, gamma, beta)
    fused, staged = batchnorm_backward_fused(dout, cache), batchnorm_backward(dout, cache)
    reference = torch_gradients(x, gamma, beta, dout)
    print(f"{name:20s} max rel. error over dx, dgamma, dbeta (each < 1e-12): "
          f"fused vs staged {error_text(max(map(rel_error, fused, staged)))}, "
          f"fused vs torch {error_text(max(map(rel_error, fused, reference)))}, "
          f"staged vs torch {error_text(max(map(rel_error, staged, reference)))}")

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
# The first is exact; the second is zero only as $\epsilon \to 0$, and otherwise carries the factor
# $\epsilon/(\sigma^2+\epsilon)$, negligible unless the channel is nearly constant.
#
# **Where they come from: the forward.** Both identities are consequences of what the forward ignores, not
# properties of the backward algebra. Shift a channel's inputs by a constant, $x_i \to x_i + c$: $\mu$ moves by
# $c$, $x_c$ and everything after it do not, so the loss is the same for every $c$. A function that does not
# change along a direction has zero derivative along it:
# $\frac{d}{dc}L(x + c\mathbf 1)\big|_{c=0} = \sum_i \partial L/\partial x_i = 0$ — the first invariant, exact
# for any $\epsilon$. Scale a channel's inputs about their mean, $x_c \to a\,x_c$: then
# $\hat x \to a x_c/\sqrt{a^2\sigma^2+\epsilon}$, which is $\hat x$ again only if $\epsilon = 0$. So the loss is
# invariant to this scaling as $\epsilon\to 0$, and its derivative at $a=1$,
# $\sum_i x_{c,i}\,\partial L/\partial x_i = s\sum_i \hat x_i\,\partial L/\partial x_i$, vanishes in that limit —
# the second invariant. With $\epsilon > 0$ the forward does change a little under scaling, and the $\epsilon$
# factor above is exactly that change.
#
# **Predict, then run.** The cell below builds three channels with variances about 5, $5\times 10^{-5}$ and
# $6\times10^{-7}$ (below a tenth of $\epsilon = 10^{-5}$). In which will $\sum_i\hat x_i\,\partial L/\partial x_i$
# be far from zero?

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 3)) * np.array([2.0, 0.01, 0.001]) + 5
gamma, beta, dout = np.array([1.5, -0.7, 2.0]), np.zeros(3), rng.standard_normal((16, 3))
_, cache = batchnorm_forward(x, gamma, beta)
sums = backward_invariants(dout, cache)                 # per-channel sums of the fused backward's dx
ratio = sums["sum dx xhat"] / sums["gamma dgamma / s"]  # the second invariant in units of gamma/s * dgamma
print("channel  variance  eps/(var+eps)  sum(xhat*dx) / (gamma/s*dgamma)  |sum dx| / scale (< 1e-12)")
for c in range(3):
    print(f"{c:7d}  {cache.batch_var[c]:8.1e}  {sums['eps factor'][c]:13.4e}  {ratio[c]:31.4e}  "
          f"{error_text(abs(sums['sum dx'][c]) / sums['scale'][c], floor=1e-14):>16s}")
residue = np.abs(sums["sum dx xhat"] - sums["eps term"]) / sums["scale"]
print(f"|sum(xhat*dx) - eps term| / scale, worst channel: {error_text(residue.max(), floor=1e-14)} (< 1e-10)")

# %% [markdown]
# Here scale $= |\gamma|/s\cdot\sum_i|\delta_i|$ is the size of the terms that cancel in $\sum_i\partial L/\partial x_i$:
# a rounding residue is small or large relative to it, not relative to 1. The nearly constant channels carry
# the largest residues (up to about $10^{-13}$): centring values near 5 that differ by about 0.01 or 0.001
# keeps only 13 or 12 of float64's 16 digits. The second invariant, measured in units of
# $\frac{\gamma}{s}\frac{\partial L}{\partial\gamma}$, *is* the factor $\epsilon/(\sigma^2+\epsilon)$: about
# $2\times 10^{-6}$ for the first channel, $0.16$ for the second, and $0.94$ for the last one, whose variance is
# below a tenth of $\epsilon$ — there $\epsilon$ has taken over the normalization (lecture 2's figure) and the
# layer no longer ignores the scale of its input.
#
# ## The Jacobian
#
# For one channel the boxed formula is a matrix:
# $\;J = \frac{\partial y}{\partial x} = \frac{\gamma}{ms}\big(m I - \mathbf 1\mathbf 1^\top - \hat x\hat x^\top\big)$.
# It is symmetric. For lecture 2's feature 0, the values $1, 2, 6$ with $\gamma = 2$:

# %%
plot_jacobian([1.0, 2.0, 6.0], gamma=2.0);

# %% [markdown]
# **What to notice.** Each row adds up to zero, and every row is a multiple of the same vector, $(4, -5, 1)$:
# row 1 is 4 times row 3, row 2 is $-5$ times it. That vector is orthogonal both to $\mathbf 1$ ($4 - 5 + 1 = 0$)
# and to $\hat x \propto x_c = (-2, -1, 3)$ ($-8 + 5 + 3 = 0$); with $m = 3$ it is the only direction left. The
# input that moves the outputs least is $x_3 = 6$, the one far from the mean: nudging it mostly changes the
# batch's mean and spread, which the layer normalizes away.
#
# **Predict, then run.** $J\mathbf 1 = 0$ exactly, and $\hat x^\top\hat x = m\sigma^2/(\sigma^2+\epsilon)$. What
# are the three eigenvalues of $J$, in units of $\gamma/s$?

# %%
# NBVAL_CHECK_OUTPUT
values = np.array([1.0, 2.0, 6.0])
jacobian = channel_jacobian(values, gamma=2.0)
unit = 2.0 / np.sqrt(values.var() + 1e-5)                       # gamma / s
row_sums = jacobian.sum(axis=1) / unit
eigenvalues, vectors = np.linalg.eigh(jacobian)                 # ascending; J is symmetric
eigenvalues = eigenvalues / unit
print("row sums / (gamma/s):  ", ", ".join(error_text(abs(r)) for r in row_sums), " (each < 1e-12)")
print(f"eigenvalues / (gamma/s): {error_text(abs(eigenvalues[0]))} (constant direction, < 1e-12),  "
      f"{eigenvalues[1]:.4e} (xhat direction; eps/(var+eps) = {1e-5 / (values.var() + 1e-5):.4e}),  "
      f"{eigenvalues[2]:.4f} (the remaining direction)")
top = vectors[:, 2] * np.sqrt(42) * np.sign(vectors[0, 2])      # its unit eigenvector, scaled by sqrt(42)
print("the remaining direction, times sqrt(42):", ", ".join(f"{v:.4f}" for v in top))

# %% [markdown]
# With three examples, batch norm passes gradient along **one** direction per channel, scaled by $\gamma/s$;
# the constant direction is projected out exactly and the $\hat x$ direction up to $\epsilon/(\sigma^2+\epsilon)$.
# With $m=2$ it passes none: a batch of two always outputs $\pm 1$, whatever the input (lecture 2).
#
# Again the cause is the forward: the output does not move when the input moves along $\mathbf 1$ (or, as
# $\epsilon\to 0$, along $\hat x$), so the Jacobian must send those directions to zero. The same argument one
# layer up gives lecture 9's weight invariance. If the channel's inputs come from a linear layer, $x = Wu$ (one
# row of $W$ per channel, no bias), then $\text{BN}(aWu) = \text{BN}(Wu)$ for every $a > 0$ (up to $\epsilon$),
# so $L(aW) = L(W)$ and differentiating at $a = 1$ gives $\langle \nabla_W L, W\rangle = 0$. In terms of this
# lecture's sums,
#
# $$\langle \nabla_W L, W\rangle = \sum_{n,c} x_{nc}\frac{\partial L}{\partial x_{nc}}
#   = \sum_c\Big(\mu_c\sum_n\frac{\partial L}{\partial x_{nc}} + s_c\sum_n \hat x_{nc}\frac{\partial L}{\partial x_{nc}}\Big)
#   = \sum_c \gamma_c\frac{\partial L}{\partial\gamma_c}\,\frac{\epsilon}{\sigma_c^2+\epsilon} ,$$
#
# zero as $\epsilon \to 0$: the invariance of the forward is the cause, the orthogonality of the gradient the
# consequence.

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(1)
u, W = rng.standard_normal((32, 5)), rng.standard_normal((4, 5))   # 32 inputs to a layer with 4 outputs
dout, ones, zeros = rng.standard_normal((32, 4)), np.ones(4), np.zeros(4)
out, cache = batchnorm_forward(u @ W.T, ones, zeros)
dx, dgamma, _ = batchnorm_backward_fused(dout, cache)
dW = dx.T @ u                                                      # x = u W^T, so dL/dW = dx^T u
inner = np.sum(dW * W)
predicted = np.sum(ones * dgamma * cache.eps / (cache.batch_var + cache.eps))
print(f"max |BN(2Wu) - BN(Wu)|: {np.abs(batchnorm_forward(u @ (2 * W).T, ones, zeros)[0] - out).max():.1e} "
      f"(eps-sized)")
print(f"<dL/dW, W> = {inner:.4e};  sum_c gamma dgamma eps/(var+eps) = {predicted:.4e}")
print(f"<dL/dW, W> / (|dL/dW| |W|) = {inner / (np.linalg.norm(dW) * np.linalg.norm(W)):.1e} (< 1e-5)")

# %% [markdown]
# ## What the closed form buys: fewer passes over memory
#
# Both backwards compute the same numbers; they differ in how much memory they touch. Here is the library's
# staged backward (lecture 3's cell, written for any number of spatial axes):

# %%
bnlab.notebook.show_source(batchnorm_backward)

# %% [markdown]
# Count, in the two listings, the arrays as large as the batch that each line reads or writes: numpy evaluates
# every operator into a new full-size array, and per-channel values are too small to matter. Reading or writing
# a float32 array costs 4 bytes per element. The count comes to:
#
# | | full-size arrays created | reductions over the batch | full-size reads + writes | bytes per float32 element |
# |---|---|---|---|---|
# | staged (`batchnorm_backward`) | 8 | 4 | 23 | 92 |
# | fused (`batchnorm_backward_fused`) | 6 | 2 | 16 | 64 |
#
# a ratio of about 1.4. The cell below times both, with PyTorch's native kernel for scale, on a fully
# connected batch (1 MiB) and a convolutional one (16 MiB), the backward alone and forward + backward
# (float32, one thread; `benchmarks/bench_batchnorm.py` measures the same with more repeats, and torch on two
# threads too).

# %%
plot_staged_vs_fused(time_staged_vs_fused(repeats=5, rounds=3));

# %% [markdown]
# **What to notice.** The backward alone is where the closed form pays. On the machine this course was built
# on, the staged / fused ratio of the backward came out between about 1.5 and 1.8 in repeated runs, on both
# shapes: close to, a little above, the 1.4 of the byte count. Forward + backward the ratio shrinks to about
# 1.2–1.4, because both run the same forward, which costs roughly as much as the staged backward. Timings vary
# from machine to machine and from run to run (a busy machine produces outliers in either direction); the
# ratios, and the passes over memory behind them, are what carry over. Lecture 6 times a torch version of the
# closed form against PyTorch's C++ kernel.
#
# ## Summary
#
# - $\frac{\partial L}{\partial x} = \frac{\gamma}{ms}\big(m\delta - \sum\delta - \hat x\sum\delta\hat x\big)$:
#   the two sums are $\partial L/\partial\beta$ and $\partial L/\partial\gamma$.
# - Per channel, $\sum\partial L/\partial x = 0$ exactly, and $\sum \hat x\,\partial L/\partial x =
#   \frac{\gamma}{s}\frac{\partial L}{\partial\gamma}\cdot\frac{\epsilon}{\sigma^2+\epsilon}$. Both follow from
#   the forward: it ignores a shift of a channel's inputs exactly, and a scaling of them as $\epsilon\to 0$. The
#   same argument gives $\langle\nabla_W L, W\rangle = 0$ for the weights before a batch norm.
# - The Jacobian projects out the shift and (up to $\epsilon$) the scale directions.
# - The fused form computes the same gradient with fewer passes over memory: about 1.5× faster for the backward
#   here.
#
# ## Questions
#
# 1. Show that $J$ is symmetric. Is the Jacobian of layer norm symmetric too?
# 2. Why does a batch of two make the gradient with respect to $x$ vanish (up to $\epsilon$)? What does that mean
#    for training with tiny batches (lecture 8)?
# 3. The fused numpy backward moves about 64 bytes per float32 element. What is the least any backward could
#    move, given what it must read and write? (Hint: no element of $\partial L/\partial x$ can be written before
#    both sums are complete.)
#
# <details><summary>Answer to question 3</summary>
#
# One pass reads $\delta$ and $\hat x$ (or $x$) to form the two sums; a second pass reads them again and writes
# $\partial L/\partial x$: five array passes, 20 bytes per float32 element (the forward's minimum is 12: read
# $x$ once for the statistics, then read it and write $y$). Only a kernel that fuses the whole expression into
# one loop gets near that; numpy, one operator at a time, cannot.
#
# </details>
#
# Next: [Lecture 5 — inference and running statistics](05_inference.ipynb).
