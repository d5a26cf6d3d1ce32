# %% [markdown]
# # Exercise 2 — The backward pass
#
# **Goals.** After this exercise you have
# 1. computed $\partial L/\partial\sigma^2$, $\partial L/\partial\mu$ and a whole Jacobian by hand on a tiny
#    batch, so you know what the code has to produce before you write it;
# 2. written `batchnorm_backward`, the staged backward that walks the forward's steps in reverse;
# 3. written `batchnorm_backward_fused`, the closed form in a few array operations.
#
# **Before you start.** [Lecture 3: backward along the graph](../notebooks/03_backward_graph.ipynb) and
# [Lecture 4: the closed form](../notebooks/04_closed_form.ipynb).
#
# **How this works.** As in exercise 1: code where it says `# YOUR CODE HERE`, run the test cell below, read
# its message. Grading reruns the tests plus hidden ones. Gradients are checked against reference values with
# a *random* upstream gradient, a $\gamma$ with a zero in it, and float64 inputs: a backward that is right only
# for `dout = 1` or $\gamma = 1$ does not pass.

# %% locked id=ex2_setup
import numpy as np

# %% [markdown]
# ## Part 0: your forward pass
#
# Your backward reads the `cache` that *your* forward returns, so the two go together. Paste your
# `batchnorm_forward` from exercise 1 into the cell below (change the cache if your backward needs more in it).

# %% solution id=ex2_forward
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """Training-mode batch norm (your exercise 1). Returns (out, cache)."""
    ### BEGIN SOLUTION
    axes = tuple(a for a in range(x.ndim) if a != 1)
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    m = x.size // x.shape[1]
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc * xc).sum(axis=axes, keepdims=True) / m
    std = np.sqrt(var + eps)
    inv = 1.0 / std
    xhat = xc * inv
    g = np.reshape(gamma, per_channel)
    out = g * xhat + np.reshape(beta, per_channel)
    return out, (xc, std, inv, xhat, g, axes, m)
    ### END SOLUTION

# %% tests id=ex2_forward_tests points=1
from bnlab.grading import checks
checks.forward(batchnorm_forward)

# %% [markdown]
# ## Part 1: checkpoints on a tiny batch
#
# Three examples, two features, $\epsilon = 10^{-5}$, and an upstream gradient $\delta = \partial L/\partial y$:
#
# $$
# x = \begin{pmatrix} 1 & 4\\ 3 & 0\\ 8 & 2 \end{pmatrix},\quad
# \gamma = (3,\ -1),\quad \beta = (0.5,\ 0),\quad
# \delta = \begin{pmatrix} 1 & 2\\ -1 & 0\\ 2 & -1 \end{pmatrix}.
# $$
#
# **Recap.** With $x_c = x - \mu$, $s = \sqrt{\sigma^2 + \epsilon}$ and $\partial L/\partial \hat x = \gamma\,\delta$, per feature:
#
# $$
# \frac{\partial L}{\partial \sigma^2} = \sum_i \frac{\partial L}{\partial \hat x_i}\, x_{c,i}
#     \cdot \Big(-\tfrac12\Big)(\sigma^2+\epsilon)^{-3/2},
# \qquad
# \frac{\partial L}{\partial \mu} = -\sum_i \frac{\partial L}{\partial \hat x_i}\,\frac{1}{s}
#     + \frac{\partial L}{\partial \sigma^2}\cdot\frac{-2}{m}\sum_i x_{c,i}.
# $$
#
# **Checkpoint 1.** Work out $\partial L/\partial\sigma^2$ and $\partial L/\partial\mu$ for both features, with
# pencil and paper or a few lines of numpy on the arrays below (not with a backward function: that comes
# next). Store them as `dL_dvar` and `dL_dmu`, each a list or array of two numbers (feature 0, feature 1).
# Four significant digits are enough.

# %% locked id=ex2_tiny
x_tiny = np.array([[1.0, 4.0], [3.0, 0.0], [8.0, 2.0]])
gamma_tiny = np.array([3.0, -1.0])
beta_tiny = np.array([0.5, 0.0])
dout_tiny = np.array([[1.0, 2.0], [-1.0, 0.0], [2.0, -1.0]])

# %% solution id=ex2_checkpoint
### BEGIN SOLUTION
xc_tiny = x_tiny - x_tiny.mean(axis=0)
var_tiny = (xc_tiny**2).mean(axis=0)
dxhat_tiny = dout_tiny * gamma_tiny
dL_dvar = (dxhat_tiny * xc_tiny).sum(axis=0) * -0.5 * (var_tiny + 1e-5) ** -1.5
dL_dmu = -(dxhat_tiny / np.sqrt(var_tiny + 1e-5)).sum(axis=0) + dL_dvar * -2 * xc_tiny.mean(axis=0)
### END SOLUTION

# %% tests id=ex2_checkpoint_tests points=1
from bnlab.grading import checks
checks.checkpoint(dL_dvar, dL_dmu)

# %% [markdown]
# **Checkpoint 2: the whole Jacobian.** Take feature 0 alone ($x = (1, 3, 8)$, $\gamma = 3$, $m = 3$). Each
# output $y_i$ depends on *every* input $x_j$, through $\mu$ and $\sigma^2$. Store the $3\times 3$ matrix
# $J_{ij} = \partial y_i / \partial x_j$ as `J` (rows: outputs, columns: inputs). Differentiating
# $\hat x_i = (x_i - \mu)/s$ gives
#
# $$ \frac{\partial \hat x_i}{\partial x_j} = \frac{1}{s}\Big(\mathbb{1}[i=j] - \frac1m - \frac{\hat x_i \hat x_j}{m}\Big). $$
#
# Before you run the test: what should each row of $J$ sum to, and why?

# %% solution id=ex2_jacobian
### BEGIN SOLUTION
feature = x_tiny[:, 0]
s0 = np.sqrt(feature.var() + 1e-5)
xhat0 = (feature - feature.mean()) / s0
J = gamma_tiny[0] / s0 * (np.eye(3) - 1 / 3 - np.outer(xhat0, xhat0) / 3)
### END SOLUTION

# %% tests id=ex2_jacobian_tests points=1
from bnlab.grading import checks
checks.jacobian(J)

# %% [markdown]
# ## Part 2: the staged backward
#
# Walk the forward's steps in reverse, one local derivative per line, given $\delta$ = `dout`:
#
# | step | forward | backward |
# |---|---|---|
# | 7 | $y = \gamma\hat x + \beta$ | $d\beta = \sum \delta$, $d\gamma = \sum \delta\,\hat x$, $d\hat x = \gamma\,\delta$ |
# | 6 | $\hat x = x_c \cdot r$ | $dr = \sum d\hat x\, x_c$; first branch $dx_c = d\hat x\, r$ |
# | 5 | $r = 1/s$ | $ds = -dr / s^2$ |
# | 4 | $s = \sqrt{\sigma^2+\epsilon}$ | $d\sigma^2 = ds / (2s)$ |
# | 3 | $\sigma^2 = \frac1m\sum x_c^2$ | second branch $dx_c \mathrel{+}= \frac{2}{m} x_c\, d\sigma^2$ |
# | 2 | $x_c = x - \mu$ | $d\mu = -\sum dx_c$; first branch $dx = dx_c$ |
# | 1 | $\mu = \frac1m \sum x$ | second branch $dx \mathrel{+}= d\mu / m$ |
#
# Sums run over every axis except the channel axis 1 (so over $N$, $H$, $W$ for 4-D input), and per-channel
# gradients keep the reduced axes until the end. `dgamma` and `dbeta` have shape $(C,)$.
#
# **Task.** `batchnorm_backward(dout, cache) -> (dx, dgamma, dbeta)`, reading only the `cache` of your own
# forward. Do not modify `dout` or anything in the cache in place. Hidden tests add $(N, C, H, W)$,
# $(N, C, L)$ and a batch of two.
#
# **Hints.** Keep the reduction axes and $m$ in your cache (or recompute them from the shape). A per-channel
# gradient such as $d\mu$ is one number per channel: sum with `keepdims=True` so it broadcasts back. Augmented
# assignment on an array from the cache (`xhat *= ...`) changes the cache: make a new array instead
# (`y = xhat * 2`, not `xhat *= 2`).

# %% solution id=ex2_backward
def batchnorm_backward(dout, cache):
    """Staged backward of your batchnorm_forward. Returns (dx, dgamma, dbeta)."""
    ### BEGIN SOLUTION
    xc, std, inv, xhat, g, axes, m = cache
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * g
    dinv = (dxhat * xc).sum(axis=axes, keepdims=True)
    dxc = dxhat * inv
    dstd = -dinv / std**2
    dvar = dstd / (2.0 * std)
    dxc = dxc + (2.0 / m) * xc * dvar
    dmu = -dxc.sum(axis=axes, keepdims=True)
    dx = dxc + dmu / m
    return dx, dgamma, dbeta
    ### END SOLUTION

# %% tests id=ex2_backward_tests points=3
from bnlab.grading import checks
checks.backward(batchnorm_forward, batchnorm_backward)

# %% tests id=ex2_backward_hidden points=1
from bnlab.grading import checks
print("Hidden tests of batchnorm_backward run when your work is graded: (N, C, H, W), (N, C, L), a batch of 2.")
### BEGIN HIDDEN TESTS
checks.backward_conv(batchnorm_forward, batchnorm_backward)
### END HIDDEN TESTS

# %% [markdown]
# ## Part 3: the closed form
#
# Collapsing the table (lecture 4) gives, per channel,
#
# $$
# \frac{\partial L}{\partial x} = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}
#     \Big(m\,\delta - \sum \delta - \hat x \sum \delta\,\hat x\Big),
# \qquad \frac{\partial L}{\partial\gamma} = \sum\delta\,\hat x, \qquad \frac{\partial L}{\partial\beta} = \sum\delta .
# $$
#
# **Task.** `batchnorm_backward_fused(dout, cache) -> (dx, dgamma, dbeta)` from the same cache, in a handful of
# array operations (no step-by-step chain). Hidden tests as in part 2.

# %% solution id=ex2_fused
def batchnorm_backward_fused(dout, cache):
    """Closed-form backward of your batchnorm_forward. Returns (dx, dgamma, dbeta)."""
    ### BEGIN SOLUTION
    _, _, inv, xhat, g, axes, m = cache
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    shape = g.shape
    dx = (g * inv / m) * (m * dout - dbeta.reshape(shape) - xhat * dgamma.reshape(shape))
    return dx, dgamma, dbeta
    ### END SOLUTION

# %% tests id=ex2_fused_tests points=2
from bnlab.grading import checks
checks.backward(batchnorm_forward, batchnorm_backward_fused)

# %% tests id=ex2_fused_hidden points=1
from bnlab.grading import checks
print("Hidden tests of batchnorm_backward_fused run when your work is graded: (N, C, H, W), (N, C, L), a batch of 2.")
### BEGIN HIDDEN TESTS
checks.backward_conv(batchnorm_forward, batchnorm_backward_fused)
### END HIDDEN TESTS

# %% [markdown]
# ## A question
#
# **Q3.** Someone checks their batch norm backward numerically with the loss `L = out.sum()` (an upstream
# gradient of all ones), and it passes. What does that prove about their `dx`?
#
# * (a) that it is right, to finite-difference precision
# * (b) nothing much: with $\delta = 1$ the loss does not depend on $x$ at all, so the true $dx$ is zero and a
#   backward returning zeros passes too
# * (c) that the mean branch is right but not necessarily the variance branch
# * (d) that it is right for $\gamma = 1$ only
#
# Answer with one letter, e.g. `answer_q3 = "a"`.

# %% solution id=ex2_q3
### BEGIN SOLUTION
answer_q3 = "b"
### END SOLUTION

# %% tests id=ex2_q3_tests points=1
from bnlab.grading import checks
checks.choice(answer_q3, options="abcd")
### BEGIN HIDDEN TESTS
checks.choice(answer_q3, options="abcd", correct="b",
              why="sum(gamma * xhat + beta) = m * beta per channel because xhat sums to zero: dL/dx is exactly 0.")
### END HIDDEN TESTS
