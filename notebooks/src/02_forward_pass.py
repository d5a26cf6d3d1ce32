# %% [markdown]
# # Lecture 2 — The forward pass, step by step
#
# **Learning goals.** After this lecture you can
# 1. compute a batch norm forward pass by hand (Algorithm 1 of Ioffe & Szegedy, 2015) and say which axis each
#    statistic is taken over;
# 2. explain why the learnable $\gamma$ and $\beta$ cost the network nothing: they can undo the normalization;
# 3. say where $\epsilon$ goes and what it does to nearly constant features;
# 4. explain why the training forward uses the *biased* variance;
# 5. explain why a careful implementation computes the variance in two passes.
#
# **Prerequisites.** Lecture 1 (why we want to normalize at all); numpy broadcasting.
#
# **Practise it.** [Exercise 1: forward and inference](../exercises/ex1_forward.ipynb).

# %%
import numpy as np

import bnlab.notebook
import bnlab.plots as plots
from bnlab.functional import batchnorm_forward
from bnlab.gradcheck import rel_error
from bnlab.variants import normalize, output_std_far_from_zero

bnlab.notebook.setup()

# %% [markdown]
# ## Algorithm 1
#
# A batch norm layer sees a mini-batch $\mathcal{B}$ of activations. For **each feature (channel) separately**
# it computes the batch mean and variance over the $m$ values of that feature in the batch, normalizes, then
# scales and shifts with two learned parameters:
#
# $$
# \mu_\mathcal{B} = \frac{1}{m}\sum_{i=1}^{m} x_i, \qquad
# \sigma^2_\mathcal{B} = \frac{1}{m}\sum_{i=1}^{m} (x_i-\mu_\mathcal{B})^2, \qquad
# \hat x_i = \frac{x_i-\mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B}+\epsilon}}, \qquad
# y_i = \gamma\,\hat x_i + \beta .
# $$
#
# For a fully connected layer the input has shape $(N, C)$ and $m = N$: each column is normalized on its own.
# For a convolution the input is $(N, C, H, W)$ and one channel shares its statistics over the batch *and*
# all positions, so $m = N\cdot H\cdot W$ — one $\gamma$ and one $\beta$ per channel.
#
# ## A worked example you can check by hand
#
# Three examples, two features. Take a pencil and compute feature 0 first: mean $3$, deviations $-2, -1, 3$,
# variance $(4 + 1 + 9)/3 = 14/3$.

# %%
# NBVAL_CHECK_OUTPUT
x = np.array([[1.0, 10.0],
              [2.0, 20.0],
              [6.0, 30.0]])
gamma = np.array([2.0, 0.5])
beta = np.array([1.0, -1.0])

out, cache = batchnorm_forward(x, gamma, beta)
print("mean     ", cache.batch_mean)
print("variance ", cache.batch_var)
print("x_hat\n", cache.xhat)
print("y\n", out)

# %% [markdown]
# Every column of $\hat x$ now has mean 0 and variance 1 (up to $\epsilon$), whatever the scale of the raw
# feature: feature 1 was ten times larger than feature 0 and the two normalized columns are comparable.
# The cache holds the intermediate values ($\mu$, $x_c = x-\mu$, $\sigma^2$, $1/\sqrt{\sigma^2+\epsilon}$,
# $\hat x$) that the backward pass of lecture 3 will need.
#
# On real data the picture is the same: two features on very different scales become two standard
# distributions, then $\gamma$ and $\beta$ give each its own scale and offset again.

# %%
rng = np.random.default_rng(0)
features = np.c_[rng.gamma(2.0, 2.0, 1000) + 10.0, rng.standard_normal(1000) * 0.5 - 3.0]
plots.plot_normalization_stages(features, gamma=np.array([1.0, 2.0]), beta=np.array([0.0, 1.0]));

# %% [markdown]
# **What to notice.** Normalization changes location and scale, not shape: the skewed feature stays skewed.
# Batch norm standardizes the first two moments of each feature, nothing more.
#
# ## $\gamma$ and $\beta$ can undo the normalization
#
# Forcing every feature to mean 0 and variance 1 could limit what a layer can represent (a sigmoid fed only
# values near 0 is almost linear). The paper's answer: the learned scale and shift can restore the original
# activations exactly. With $\gamma = \sqrt{\sigma^2_\mathcal{B}+\epsilon}$ and $\beta = \mu_\mathcal{B}$,
#
# $$ y = \sqrt{\sigma^2_\mathcal{B}+\epsilon}\;\frac{x-\mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B}+\epsilon}} + \mu_\mathcal{B} = x .$$

# %%
# NBVAL_CHECK_OUTPUT
identity_gamma = cache.std.reshape(-1)   # sqrt(var + eps), one per feature
identity_beta = cache.batch_mean
recovered, _ = batchnorm_forward(x, identity_gamma, identity_beta)
print("identity recovered to within 1e-12:", rel_error(recovered, x) < 1e-12)

# %% [markdown]
# So adding batch norm never removes a function the network could compute: the identity is one choice of
# parameters away. What it changes is *how the parameters reach* that function — the subject of lectures 9
# and 11.
#
# ## Where $\epsilon$ goes, and what it does
#
# $\epsilon$ (PyTorch's default: $10^{-5}$) keeps the division finite when a feature is constant over the
# batch. It belongs **inside** the square root. Compare with the tempting $(x-\mu)/(\sigma+\epsilon)$ on a
# feature that barely moves:

# %%
# NBVAL_CHECK_OUTPUT
near_constant = np.array([[1.0], [1.0 + 1e-4], [1.0 - 1e-4]])
inside = normalize(near_constant, eps=1e-5)
outside = normalize(near_constant, eps=1e-5, eps_inside_sqrt=False)
print("eps inside the square root :", inside.ravel().round(3))
print("eps outside the square root:", outside.ravel().round(3))

# %% [markdown]
# Inside the root, $\epsilon$ acts like a floor on the variance: a feature whose spread is far below
# $\sqrt{\epsilon} \approx 0.003$ is mostly *not* amplified (outputs $\pm 0.03$), so rounding noise in a dead
# feature does not get blown up to unit size. Outside the root the floor is only $\epsilon = 10^{-5}$ on the
# standard deviation, so the same feature is amplified to $\pm 1.09$. The figure sweeps the spread:

# %%
plots.plot_eps_effect(eps=1e-5);

# %% [markdown]
# ## Why the *biased* variance?
#
# Algorithm 1 divides by $m$, not $m-1$. The layer is not estimating a population variance here; it
# standardizes *this* batch, and with the biased variance the batch's outputs have exactly unit variance
# (up to $\epsilon$). A batch of two always normalizes to $\pm 1$:

# %%
# NBVAL_CHECK_OUTPUT
pair = np.array([[3.0, -50.0], [7.0, 20.0]])
print(batchnorm_forward(pair, np.ones(2), np.zeros(2))[0].round(4))

# %% [markdown]
# Using the unbiased $m-1$ version in the training forward is a common mistake that most tests miss: the output
# is scaled by $\sqrt{(m-1)/m}$, which is invisible for a batch of 256 but not for a batch of 2. (The unbiased
# variance *does* have a job: PyTorch stores it in `running_var` for inference — lecture 5.)

# %%
# NBVAL_CHECK_OUTPUT
for m in (2, 4, 32):
    batch = rng.standard_normal((m, 8))
    error = rel_error(normalize(batch, unbiased=True), normalize(batch))
    print(f"m = {m:2d}: relative error of the output {error:.3f}")

# %%
plots.plot_unbiased_variance_error();

# %% [markdown]
# ## Two passes, not one
#
# The variance has a famous one-pass formula, $\sigma^2 = E[x^2] - E[x]^2$: one sweep over the data collects
# both sums. In floating point it is a trap. When the mean is large compared with the spread, $E[x^2]$ and
# $E[x]^2$ are two huge, nearly equal numbers; float32 keeps about 7 significant digits, and their difference
# keeps only the rounding error. The two-pass formula subtracts the mean *first*, so it squares small numbers.

# %%
plots.plot_variance_precision();

# %% [markdown]
# At a mean of $10^4$ the one-pass float32 variance is off by orders of magnitude and can come out **negative**
# (red crosses) — and $\sqrt{\text{negative}}$ is NaN. `bnlab` uses two passes, with a float64 accumulator for
# the mean. Even production kernels get this wrong: here is the output standard deviation (it should be 1) for
# a million float32 values with mean 1000.

# %%
# NBVAL_CHECK_OUTPUT
stds = output_std_far_from_zero(rows=1_000_000, offset=1000.0)
print("bnlab output std within 1e-2 of 1:           ", abs(stds["bnlab"] - 1) < 1e-2)
print("torch 2.13 CPU kernel output std below 0.5:  ", stds["torch CPU kernel"] < 0.5)

# %% [markdown]
# ## Summary
#
# - Batch norm standardizes each feature over the batch (and over positions, for convolutions), then applies a
#   learned per-feature scale $\gamma$ and shift $\beta$ that can restore the identity.
# - $\epsilon$ sits inside the square root; it keeps near-constant features from being amplified.
# - The training forward uses the biased variance: the batch is standardized exactly.
# - Compute the variance in two passes; $E[x^2]-E[x]^2$ fails in float32.
#
# ## Questions
#
# 1. A feature takes the values $5, 5, 5, 5$ in a batch. What does batch norm output for it, with and without
#    $\epsilon$? What would its gradient be?
# 2. For a convolutional input of shape $(8, 16, 32, 32)$, how many values share one mean, and how many
#    $\gamma$ parameters does the layer have?
# 3. The identity is recoverable, so why not skip batch norm and let the network learn? (Hold your answer until
#    lecture 9.)
#
# Next: [Lecture 3 — the backward pass along the computational graph](03_backward_graph.ipynb).
