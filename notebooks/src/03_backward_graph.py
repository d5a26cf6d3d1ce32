# %% [markdown]
# # Lecture 3 — The backward pass, along the computational graph
#
# **Learning goals.** After this lecture you can
# 1. draw batch norm's computational graph and write the local derivative on every edge;
# 2. backpropagate through it node by node, summing where a value feeds two nodes and where a per-channel
#    statistic feeds the whole batch;
# 3. see in array shapes that a broadcast in the forward is a sum in the backward;
# 4. check a gradient in a way that cannot be fooled, explain why an all-ones upstream gradient and float32
#    each prove little, and name the mistake no gradient check can catch.
#
# **Prerequisites.** Lecture 2 (the forward's seven steps, and relative error as the course defines it); the
# chain rule; numpy broadcasting.
#
# **Practise it.** [Exercise 2: the backward pass](../exercises/ex2_backward.ipynb) asks for the same
# checkpoint numbers on another batch before you write the code.

# %%
import numpy as np

import bnlab.notebook
from bnlab.functional import batchnorm_backward, batchnorm_forward
from bnlab.gradcheck import DEFAULT_TOLERANCE, check_forward_backward, rel_error
from bnlab.lessons.backward import (
    all_ones_trap,
    catalogue_gradient_checks,
    finite_difference_study,
    node_gradients,
    torch_gradients,
    unbiased_in_both,
)
from bnlab.report import error_text, within
from bnlab.mistakes import backward_with
from bnlab.plots.gradients import plot_gradient_check_vs_step
from bnlab.plots.graph import draw_batchnorm_graph

bnlab.notebook.setup()

# %% [markdown]
# ## The graph
#
# Break the forward pass into nodes that each do one simple thing: they are lecture 2's seven steps, and the
# grey label under or over each node gives its step number and its name in the code. Two names are not the
# usual symbols: $\mathrm{std} = \sqrt{\sigma^2+\epsilon}$ and $\mathrm{inv} = 1/\mathrm{std}$ (lecture 4
# abbreviates std as $s$). Everything below is per channel; $m$ is the number of values that share the
# channel's statistics.

# %%
draw_batchnorm_graph();

# %% [markdown]
# **What to notice.** $x$ has two outgoing edges (into $\mu$ and into $x_c$), and so does $x_c$ (into $x_c^2$
# and into $\hat x$). So the input reaches the output along four paths: directly ($x \to x_c \to \hat x$),
# through $\mu$ ($x \to \mu \to x_c \to \hat x$), through $\sigma^2$ ($x \to x_c \to \sigma^2 \to
# \mathrm{std} \to \mathrm{inv} \to \hat x$), and through $\mu$ *then* $\sigma^2$. The green nodes hold one number
# per channel and are used by every example of the batch; the blue ones hold one number per example.
#
# Two rules turn this picture into a backward pass. Given the upstream gradient $\delta = \partial L/\partial y$:
#
# 1. **Multiply along an edge**: the gradient at a node's input is its output gradient times the local derivative.
# 2. **Sum where paths meet**: $x$ feeds both $x_c$ and $\mu$; $x_c$ feeds both $x_c^2$ and $\hat x$. Their
#    gradients are the sums over both branches. A per-channel quantity ($\mu$, $\sigma^2$, std, inv, $\gamma$,
#    $\beta$) is used by every example of the batch, so its gradient also **sums over the batch**.
#
# Walking the graph from right to left, step 7 back to step 1 (sums run over the $m$ values of a channel; the
# last column is the variable that holds the result in the code below):
#
# | step | forward | backward | code |
# |---|---|---|---|
# | 7 | $y = \gamma\hat x + \beta$ | $\frac{\partial L}{\partial\beta} = \sum_i \delta_i,\quad \frac{\partial L}{\partial\gamma} = \sum_i \delta_i\hat x_i,\quad \frac{\partial L}{\partial \hat x_i} = \gamma\,\delta_i$ | `dbeta`, `dgamma`, `dxhat` |
# | 6 | $\hat x = x_c\cdot\mathrm{inv}$ | $\frac{\partial L}{\partial\,\mathrm{inv}} = \sum_i \frac{\partial L}{\partial \hat x_i}\,x_{c,i}$, and the first branch $\frac{\partial L}{\partial x_{c,i}} = \frac{\partial L}{\partial \hat x_i}\,\mathrm{inv}$ | `dinv`, `dxc` |
# | 5 | $\mathrm{inv} = 1/\mathrm{std}$ | $\frac{\partial L}{\partial\,\mathrm{std}} = -\frac{1}{\mathrm{std}^2}\frac{\partial L}{\partial\,\mathrm{inv}}$ | `dstd` |
# | 4 | $\mathrm{std}=\sqrt{\sigma^2+\epsilon}$ | $\frac{\partial L}{\partial \sigma^2} = \frac{1}{2\,\mathrm{std}}\frac{\partial L}{\partial\,\mathrm{std}}$ | `dvar` |
# | 3 | $\sigma^2 = \frac1m\sum_i x_{c,i}^2$ | second branch: $\frac{\partial L}{\partial x_{c,i}} \mathrel{+}= \frac{2x_{c,i}}{m}\frac{\partial L}{\partial \sigma^2}$ | `dxc` |
# | 2 | $x_c = x-\mu$ | $\frac{\partial L}{\partial \mu} = -\sum_i \frac{\partial L}{\partial x_{c,i}}$ (with $\frac{\partial L}{\partial x_{c,i}}$ summed over **both** branches), and the first branch into $x$: $\frac{\partial L}{\partial x_i} = \frac{\partial L}{\partial x_{c,i}}$ | `dmu` |
# | 1 | $\mu=\frac1m\sum_i x_i$ | second branch: $\frac{\partial L}{\partial x_i} \mathrel{+}= \frac1m \frac{\partial L}{\partial \mu}$ | `dx` |
#
# ## The backward, written out
#
# Back to lecture 2's batch: three examples, two features, now with an upstream gradient $\delta$.
#
# **Predict, then run.** Before running the next cell, work out for feature 0 ($x = 1, 2, 6$, $\gamma = 2$,
# $\delta = 0.5, 1, -2$): $x_c = -2, -1, 3$, $\sigma^2 = 14/3$, $\partial L/\partial\hat x = \gamma\delta = 1, 2, -4$.
# What are $\partial L/\partial\sigma^2 = -\frac{1}{2\,\mathrm{std}^3}\sum_i \frac{\partial L}{\partial \hat x_i} x_{c,i}$ and
# $\partial L/\partial\mu$? (Hint for $\mu$: what does the second branch into $x_c$ add up to, summed over $i$?)
# And what shape will `dmu` have?
#
# The cell is the table above in numpy, one local derivative per line, for an $(N, C)$ batch. It reads the
# forward's intermediate values from the cache that `bnlab.functional.batchnorm_forward` returns (built by
# `_train_forward`, listed in lecture 2: the names are those of your plain forward).

# %%
# NBVAL_CHECK_OUTPUT
x = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 30.0]])
gamma, beta = np.array([2.0, 0.5]), np.array([1.0, -1.0])
dout = np.array([[0.5, -1.0], [1.0, 0.0], [-2.0, 3.0]])
out, cache = batchnorm_forward(x, gamma, beta)
xc, std, inv, xhat, m = cache.xc, cache.std, cache.inv, cache.xhat, cache.m

# Step 7, y = gamma * xhat + beta. gamma and beta are per feature: their gradients sum over the batch.
dbeta = dout.sum(axis=0)
dgamma = (dout * xhat).sum(axis=0)
dxhat = dout * gamma
# Step 6, xhat = xc * inv. inv (1, C) was broadcast over the batch: its gradient is summed back to (1, C).
dinv = (dxhat * xc).sum(axis=0, keepdims=True)
dxc = dxhat * inv                       # the first branch into xc
# Step 5, inv = 1 / std.
dstd = -dinv / std**2
# Step 4, std = sqrt(var + eps).
dvar = dstd / (2 * std)
# Step 3, var = mean(xc ** 2): the second branch into xc.
dxc = dxc + (2 / m) * xc * dvar
# Step 2, xc = x - mu. mu (1, C) was broadcast over the batch: its gradient is summed back to (1, C).
dmu = -dxc.sum(axis=0, keepdims=True)
# Step 1, mu = mean(x): the second branch into x.
dx = dxc + dmu / m

print("shapes: x", x.shape, " mu", cache.mu.shape, " dxc", dxc.shape, " dmu", dmu.shape, " dx", dx.shape)
print("dL/dvar:", dvar.round(4))
print("dL/dmu: ", dmu.round(4))
print("dL/dx:\n", dx.round(4))

# %% [markdown]
# Feature 0 gives $\partial L/\partial\sigma^2 = 8/\mathrm{std}^3 \approx 0.7936$ and
# $\partial L/\partial\mu = -\mathrm{inv}\sum_i\frac{\partial L}{\partial \hat x_i} = \mathrm{inv} \approx 0.4629$
# (with $\mathrm{std} = \sqrt{14/3 + \epsilon}$).
#
# ### A broadcast in the forward is a sum in the backward
#
# In step 2, `xc = x - mu` subtracts an array of shape $(1, C)$ from one of shape $(N, C)$: numpy copies
# $\mu$ down the batch. Each copy receives its own gradient $-\partial L/\partial x_{c,i}$, and since all the
# copies are the same number, the gradient of that number is their **sum**, back in shape $(1, C)$. Step 6 does
# the same for `inv`, and step 7 for $\gamma$ and $\beta$. Forget the sum and you get an $(N, C)$ "gradient"
# for a quantity that has one value per feature — and numpy will not complain:

# %%
# NBVAL_CHECK_OUTPUT
dmu_unsummed = -dxc                      # forgot the sum: one number per example, for a per-feature quantity
print("mu has shape", cache.mu.shape, "but the unsummed dmu has shape", dmu_unsummed.shape)
dx_unsummed = dxc + dmu_unsummed / m     # (3, 2) + (3, 2): no broadcast, no error, wrong numbers
print(f"dx without the sum: relative error {error_text(rel_error(dx_unsummed, dx))} against the right dx (> 0.01)")
catalogued = backward_with("mean_gradient_not_summed")(dout, cache)[0]
print(f"bnlab.mistakes' 'mean_gradient_not_summed' gives the same dx: relative difference "
      f"{within(rel_error(dx_unsummed, catalogued), 1e-12)}")

# %% [markdown]
# The shapes fit, so only the values give the mistake away: a relative error of 0.52 (lecture 2's
# `rel_error`: the largest difference is 52% of the largest $|\partial L/\partial x|$). A cheap guard while you
# write a backward: every gradient must have the shape of its variable (`dmu.shape == mu.shape`).
#
# ### Two ways to write $\partial L/\partial\mu$
#
# The table gives $\partial L/\partial\mu = -\sum_i \partial L/\partial x_{c,i}$, with $\partial L/\partial x_c$
# already summed over both of its branches; that is what the cell above and `bnlab.functional.batchnorm_backward`
# compute. Ioffe and Szegedy's paper (Section 3) writes the same derivative as two explicit paths:
#
# $$
# \frac{\partial L}{\partial\mu} = \underbrace{-\sum_i \frac{\partial L}{\partial\hat x_i}\,\mathrm{inv}}_{\text{through } \hat x}
#   \;+\; \underbrace{\frac{\partial L}{\partial\sigma^2}\cdot\frac{-2}{m}\sum_i x_{c,i}}_{\text{through } \sigma^2} .
# $$
#
# Substitute the two branches of $\partial L/\partial x_{c,i}$ into the graph form and it splits into exactly
# these two terms: the two forms are one sum, grouped differently. The second term is zero, because centred
# values sum to zero, $\sum_i x_{c,i} = 0$. So $\mu$ reaches the loss through $\sigma^2$ only on paper: the batch
# mean minimizes $\sum_i (x_i - \mu)^2$, so the variance does not change when $\mu$ moves, to first order
# (lecture 4 uses this). That is the fourth path of the graph, $x \to \mu \to x_c \to \sigma^2$: its
# contribution to $\partial L/\partial x_i$ is this term divided by $m$, exactly 0.

# %%
# NBVAL_CHECK_OUTPUT
dmu_graph = -dxc.sum(axis=0, keepdims=True)                          # the table: both branches in dxc
through_xhat = -(dxhat * inv).sum(axis=0, keepdims=True)             # the paper's first term
through_var = dvar * (-2 / m) * xc.sum(axis=0, keepdims=True)        # the paper's second term: sum(xc) = 0
print(f"dL/dmu, graph form minus paper form, largest |difference|: "
      f"{within(np.abs(dmu_graph - through_xhat - through_var).max(), 1e-12)}")

# %% [markdown]
# ### Checking the written-out backward
#
# Three comparisons. The library's staged backward `bnlab.functional.batchnorm_backward` is the same
# algorithm, written for any number of spatial axes: agreeing with it catches a typo, not a wrong derivation.
# Two references are independent: PyTorch's `batch_norm` under autograd, and — for the intermediate gradients
# at $\sigma^2$ and $\mu$ — autograd run on the forward's own steps with `retain_grad()` on every node
# (`bnlab.lessons.backward.node_gradients`).

# %%
# NBVAL_CHECK_OUTPUT
library = batchnorm_backward(dout, cache)
reference = torch_gradients(x, gamma, beta, dout)
for name, ours, lib, ref in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta), library, reference):
    print(f"{name:7s} relative error vs bnlab.functional {within(rel_error(ours, lib), 1e-12)}, "
          f"vs torch {within(rel_error(ours, ref), 1e-12)}")
nodes = node_gradients(x, gamma, beta, dout)
for name, ours in (("dvar", dvar), ("dmu", dmu)):
    print(f"{name:7s} relative error vs autograd at the node {within(rel_error(ours, nodes[name[1:]]), 1e-12)}; "
          f"autograd's shape {nodes[name[1:]].shape}")

# %% [markdown]
# Autograd sums over the batch too: its gradient at $\mu$ has shape $(1, 2)$, like $\mu$.
#
# ## Gradient checking done right
#
# Agreement with a reference is the best check when one exists. When it does not — your own layer, a new
# idea — compare with finite differences. For the loss $L(x) = \sum y(x)\cdot\delta$, the centred difference
#
# $$ \frac{\partial L}{\partial x_j} \approx \frac{L(x + h e_j) - L(x - h e_j)}{2h} $$
#
# has two errors pulling in opposite directions. **Truncation**: the Taylor terms it ignores contribute
# $\approx K h^2$, where $K$ grows with the third derivative. **Rounding**: $L(x\pm he_j)$ and $x \pm h$ are
# rounded to machine precision $\epsilon_\mathrm{mach}$ (the spacing of floating-point numbers near 1; not
# batch norm's $\epsilon$), and dividing by $2h$ turns that into $\approx \epsilon_\mathrm{mach}/h$.
# The total $K h^2 + \epsilon_\mathrm{mach}/h$ is smallest at
#
# $$ h^* = \Big(\frac{\epsilon_\mathrm{mach}}{2K}\Big)^{1/3}, \qquad \text{error}(h^*) = 3K h^{*2} \sim \epsilon_\mathrm{mach}^{2/3} . $$
#
# Two traps make this check pass broken code.
#
# ### Trap 1: an all-ones upstream gradient
#
# Many people test a backward by calling `y.sum().backward()`, i.e. $\delta = 1$. For batch norm that loss is
# $\sum_i(\gamma\hat x_i + \beta) = m\beta$ because $\hat x$ sums to zero in every channel: **it does not depend
# on $x$ at all**. The true gradient is exactly zero, so any backward that returns zeros for $\delta = 1$
# passes — including a real mistake, the staged backward without the branch through $\sigma^2$ (for a constant
# $\delta$ its two remaining branches cancel). The table at the end of this lecture shows which classic
# mistakes slip through this way.
#
# ### Trap 2: float32
#
# Besides the right backward, the study below checks a real slip: $\epsilon$ left out of std in the backward
# only (`bnlab.mistakes.backward_with("eps_missing_in_backward")`, one of the catalogued mistakes), which
# changes $\partial L/\partial x$ by a relative error of order $\epsilon/\sigma^2$, a few $10^{-6}$ here.
#
# **Predict, then run.** The next cell fits $K$ on the float64 curve (about 0.06 here). With
# $\epsilon_\mathrm{mach} = 2.2\times 10^{-16}$ for float64 and $1.2\times 10^{-7}$ for float32, what best step
# and what smallest error does the model predict for each?

# %%
# NBVAL_CHECK_OUTPUT
study = finite_difference_study()
print(f"truncation constant K = {study.curvature:.3f} (fitted on float64 where h >= 1e-3)")
for name, bracket in (("float64", "< 1e-9"), ("float32", "between 1e-6 and 1e-4")):
    h_star, floor = study.predicted[name]
    smallest = study.smallest(name)[1]
    measured = error_text(smallest) if name == "float64" else f"{smallest:.0e}"
    print(f"{name}: eps_mach {study.machine_eps[name]:.1e}; model: best h {h_star:.0e}, error {floor:.0e}; "
          f"measured smallest error {measured} ({bracket})")
all_zero = study.steps[study.zero_fraction["float32"] == 1.0]
print(f"float32: numerical dx exactly 0 in every entry for h <= {all_zero.max():.0e}; at h = 1e-7 in "
      f"{study.zero_fraction['float32'][np.argmin(np.abs(study.steps - 1e-7))]:.0%} of the entries; "
      f"float32 spacing at the largest |x|: {study.input_spacing['float32']:.1e}")
print(f"eps left out of std, at each best step: float64 {study.eps_missing_at_best_step('float64'):.1e} "
      f"(> tolerance {DEFAULT_TOLERANCE:.0e}: caught); float32 {study.eps_missing_at_best_step('float32'):.0e}, "
      f"like the right backward's {study.smallest('float32')[1]:.0e} (< 1e-4: passes)")

# %%
plot_gradient_check_vs_step(study);

# %% [markdown]
# **What to notice.** Right of its best step each curve climbs as $h^2$, the same line for both dtypes (the
# derivative being approximated is the same); left of it, rounding takes over and the error grows as $1/h$.
# At the far left the float32 curve leaves the model, and not as noise: for $h \le 10^{-8}$ every entry of the
# numerical gradient is **exactly 0** (relative error 1, circled). The nudge is lost to rounding: $x \pm h$
# rounds back to $x$, or changes the outputs by less than their own spacing, so $L(x+h) = L(x-h)$ exactly. The
# model's best steps sit where the measured minima are. float64 bottoms out four orders of magnitude under the
# gradient check's tolerance $10^{-6}$; float32 twenty times *above* it, and only for a step chosen by hand. So
# a float32 check needs a tolerance near $10^{-4}$, and any mistake smaller than that hides under it — like
# $\epsilon$ left out of std (last line): caught in float64 at five times the tolerance, and in float32
# indistinguishable from the right backward.
#
# ### A check that cannot be fooled
#
# `bnlab.gradcheck.check_forward_backward` uses float64, a random upstream gradient, a $\gamma$ with a zero and
# negative entries (so a missing or misplaced $\gamma$ shows), a non-zero $\beta$, and channels with different
# means and scales (so a reduction over the wrong axis shows). The staged backward passes; the classic mistake
# of treating $\mu$ and $\sigma^2$ as constants — $\partial L/\partial x = \gamma\,\delta\cdot\mathrm{inv}$ — fails.

# %%
# NBVAL_CHECK_OUTPUT
right = check_forward_backward(batchnorm_forward, batchnorm_backward, shape=(6, 4))
wrong = check_forward_backward(batchnorm_forward, backward_with("constant_statistics"), shape=(6, 4))
print(f"tolerance: relative error <= {right.tolerance:.0e}")
for name, report in (("staged backward", right), ("constant statistics", wrong)):
    print(f"{name:20s}", ",  ".join(f"{grad} {error_text(error)}" for grad, error in report.errors.items()))

# %% [markdown]
# The constant-statistics backward is off by a relative error of 0.37: its largest deviation is about a third
# of the largest $|\partial L/\partial x|$. The two branches it drops are not small.
#
# Here is every backward mistake in `bnlab.mistakes`' catalogue (the grader's list) under both checks. The
# all-ones check runs on lecture 2's $(3, 2)$ batch: the true $\partial L/\partial x$ is 0, so a mistake is
# caught only if its $\max|\partial L/\partial x|$ is not (above $10^{-6}$, say). The proper check runs on
# `check_forward_backward`'s random $(6, 4)$ batch and catches a relative error above its tolerance $10^{-6}$.
# Whether a mistake's $\partial L/\partial x$ vanishes for $\delta = 1$ is a property of the formula, not of the
# batch. **Predict, then run:** which mistakes will the all-ones check miss?

# %%
# NBVAL_CHECK_OUTPUT
trap = all_ones_trap(x, gamma, beta)                # max |dx| for dout = 1 on lecture 2's (3, 2) batch
proper = catalogue_gradient_checks(shape=(6, 4))     # dx's relative error under check_forward_backward
caught = {True: "caught", False: "MISSED"}
print(f"{'':34s}{'all-ones check, (3, 2)':>26s}{'proper check, (6, 4)':>28s}")
print(f"{'backward':34s}{'max |dx|':>14s}{'verdict':>12s}{'dx rel. error':>18s}{'verdict':>10s}")
for name, error in proper.items():
    right = name == "staged backward"
    print(f"{name + ' (right)' * right:34s}{error_text(trap[name]):>14s}"
          f"{'passes' if right else caught[trap[name] > 1e-6]:>12s}{error_text(error):>18s}"
          f"{'passes' if right else caught[error > DEFAULT_TOLERANCE]:>10s}")
mistakes = {name: error for name, error in proper.items() if name != "staged backward"}
survivors = [name for name in mistakes if trap[name] <= 1e-6]
coarse = {name: error for name, error in mistakes.items() if name != "eps_missing_in_backward"}
print(f"{len(survivors)} of {len(mistakes)} mistakes pass the all-ones check")
print(f"proper check: eps missing in the backward {mistakes['eps_missing_in_backward']:.1e}, every other mistake "
      f"at least {min(coarse.values()):.2f} ({min(coarse, key=coarse.get)}); tolerance {DEFAULT_TOLERANCE:.0e}")

# %% [markdown]
# Six of the eleven mistakes give $\partial L/\partial x = 0$ for $\delta = 1$ and pass the all-ones check.
# The proper check catches all eleven. Ten err by 0.08 or more (the smallest, `mean_branch_missing`, the
# all-ones check catches anyway); $\epsilon$ missing in the backward errs by only a few $10^{-6}$ and is caught
# only because the check runs in float64 with a tolerance of $10^{-6}$ (trap 2 above).
#
# ### What no gradient check can catch
#
# A forward and backward that agree on a *wrong convention*. Use the unbiased variance (divide by $m - 1$) in
# the forward and differentiate *that* forward correctly: the backward is the true derivative of the function
# the forward computes, so finite differences agree with it. **Predict, then run:** does the proper check pass?
# And how far are this forward's outputs from the reference for $m = 6$ (lecture 2: $1 - \sqrt{(m-1)/m}$)?

# %%
# NBVAL_CHECK_OUTPUT
both = unbiased_in_both(shape=(6, 4))
print("unbiased forward with its own exact backward, proper gradient check: "
      + ",  ".join(f"{grad} {within(both['check ' + grad], DEFAULT_TOLERANCE)}" for grad in ("dx", "dgamma", "dbeta")))
print(f"against reference values: x_hat rel. error {both['output vs reference']:.3f} "
      f"(1 - sqrt(5/6) = {both['predicted output error']:.3f}), dx vs torch rel. error {both['dx vs reference']:.3f} "
      f"(> 0.01)")

# %% [markdown]
# The gradient check passes; only comparison with reference values, as with PyTorch above, catches the
# mistake — which is why the graded exercises check both.
#
# ## Summary
#
# - Backpropagation through a graph: multiply local derivatives along edges, sum where paths meet and over the
#   batch for per-channel quantities. A broadcast in the forward ($(1, C) \to (N, C)$) is a sum in the backward
#   ($(N, C) \to (1, C)$); without it the shapes still fit and only the values are wrong.
# - The backward walks lecture 2's seven steps in reverse, with the same names (`mu`, `xc`, `var`, `std`,
#   `inv`, `xhat`, `out`): one line per local derivative.
# - Batch norm's input reaches the output along four paths (directly, through $\mu$, through $\sigma^2$, and
#   through $\mu$ then $\sigma^2$). The fourth contributes nothing, because $\sum_i x_{c,i} = 0$: the table's
#   and the paper's $\partial L/\partial\mu$ are the same sum.
# - Finite differences trade truncation ($K h^2$) against rounding ($\epsilon_\mathrm{mach}/h$): best step
#   $\sim\epsilon_\mathrm{mach}^{1/3}$, error $\sim\epsilon_\mathrm{mach}^{2/3}$ — about $10^{-10}$ in float64,
#   $2\times 10^{-5}$ in float32; below float32's spacing the numerical gradient is exactly 0. Check in
#   float64 (a float32 check cannot see an error below about $10^{-4}$, such as $\epsilon$ left out of the
#   backward), with random upstream gradients, and also against reference values: a forward and backward on
#   the same wrong convention pass any gradient check.
#
# ## Questions
#
# 1. The path from $\mu$ through $\sigma^2$ contributed nothing to $\partial L/\partial\mu$. Would that still hold
#    if the forward used a variance computed around some other centre than the batch mean?
# 2. With $\delta = 1$, we showed $\partial L/\partial x = 0$. Which *other* upstream gradients give a zero
#    $\partial L/\partial x$ for every input?
# 3. Why does the gradient check use a $\gamma$ containing a zero?
# 4. float16 has $\epsilon_\mathrm{mach} \approx 10^{-3}$. With the same $K$, what best step and smallest error would a
#    float16 gradient check reach? Is a float16 gradient check worth running?
#
# Next: [Lecture 4 — the closed form](04_closed_form.ipynb).
