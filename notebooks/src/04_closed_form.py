# %% [markdown]
# # Lecture 4 — The closed-form backward
#
# **Learning goals.** After this lecture you can
# 1. collapse the staged backward of lecture 3 into one formula for $\partial L/\partial x$;
# 2. state and check its invariants, derive them from what the forward ignores, and explain the role
#    $\epsilon$ plays in the second one;
# 3. read batch norm's Jacobian and say why its gradient ignores two directions per channel;
# 4. count, line by line, the passes over memory each backward makes, and test the count against a measured
#    control: a copy of an array of the batch's size, timed in the same run.
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
from bnlab.lessons.backward import torch_gradients
from bnlab.lessons.closed_form import (FLOORS, OPERATION_PASSES, TALLY, passes, time_closed_form,
                                       time_single_operations)
from bnlab.plots.gradients import plot_jacobian
from bnlab.plots.speed import plot_pass_equivalents
from bnlab.report import error_text, within

bnlab.notebook.setup()

# %% [markdown]
# ## Derivation
#
# Per channel, write $x_{c,i} = x_i - \mu$ for the centred values (lecture 3's `xc`), $s=\sqrt{\sigma^2+\epsilon}$,
# $\delta_i = \partial L/\partial y_i$, and let sums run over the $m$ values of the channel. Lecture 3's graph gave
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
# **How the checked numbers are printed.** An error made of a few float64 roundings differs in its last bits
# from machine to machine, so it is not printed digit for digit: "below 1e-14" means under that floor (an
# exact 0 included), "< 1e-13" means between $10^{-14}$ and $10^{-13}$ (rounded up to the next power of ten),
# and larger values get three significant digits. A bound in brackets, as in "(each < 1e-12)" above, is the
# bracket the value is checked against; a value outside it would read "OUTSIDE the bracket". All three backwards
# agree to float64 rounding.
#
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
# properties of the backward algebra. Shift a channel's inputs by a constant, $x_i \to x_i + t$: $\mu$ moves by
# $t$, $x_c$ and everything after it do not, so the loss is the same for every $t$. A function that does not
# change along a direction has zero derivative along it:
# $\frac{d}{dt}L(x + t\mathbf 1)\big|_{t=0} = \sum_i \partial L/\partial x_i = 0$ — the first invariant, exact
# for any $\epsilon$. You met one consequence in [lecture 2](02_forward_pass.ipynb), section "A bias just before
# batch norm is wasted": a bias $b_k$ added to channel $k$ just before batch norm is such a shift, so its
# gradient $\partial L/\partial b_k = \sum_i \partial L/\partial x_{ik}$ is exactly zero. Scale a channel's inputs about
# their mean, $x_c \to a\,x_c$: then $\hat x \to a x_c/\sqrt{a^2\sigma^2+\epsilon}$, which is $\hat x$ again only
# if $\epsilon = 0$. So the loss is invariant to this scaling as $\epsilon\to 0$, and its derivative at $a=1$,
# $\sum_i x_{c,i}\,\partial L/\partial x_i = s\sum_i \hat x_i\,\partial L/\partial x_i$, vanishes in that limit —
# the second invariant. With $\epsilon > 0$ the forward does change a little under scaling, and the $\epsilon$
# factor above is exactly that change.
#
# **Predict, then run.** The cell below builds three channels with variances about 5, $5\times 10^{-5}$ and
# $6\times10^{-7}$ (below a tenth of $\epsilon = 10^{-5}$). In which will $\sum_i\hat x_i\,\partial L/\partial x_i$
# be far from zero? The two sums are one line of numpy each.

# %%
# NBVAL_CHECK_OUTPUT
rng = np.random.default_rng(0)
x = rng.standard_normal((16, 3)) * np.array([2.0, 0.01, 0.001]) + 5
gamma, beta, dout = np.array([1.5, -0.7, 2.0]), np.zeros(3), rng.standard_normal((16, 3))
_, cache = batchnorm_forward(x, gamma, beta)
dx, dgamma, dbeta = batchnorm_backward_fused(dout, cache)
var, eps = cache.batch_var, cache.eps
s = np.sqrt(var + eps)
sum_dx = dx.sum(axis=0)                               # first invariant: 0
sum_xhat_dx = (cache.xhat * dx).sum(axis=0)           # second: gamma / s * dgamma * eps / (var + eps)
eps_factor = eps / (var + eps)
scale = np.abs(gamma) / s * np.abs(dout).sum(axis=0)  # size of the terms that cancel in sum_dx
print("channel  variance  eps/(var+eps)  sum(xhat*dx) / (gamma/s*dgamma)")
for k in range(3):
    print(f"{k:7d}  {var[k]:8.1e}  {eps_factor[k]:13.4e}  {sum_xhat_dx[k] / (gamma[k] / s[k] * dgamma[k]):31.4e}")
residue = np.abs(sum_xhat_dx - gamma / s * dgamma * eps_factor) / scale
print(f"|sum(xhat*dx) - gamma/s*dgamma*eps/(var+eps)| / scale, worst channel: "
      f"{within(residue.max(), 1e-10, floor=1e-12)}")
print(f"|sum(dx)| / scale, worst channel: {within(np.max(np.abs(sum_dx) / scale), 1e-10, floor=1e-12)}")

# %% [markdown]
# The second invariant, measured in units of $\frac{\gamma}{s}\frac{\partial L}{\partial\gamma}$, *is* the factor
# $\epsilon/(\sigma^2+\epsilon)$: about $2\times 10^{-6}$ for the first channel, $0.16$ for the second, and $0.94$
# for the last one, whose variance is below a tenth of $\epsilon$ — there $\epsilon$ has taken over the
# normalization (lecture 2's figure) and the layer no longer ignores the scale of its input. Here scale
# $= |\gamma|/s\cdot\sum_i|\delta_i|$ is the size of the terms that cancel in the sums: a rounding residue is small
# or large relative to it, not relative to 1.
#
# The first invariant holds up to rounding: in float64 the computed $\hat x$ of a channel do not sum to exactly
# zero (the mean is rounded), so $\sum_i\partial L/\partial x_i$ keeps a residue, here below $10^{-12}$ of the
# terms that cancel (last line).
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
# With $m=2$ it passes none (up to $\epsilon$): a batch of two always outputs $\pm 1$ (up to $\epsilon$), whatever
# the input (lecture 2).
#
# Again the cause is the forward: the output does not move when the input moves along $\mathbf 1$ (or, as
# $\epsilon\to 0$, along $\hat x$), so the Jacobian must send those directions to zero. The same argument one
# layer up gives lecture 9's weight invariance. If the channel's inputs come from a linear layer, $x = Wu$ (one
# row $w_k$ of $W$ per channel $k$, no bias), then $\text{BN}(aWu) = \text{BN}(Wu)$ for every $a > 0$ (up to
# $\epsilon$), so $L(aW) = L(W)$ and differentiating at $a = 1$ gives $\langle \nabla_W L, W\rangle = 0$. In terms
# of this lecture's sums,
#
# $$\langle \nabla_W L, W\rangle = \sum_{n,k} x_{nk}\frac{\partial L}{\partial x_{nk}}
#   = \sum_k\Big(\mu_k\sum_n\frac{\partial L}{\partial x_{nk}} + s_k\sum_n \hat x_{nk}\frac{\partial L}{\partial x_{nk}}\Big)
#   = \sum_k \gamma_k\frac{\partial L}{\partial\gamma_k}\,\frac{\epsilon}{\sigma_k^2+\epsilon} ,$$
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
print(f"<dL/dW, W> = {inner:.4e};  sum_k gamma_k dgamma_k eps/(var_k+eps) = {predicted:.4e}")
print(f"<dL/dW, W> / (|dL/dW| |W|) = {inner / (np.linalg.norm(dW) * np.linalg.norm(W)):.1e} (< 1e-5)")

# %% [markdown]
# ## What the closed form buys: fewer passes over memory
#
# Both backwards compute the same numbers; they differ in how much memory they touch. Here is the library's
# staged backward (lecture 3's cell, written for any number of spatial axes):

# %%
bnlab.notebook.show_source(batchnorm_backward)

# %% [markdown]
# numpy evaluates every operator into a new array, so an expression such as `(dout * xhat).sum(...)` reads two
# batch-sized arrays, writes one (the product) and reads it again for the sum. Per-channel values are too small
# to matter. Call each batch-sized read or write one **pass** over memory.
#
# **Predict, then run.** Count the passes, line by line, in the staged listing above and in the fused one at the
# top of the lecture. What staged / fused time ratio would you predict if passes set the time? The cell prints
# the count (`bnlab.lessons.closed_form.TALLY`, which a test recounts operation by operation against the
# current source), starting with the numpy forward of lecture 2.

# %%
# NBVAL_CHECK_OUTPUT
for name in ("numpy forward", "numpy staged backward", "numpy fused backward"):
    reads = sum(r for _, r, _ in TALLY[name])
    print(f"{name}\n  reads writes  line")
    for line, r, w in TALLY[name]:
        print(f"  {r:5d} {w:6d}  {line}")
    print(f"  {reads:5d} {passes(name) - reads:6d}  = {passes(name)} passes, {4 * passes(name)} bytes per float32 element")
print(f"predicted staged / fused time ratio: {passes('numpy staged backward')} / {passes('numpy fused backward')} "
      f"= {passes('numpy staged backward') / passes('numpy fused backward'):.2f}")
print(f"the least any forward can make is {FLOORS['forward']} passes, any backward {FLOORS['backward']} "
      f"(question 3)")

# %% [markdown]
# **The control.** A time in milliseconds depends on the machine and on what else it is doing, so measure the
# unit in the same run: copy an array of the batch's size into one allocated beforehand. A copy reads the array
# once and writes it once, two passes at the speed this machine streams memory, so half a copy's time is the
# time of one pass. Any time divided by it is its **pass-equivalents** (`bnlab.timing.pass_equivalents`,
# $2\,t/t_\text{copy}$). If passes set the time, each bar below would end at its tick: the passes counted above,
# or, for PyTorch's native C++ backward, whose passes we cannot see inside its kernel, the floor of 5. Two
# batches, float32, one thread: a fully connected one (1 MiB per array, small enough to stay in a typical CPU's
# caches: compare the copy's bandwidth in the two panel titles) and a convolutional one (16 MiB per array).

# %%
timings = time_closed_form(repeats=5, rounds=3)
ticks = {name: (passes(name), "counted") for name in TALLY}
ticks["torch native backward"] = (FLOORS["backward"], "floor")
plot_pass_equivalents(timings, ticks, "Measured time in passes at the copy's speed; ticks: passes counted on paper",
                      ratios=[("numpy staged backward", "numpy fused backward")]);

# %% [markdown]
# **What to notice.** Every bar ends beyond its tick: no implementation runs at one copy-speed pass per counted
# pass. The ranges below are from 30 runs on the machine the course was built on, and they hold for bars with
# no page faults beside them. A page fault is the kernel mapping memory an allocator has just obtained from the
# system; how many occur depends on the allocator's state and changes from run to run, and they add time (in one
# run, 1,000 faults per call made the forward and the staged backward on the 1 MiB batch six times slower than
# usual). Rerun the cell to see how much yours move.
#
# - The two numpy backwards took 1.3 to 2.5 pass-equivalents per counted pass. Staged / fused (in each panel's
#   title) came out 1.44 to 1.85 on the 1 MiB batch, against the predicted 1.44: there the count predicts the
#   ratio. On the 16 MiB batch it came out 1.5 to 2.0: the staged backward loses more than its extra passes.
# - The forward, with 12 counted passes, took 0.8 to 1.1 times as long as the staged backward with 23: some
#   passes cost more than others, which the next figure measures.
# - PyTorch's native backward, one fused C++ kernel, took 2.3 to 5 times its floor of 5 (lecture 6 measures
#   PyTorch's kernels against their floors).
#
# **Why more than one pass-equivalent per pass?** The same control, applied to the four kinds of operation the
# listings are made of. An element-wise operation on two arrays of the same shape makes 3 passes; multiplying
# by a per-channel vector (a broadcast) 2; a sum over the batch 1; the forward's mean, which accumulates float32
# values in float64, 1.

# %%
operations = time_single_operations(repeats=5, rounds=3)
plot_pass_equivalents(operations, {name: (count, "counted") for name, count in OPERATION_PASSES.items()},
                      "Single numpy operations, float32, against the same copy control");

# %% [markdown]
# An element-wise operation on same-shaped arrays ends near its tick (2.4 to 3.8 pass-equivalents for its 3
# passes in the same runs): there, passes do set the time. A broadcast (3.0 to 4.9 for 2 passes) and a sum over
# the batch (1.3 to 2.6 for 1) cost more per pass than a copy, and a mean accumulated in float64, for which numpy
# converts the values in a buffer before adding them, several times more (4.4 to 10 for 1). Almost every line of
# both backwards broadcasts or reduces, which is why both take more than one pass-equivalent per counted pass;
# the forward's two float64 means (first and third line of its tally) are why it costs about as much as the
# staged backward. So: count passes to compare implementations built from the same kinds of operation, and
# measure, against a control, what a pass of each kind costs.
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
# - The fused backward makes 16 passes over batch-sized memory where the staged one makes 23, and on a batch
#   that fits in the caches the count predicts their time ratio, 1.44. Timed against a copy of the same array,
#   no implementation runs at one pass-equivalent per counted pass: broadcasts, reductions and float64
#   accumulation cost more than a copy, and page faults add time, so measure before you predict absolute times.
#
# ## Questions
#
# 1. Show that $J$ is symmetric. Is the Jacobian of layer norm symmetric too?
# 2. Why does a batch of two make the gradient with respect to $x$ vanish (up to $\epsilon$)? What does that mean
#    for training with tiny batches (lecture 8)?
# 3. The fused numpy backward moves 64 bytes per float32 element (16 passes). What is the least any backward
#    could move, given what it must read and write? (Hint: no element of $\partial L/\partial x$ can be written
#    before both sums are complete.)
#
# <details><summary>Answer to question 3</summary>
#
# One pass reads $\delta$ and $\hat x$ (or $x$) to form the two sums; a second pass reads them again and writes
# $\partial L/\partial x$: five array passes, 20 bytes per float32 element (the forward's minimum is 12: read
# $x$ once for the statistics, then read it and write $y$). Only a kernel that fuses the whole expression into
# one loop can get near that; numpy, one operator at a time, cannot. (Lecture 6 measures how near PyTorch's
# fused kernel gets.)
#
# </details>
#
# Next: [Lecture 5 — inference and running statistics](05_inference.ipynb).
