# %% [markdown]
# # Lecture 2 — The forward pass, step by step
#
# **Learning goals.** After this lecture you can
# 1. write batch norm's training forward (Algorithm 1 of Ioffe & Szegedy, 2015) in a dozen lines of numpy, for
#    fully connected $(N, C)$ and convolutional $(N, C, H, W)$ inputs, and say which axes each statistic is
#    taken over;
# 2. say exactly when $\gamma$ and $\beta$ can undo the normalization (with fixed statistics) and when they
#    cannot (in training mode);
# 3. explain why batch norm keeps the correlations between features (it is not whitening), why a bias just
#    before it is redundant, and why one example's training output moves with its batch-mates;
# 4. say where $\epsilon$ goes and how much it lets the layer amplify a nearly constant feature;
# 5. explain why the training forward uses the *biased* variance, and why careful kernels compute the
#    statistics in two passes with a wide accumulator.
#
# **Prerequisites.** Lecture 1 (why we want to normalize at all); numpy broadcasting.
#
# **Practise it.** [Exercise 1: forward and inference](../exercises/ex1_forward.ipynb).

# %%
import numpy as np
import torch
import torch.nn.functional as F

import bnlab.functional
import bnlab.notebook
from bnlab.functional import batchnorm_backward, batchnorm_forward
from bnlab.gradcheck import rel_error
from bnlab.lessons.forward import (
    batch_dependence,
    eps_gain,
    forward_explorer,
    identity_recovery,
    running_sum_drift,
    sequential_float32_mean,
    torch_output_std,
    variance_precision,
)
from bnlab.mistakes import forward_with
from bnlab.numerics import torch_kernel_statistics
from bnlab.report import within
from bnlab.plots.forward import (
    plot_batch_dependence,
    plot_eps_effect,
    plot_normalization_stages,
    plot_variance_precision,
)
from bnlab.widgets.forward import ForwardDashboard

bnlab.notebook.setup()
rng = np.random.default_rng(0)

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
# ## The forward in a dozen lines
#
# Here is Algorithm 1, line by line, in plain numpy. Read it next to the formulas above: the only decisions
# are *which axes* to average over (every axis but the channel axis 1) and keeping those axes
# (`keepdims=True`), so that the per-channel statistics of shape $(1, C)$ or $(1, C, 1, 1)$ broadcast against
# the batch. The seven numbered steps and their names (`mu`, `xc`, `var`, `std`, `inv`, `xhat`, `out`) are
# the ones the course's library uses, and lecture 3 walks them backwards one by one. Step 5 computes
# $1/\sqrt{\sigma^2+\epsilon}$ once per channel, so that step 6 multiplies instead of dividing every value.

# %%
def forward(x, gamma, beta, eps=1e-5):
    """Training-mode batch norm of x (N, C) or (N, C, H, W); gamma and beta have shape (C,)."""
    axes = (0,) if x.ndim == 2 else (0, 2, 3)          # every axis but the channel axis 1
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)  # how a (C,) vector lines up with the channels
    mu = x.mean(axis=axes, keepdims=True)              # 1. mini-batch mean
    xc = x - mu                                        # 2. centre
    var = (xc**2).mean(axis=axes, keepdims=True)       # 3. biased variance: divide by m, not m - 1
    std = np.sqrt(var + eps)                           # 4. standard deviation, eps inside the root
    inv = 1 / std                                      # 5. its reciprocal, one per channel
    xhat = xc * inv                                    # 6. normalize
    out = gamma.reshape(shape) * xhat + beta.reshape(shape)  # 7. scale and shift
    return out


# %% [markdown]
# ## A worked example you can check by hand
#
# Three examples, two features. Take a pencil and compute feature 0 first: mean $3$, deviations $-2, -1, 3$,
# variance $(4 + 1 + 9)/3 = 14/3$.
#
# **Predict, then run.** What is $\hat x$ for the third example's feature 0 (the value 6), and what is its
# output $y$ with $\gamma = 2$, $\beta = 1$? (Two decimals are enough.) With $\gamma = 1$ and $\beta = 0$ the
# forward returns $\hat x$ itself.

# %%
# NBVAL_CHECK_OUTPUT
x = np.array([[1.0, 10.0],
              [2.0, 20.0],
              [6.0, 30.0]])
gamma = np.array([2.0, 0.5])
beta = np.array([1.0, -1.0])

print("mean     ", x.mean(axis=0))
print("variance ", x.var(axis=0))     # np.var divides by m by default
print("x_hat\n", forward(x, np.ones(2), np.zeros(2)))
print("y\n", forward(x, gamma, beta))

# %% [markdown]
# $\hat x = 3/\sqrt{14/3} \approx 1.389$ and $y = 2\hat x + 1 \approx 3.778$ (the cell prints 3.7775).
# Every column of $\hat x$ now has mean 0 and variance 1 (up to $\epsilon$), whatever the scale of the raw
# feature: feature 1 is spread almost four times as widely as feature 0 (standard deviations
# $\sqrt{66.67} = 8.16$ and $\sqrt{4.67} = 2.16$), yet both normalized columns live on the same scale. They
# are not the same numbers: normalization removes location and scale, not the shape of the data — feature 0's
# 6 stays far from its 1 and 2, feature 1's evenly spaced values stay evenly spaced ($-1.22, 0, 1.22$).
#
# The same function handles a convolutional batch: one mean and one variance per channel, over
# $m = N\cdot H\cdot W$ values. **Predict, then run:** for a batch of shape $(8, 3, 4, 4)$, how many values
# share one mean, and what are the per-channel means and variances of the output with $\gamma = 1$, $\beta = 0$?

# %%
# NBVAL_CHECK_OUTPUT
images = rng.standard_normal((8, 3, 4, 4)) * np.array([2.0, 0.5, 5.0]).reshape(1, 3, 1, 1) + 3.0
normalized = forward(images, np.ones(3), np.zeros(3))
print("values per channel m:", images.size // images.shape[1])
print("per-channel mean of the output, largest |value|:", within(np.abs(normalized.mean(axis=(0, 2, 3))).max(), 1e-12))
input_var, output_var = images.var(axis=(0, 2, 3)), normalized.var(axis=(0, 2, 3))
print("per-channel variance of the input: ", input_var.round(3))
print("1 - per-channel variance of the output:", ", ".join(f"{d:.1e}" for d in 1 - output_var),
      "= eps / (var + eps) to", within(np.abs((1 - output_var) - 1e-5 / (input_var + 1e-5)).max(), 1e-12))

# %% [markdown]
# The output variance is $\sigma^2/(\sigma^2+\epsilon)$, just below 1, so the cell prints how far below: the
# narrowest channel (variance 0.23) is the furthest, at $4.3\cdot 10^{-5}$.
#
# ## The library's forward, checked against yours
#
# `bnlab.functional.batchnorm_forward` is the course's reference implementation; the backward passes of
# lectures 3 and 4 read its cache. It must agree with your dozen lines, and both with PyTorch's
# `torch.nn.functional.batch_norm` in training mode, to float64 rounding.
#
# **Relative error**, here and in every later lecture, means `bnlab.gradcheck.rel_error`:
#
# $$ \operatorname{rel\_error}(a, b) = \frac{\max_i |a_i - b_i|}{\max\big(\max_i |a_i|,\ \max_i |b_i|\big)}, $$
#
# the largest difference measured against the size of the larger array, so that an entry that happens to be
# near zero cannot inflate it. (CS231n's gradient checks use the element-wise
# $\max_i |a_i - b_i| / (|a_i| + |b_i|)$, which gives smaller numbers — about half for a uniform scale error;
# the unbiased-variance section below shows both.) Around $10^{-16}$ means equal to float64 rounding.

# %%
# NBVAL_CHECK_OUTPUT
cases = {"(N, C) = (32, 5)": rng.standard_normal((32, 5)) * 3 + 2,
         "(N, C, H, W) = (8, 3, 4, 4)": images}
for name, batch in cases.items():
    channels = batch.shape[1]
    g, b = rng.standard_normal(channels), rng.standard_normal(channels)
    yours = forward(batch, g, b)
    library, _ = batchnorm_forward(batch, g, b)
    reference = F.batch_norm(torch.from_numpy(batch), None, None, torch.from_numpy(g), torch.from_numpy(b),
                             training=True, eps=1e-5).numpy()
    print(f"{name}: relative error, library vs yours {within(rel_error(library, yours), 1e-12)}, "
          f"torch vs yours {within(rel_error(reference, yours), 1e-12)}")

# %% [markdown]
# The public `batchnorm_forward` checks its arguments once and then runs `bnlab.functional._train_forward`,
# listed below: your seven steps, with your names. It differs in three small ways: it handles any number of
# spatial axes; it sums the statistics in float64 even for float32 input (the end of this lecture shows why);
# and it returns a cache holding every intermediate value, which lecture 3's backward reads.

# %%
bnlab.notebook.show_source(bnlab.functional._train_forward)

# %% [markdown]
# The same on a thousand examples of skewed synthetic data (a Gamma-distributed feature and a normal one, on
# very different scales): they become two standardized distributions, then $\gamma$ and $\beta$ give each its
# own scale and offset again.

# %%
features = np.c_[rng.gamma(2.0, 2.0, 1000) + 10.0, rng.standard_normal(1000) * 0.5 - 3.0]
plot_normalization_stages(features, gamma=np.array([1.0, 2.0]), beta=np.array([0.0, 1.0]));

# %% [markdown]
# **What to notice.** Normalization changes location and scale, not shape: the skewed feature stays skewed.
# Batch norm standardizes the first two moments of each feature, nothing more.
#
# ## Batch norm is not whitening
#
# Each feature is shifted and scaled *on its own*. That is an affine map per feature with a positive scale,
# and such maps leave the correlation between two features unchanged. Whitening would also rotate the
# features so that their covariance becomes the identity matrix; the paper (§3) considered it and chose
# per-feature normalization because whitening is costly and not everywhere differentiable.
#
# **Predict, then run.** Two features of the explorer's data set below are correlated (about 0.8). What is
# their correlation after batch norm? What would it be after whitening?

# %%
# NBVAL_CHECK_OUTPUT
batch = forward_explorer(m=1024)          # 1024 examples of two correlated features
print(f"correlation of the two features: x {batch.corr['x']:.3f}, x_hat {batch.corr['xhat']:.3f}, "
      f"y {batch.corr['y']:.3f}")
print(f"change from x to x_hat: {within(abs(batch.corr['xhat'] - batch.corr['x']), 1e-12)}")
x_var = batch.stages["x"].var(axis=0)
print(f"variance of x: feature 0 {x_var[0]:.2f}, feature 1 {x_var[1]:.1e} = {x_var[1] / 1e-5:.0f} x eps")
cov = np.cov(batch.stages["xhat"].T, bias=True)
print("covariance matrix of x_hat (whitening would make it the identity):")
print(cov.round(3))

# %% [markdown]
# The diagonal is the variance of each $\hat x$: 1.000 for feature 0, and a little less (0.988) for feature 1,
# whose variance is only about 86 times $\epsilon$: $\sigma^2/(\sigma^2+\epsilon) = 86/87$ (the $\epsilon$
# section below explains that). So the off-diagonal covariance, 0.787, is the unchanged correlation 0.791 times
# $\sqrt{1.000 \cdot 0.988}$. Whitening would have made it 0.
#
# ## Your turn: the forward explorer
#
# The dashboard runs the forward on a batch of $m$ examples of the same two features: feature 0 is large and
# skewed (mean 14), feature 1 is nearly constant (mean 5, standard deviation 0.03) and correlated with it.
# The input is drawn one small panel per feature, each on its own axis (feature 1 is a hundred times narrower);
# $\hat x$ and $y$ share one axis. The sliders set feature 0's $\gamma$ and $\beta$ (feature 1 keeps
# $\gamma = 1$, $\beta = 0$), $\epsilon$ and the batch size $m$. Things to try:
#
# - **$m = 2$**: every feature of $\hat x$ becomes $\pm 1$ whatever the data, up to $\epsilon$ (feature 1,
#   whose two values are close, gets $\pm 0.97$; set $\epsilon = 10^{-8}$). With $m = 3$ and $4$, see how
#   little a histogram of a few values tells you.
# - **$\epsilon$ from $10^{-8}$ to $1$**: feature 0 (variance about 6 at $m = 64$) keeps almost all of its
#   normalization — the standard deviation of its $\hat x$ drops only to $\sqrt{\sigma^2/(\sigma^2+1)}
#   \approx 0.93$ at $\epsilon = 1$; feature 1 (variance $6\cdot 10^{-4}$ at $m = 64$) stops being normalized
#   once $\epsilon$ passes its variance, and at $\epsilon = 1$ its $\hat x$ has collapsed into one narrow bar
#   at 0. Watch its gain $1/\sqrt{\sigma^2+\epsilon}$ in the table.
# - **$\gamma = 0$**: feature 0's output is the constant $\beta$ and the correlation is undefined.
#   **Negative $\gamma$** mirrors feature 0 and flips the *sign* of the correlation; no setting changes its
#   size.
# - **$\beta$** only shifts: the right histogram moves, nothing else does.

# %%
ForwardDashboard()

# %% [markdown]
# ## Can $\gamma$ and $\beta$ undo the normalization?
#
# Forcing every feature to mean 0 and variance 1 could limit what a layer can represent (a sigmoid fed only
# values near 0 is almost linear). The paper's answer (§3) is that the learned scale and shift can restore the
# original activations: with $\gamma = \sqrt{\sigma^2_\mathcal{B}+\epsilon}$ and $\beta = \mu_\mathcal{B}$,
#
# $$ y = \sqrt{\sigma^2_\mathcal{B}+\epsilon}\;\frac{x-\mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B}+\epsilon}} + \mu_\mathcal{B} = x .$$
#
# Look at what that needs: $\gamma$ and $\beta$ equal to *this batch's* statistics. In training mode the next
# batch has other statistics, while $\gamma$ and $\beta$ are fixed parameters. At inference the layer uses
# stored population statistics instead (lecture 5); then it is one fixed affine map per feature,
# $y = \gamma\,(x - \mu)/\sqrt{\sigma^2+\epsilon} + \beta$, and $\gamma = \sqrt{\sigma^2+\epsilon}$, $\beta = \mu$
# undo it for every input.
#
# **Predict, then run.** Set $\gamma, \beta$ from batch A (32 examples, two features) and run the training
# forward on batch A and on a second batch B from the same population. Which comes back, and roughly how far
# off is the other?

# %%
# NBVAL_CHECK_OUTPUT
errors = identity_recovery(m=32)
print(f"training mode, gamma and beta from batch A: batch A rel. error {within(errors['train A'], 1e-12)},"
      f" batch B rel. error {errors['train B']:.3f} (> 0.01)")
print(f"eval mode, population statistics:           batch A rel. error {within(errors['eval A'], 1e-12)}, "
      f"batch B rel. error {within(errors['eval B'], 1e-12)}")

# %% [markdown]
# So the identity is exactly recoverable with fixed statistics, and in training mode only for the one batch
# whose statistics the parameters copy. In training mode every output batch has per-feature mean $\beta$ and
# standard deviation $\approx|\gamma|$, whatever came in: batch norm always removes the batch-to-batch changes
# of the first two moments. What the paper's argument does establish is that the identity can be
# *represented* at inference, with population statistics; whether training reaches a good function quickly
# is another question — lectures 7 and 9 measure it.
#
# ## A bias just before batch norm is wasted
#
# A linear layer before batch norm computes $h = Wu + b$. The batch mean of $h$ is $W\bar u + b$, so
# $h - \mu_\mathcal{B} = W(u - \bar u)$: the bias cancels, in the output and in the gradient (batch norm's
# $\partial L/\partial h$ sums to zero over the batch, lecture 4, and that sum is exactly $\partial L/\partial b$).
# $\beta$ takes over the bias's job, which is why the paper (§3.2) drops $b$ and why
# `nn.Linear(..., bias=False)` or `nn.Conv2d(..., bias=False)` is usual before a batch norm layer.
#
# **Predict, then run:** how large is the difference between $\mathrm{BN}(Wu + b)$ and $\mathrm{BN}(Wu)$ for a
# bias of size 10, and what gradient does $b$ get?

# %%
# NBVAL_CHECK_OUTPUT
u = rng.standard_normal((16, 5))                  # a batch of 16 inputs to a linear layer
W = rng.standard_normal((5, 3))
b = rng.standard_normal(3) * 10                   # any bias
g, beta3 = rng.standard_normal(3), rng.standard_normal(3)
with_bias, cache = batchnorm_forward(u @ W + b, g, beta3)
without_bias, _ = batchnorm_forward(u @ W, g, beta3)
print(f"max |BN(uW + b) - BN(uW)|: {within(np.abs(with_bias - without_bias).max(), 1e-12)}")
dh = batchnorm_backward(rng.standard_normal(with_bias.shape), cache)[0]  # dL/dh for a random upstream gradient
print(f"dL/db = column sums of dL/dh, largest |value|: {within(np.abs(dh.sum(axis=0)).max(), 1e-12)} "
      f"(dL/dh itself is of size {np.abs(dh).max():.1f})")

# %% [markdown]
# ## One example's output depends on its batch-mates
#
# In training mode an example is normalized with statistics of the batch it happens to be in. The same example
# in another batch gets another output: batch norm injects noise, and the smaller the batch, the larger the
# noise. The paper (§3.4) credits this noise with a regularizing effect (in its Inception experiments dropout
# could be removed). How large is it?
#
# Take one example that sits one population standard deviation above the mean ($x = 1$ for batch-mates drawn
# from $N(0, 1)$) and put it into 4,000 random batches of size $m$. With population statistics its output
# would be 1. For large $m$ the batch mean varies by about $1/\sqrt m$ and the batch standard deviation by
# about $1/\sqrt{2m}$, so a first-order expansion predicts a spread of $\sqrt{(1 + x^2/2)/m} = 1.22/\sqrt m$.
#
# **Predict, then run:** by what factor does the spread shrink when $m$ grows 4×?

# %%
noise = batch_dependence(x0=1.0, batch_sizes=(4, 16, 64, 256), batches=4000)
plot_batch_dependence(noise);

# %%
# NBVAL_CHECK_OUTPUT
for m in sorted(noise.spreads):
    print(f"m = {m:3d}: spread {noise.spreads[m]:.3f}, spread * sqrt(m) = {noise.spreads[m] * np.sqrt(m):.2f} "
          f"(first-order prediction {np.sqrt(1 + noise.x0**2 / 2):.2f})")
print(f"fitted slope of log(spread) against log(m): {noise.slope:.2f} (1/sqrt(m) gives -0.5; "
      f"must be in [-0.55, -0.40])")

# %% [markdown]
# From $m = 16$ on, spread $\times\sqrt m$ sits at the predicted 1.22 and each 4× larger batch halves the
# noise. At $m = 4$ the spread is smaller than the line: in a batch of $m$ no $|\hat x|$ can exceed
# $\sqrt{m-1}$ (1.73 for $m = 4$: the sharp right edge of the blue histogram). The noise is what a
# training-mode network sees; inference must not have it — a prediction may not depend on which other
# examples share the batch — which is why lecture 5 switches to population statistics, and lecture 8 shows
# what happens when the normalization batch is so small that the noise swamps the signal.
#
# ## Where $\epsilon$ goes, and what it does
#
# $\epsilon$ (PyTorch's default: $10^{-5}$) keeps the division finite when a feature is constant over the
# batch. It belongs **inside** the square root. The normalization multiplies each deviation from the mean by
# the *gain* $1/\sqrt{\sigma^2+\epsilon}$, which can never exceed $1/\sqrt{\epsilon} \approx 316$. The
# tempting $(x-\mu)/(\sigma+\epsilon)$ has gain $1/(\sigma+\epsilon)$, capped only by $1/\epsilon = 10^5$.
#
# **Predict, then run.** A feature takes the values $1$, $1+10^{-4}$ and $1-10^{-4}$ (standard deviation
# $8.2\cdot 10^{-5}$). What does each version output?

# %%
# NBVAL_CHECK_OUTPUT
near_constant = np.array([[1.0], [1.0 + 1e-4], [1.0 - 1e-4]])
inside, _ = batchnorm_forward(near_constant, np.ones(1), np.zeros(1), eps=1e-5)
outside = forward_with("eps_outside_sqrt", near_constant, eps=1e-5)
print("eps inside the square root :", inside.ravel().round(3))
print("eps outside the square root:", outside.ravel().round(3))
gains = eps_gain(np.array([1e-4]), eps=1e-5)
print(f"gain on this feature: inside {gains['inside'][0]:.1f}, outside {gains['outside'][0]:,.0f}")
sweep = eps_gain(np.logspace(-9, 0, 200), eps=1e-5)
print(f"largest gain for spreads 1e-9 to 1: inside {sweep['inside'].max():.1f} "
      f"(1/sqrt(eps) = {1 / np.sqrt(1e-5):.1f}), outside {sweep['outside'].max():,.0f} (1/eps = 100,000)")

# %% [markdown]
# Inside the root the deviation of $10^{-4}$ is amplified about 316 times, to $\pm 0.032$: the feature is
# *not* blown up to unit size, because its spread is far below $\sqrt{\epsilon} \approx 0.003$, where the
# gain stops growing. Outside the root the same feature is amplified almost 11,000 times, to $\pm 1.09$ —
# the layer presents a feature that barely moves (perhaps only rounding noise) as if it were a full-size
# signal. The figure sweeps the spread: the left panel shows the output size, the right one the gain with its
# two caps.

# %%
plot_eps_effect(eps=1e-5);

# %% [markdown]
# **What to notice.** For $\sigma \gg \sqrt\epsilon$ both versions are the plain $1/\sigma$ and agree.
# Below $\sqrt\epsilon$ the right version's gain flattens at 316, while the wrong one keeps growing until
# $\sigma \approx \epsilon$. The forward explorer's $\epsilon$ slider shows the same on feature 1.
#
# ## Why the *biased* variance?
#
# Algorithm 1 divides by $m$, not $m-1$. The layer is not estimating a population variance here; it
# standardizes *this* batch, and with the biased variance the batch's outputs have exactly unit variance
# (up to $\epsilon$). **Predict, then run:** what does a batch of two give, for any two different values?

# %%
# NBVAL_CHECK_OUTPUT
pair = np.array([[3.0, -50.0], [7.0, 20.0]])
print(batchnorm_forward(pair, np.ones(2), np.zeros(2))[0].round(4))

# %% [markdown]
# Using the unbiased $m-1$ version in the training forward is a common mistake that most tests miss: the
# output is scaled by $k = \sqrt{(m-1)/m}$, so its relative error is $1-k$ — invisible for a batch of 256,
# large for a batch of 2. CS231n's element-wise measure gives $(1-k)/(1+k)$ for the same mistake, about half
# as much: quote a relative error together with its definition. (The unbiased variance *does* have a job:
# PyTorch stores it in `running_var` for inference — lecture 5.)

# %%
# NBVAL_CHECK_OUTPUT
for m in (2, 4, 32):
    batch = rng.standard_normal((m, 8))
    right, _ = batchnorm_forward(batch, np.ones(8), np.zeros(8))
    wrong = forward_with("unbiased_variance", batch)
    elementwise = np.max(np.abs(wrong - right) / np.maximum(1e-8, np.abs(wrong) + np.abs(right)))  # CS231n's
    k = np.sqrt((m - 1) / m)
    print(f"m = {m:2d}: relative error of the output {rel_error(wrong, right):.3f} (1 - k = {1 - k:.3f}); "
          f"CS231n's element-wise measure {elementwise:.3f} ((1 - k)/(1 + k) = {(1 - k) / (1 + k):.3f})")

# %% [markdown]
# ## Two passes, not one
#
# The variance has a famous one-pass formula, $\sigma^2 = E[x^2] - E[x]^2$: one sweep over the data collects
# both sums. In floating point it is a trap. When the mean is large compared with the spread, $E[x^2]$ and
# $E[x]^2$ are two huge, nearly equal numbers; float32 keeps about 7 significant digits, and their difference
# keeps only the rounding error. The two-pass formula subtracts the mean *first*, so it squares small numbers.
# The figure computes both in float32 for 10,000 values with standard deviation 1 and a growing mean. Both use
# numpy's float32 `mean`, which adds the values pairwise (a tree of partial sums), so the sums themselves stay
# accurate and the figure compares the two *formulas*; the next section shows what a plain running sum does.

# %%
plot_variance_precision();

# %% [markdown]
# **Predict, then run.** At a mean of $10^4$, $x^2 \approx 10^8$ and float32 numbers near $10^8$ are 8 apart.
# What can the one-pass variance (true value about 1) come out as?

# %%
# NBVAL_CHECK_OUTPUT
precision = variance_precision()          # the figure's data
offsets = precision["offsets"]
for offset in (1e2, 1e3, 1778, 3162, 1e4, 1e5):
    i = int(np.argmin(np.abs(np.log10(offsets / offset))))
    print(f"mean {offsets[i]:>7,.0f}: one pass {precision['one_pass'][i]:8.4g} (rel. error "
          f"{precision['one_pass_error'][i]:7.2g}), two passes {precision['two_pass'][i]:.4f}; "
          f"exact {precision['exact'][i]:.4f}")
print("one pass exactly 0 at the means:", ", ".join(f"{o:,.0f}" for o in offsets[precision["one_pass"] == 0]))
print("one pass negative at the means: ", ", ".join(f"{o:,.0f}" for o in offsets[precision["one_pass"] < 0]))
print(f"largest two-pass rel. error over all {offsets.size} means: {within(precision['two_pass_error'].max(), 1e-3)}")

# %% [markdown]
# The one-pass error grows with the mean, but erratically, because it is whatever the rounding of two huge
# numbers happens to leave: 0.09% at a mean of 100, 19% at 1,000, yet 0.4% at 1,778, and at 3,162 exactly 2,
# about twice the true value. At $10^4$ it is **negative**, and its square root NaN. At 5,623 and 17,783 it is
# **exactly 0** (circled): no NaN, but just as harmful, because the layer then multiplies deviations of size 1
# by the gain $1/\sqrt\epsilon \approx 316$. At $10^5$ it is 1024 instead of 1. The two-pass variance stays
# within $10^{-4}$ throughout.
#
# ## A float32 accumulator breaks a production kernel
#
# There is a second trap, and the two-pass formula alone does not protect against it: the *sums* themselves.
# The figure above was spared because numpy sums pairwise; a kernel that adds one value after another into a
# float32 accumulator is not. Here is what PyTorch's CPU kernel (torch 2.13, one thread) does with a million
# float32 values of mean 1000 and standard deviation 1, next to the exact statistics and `bnlab`'s (which sums
# in float64).
#
# **Predict, then run.** The output of a batch norm layer should have standard deviation 1. What does torch
# return?

# %%
# NBVAL_CHECK_OUTPUT
stats = torch_kernel_statistics(rows=1_000_000, offset=1000.0)
for name, s in stats.items():
    print(f"{name:17s} mean {s['mean']:9.3f}   variance used {s['var']:7.3f}   output std {s['output_std']:.3f}")
exact, kernel = stats["exact"], stats["torch CPU kernel"]
mean_error = kernel["mean"] - exact["mean"]
print(f"exact variance + (torch's mean error)^2 = {exact['var']:.3f} + {mean_error:.3f}^2 = "
      f"{exact['var'] + mean_error**2:.1f}   (torch used {kernel['var']:.1f})")
print(f"sqrt(exact variance / torch's variance) = {np.sqrt(exact['var'] / kernel['var']):.3f}   "
      f"(torch's output std {kernel['output_std']:.3f}); output mean shifted by "
      f"{-mean_error / np.sqrt(kernel['var']):.2f}")

# %% [markdown]
# The culprit is the **mean**: torch's kernel makes it 1008.9 instead of 1000.0. The variance it then computes
# is an honest mean squared deviation — but around the wrong centre, so it equals the true variance plus the
# squared error of the mean (the fourth line); the one-pass formula is not to blame. Deviations of true size 1
# divided by $\sqrt{80.2}$ give the output standard deviation 0.11 instead of 1, and every output is shifted by
# about $-1$.
#
# Where does 1008.9 come from? A plain float32 running sum, adding one value after another, reproduces it.
# Each addition rounds the new sum to the nearest float32, and how coarse that is depends on the size of the
# sum. **Predict, then run:** between $2^{28}$ and $2^{29}$ float32 numbers are 32 apart, beyond $2^{29}$ they
# are 64 apart. To which multiple is an added value of about 1000 rounded in each range, and which way does
# that push the mean? Two controls: at 200,000 values the sum never gets that large; and the same million
# values arranged as images, with spatial positions.

# %%
# NBVAL_CHECK_OUTPUT
same_data = (np.random.default_rng(0).standard_normal((1_000_000, 1)) + 1000.0).astype(np.float32)
print(f"plain float32 running sum: mean {sequential_float32_mean(same_data):.3f}; "
      f"numpy's pairwise float32 sum: {float(same_data.mean()):.3f}; float64 sum: "
      f"{same_data.mean(dtype=np.float64):.3f}")
drift = running_sum_drift(same_data, edges=(2.0**28, 2.0**29))
for k, where in ((0, "below 2^28        "), (1, "from 2^28 to 2^29 "), (2, "above 2^29        ")):
    print(f"running sum {where}: {drift.fraction[k]:.0%} of the additions, each adds about "
          f"{drift.typical_step[k]:.0f}; shift of the mean {drift.mean_shift[k]:+.2f}")
print(f"net shift {drift.mean_shift.sum():+.2f} = running-sum mean {drift.mean:.2f} - exact mean {drift.exact_mean:.2f}")
control = torch_kernel_statistics(rows=200_000, offset=1000.0)["torch CPU kernel"]
print(f"torch at 200,000 rows: mean {control['mean']:.2f}, output std {control['output_std']:.3f}, "
      f"off 1 by {within(control['output_std'] - 1, 1e-3)}")
print("torch, the same million values shaped (N, 1, H, W), output std:",
      ", ".join(f"{shape} {torch_output_std(shape):.3f}" for shape in ((256, 1, 64, 64), (250_000, 1, 2, 2),
                                                                        (1_000_000, 1, 1, 1))))

# %% [markdown]
# Below $2^{28}$ the values round up or down about equally often and the errors cancel. From $2^{28}$ to
# $2^{29}$ a value near 1000 becomes 992, the nearest multiple of 32; beyond $2^{29}$, for the last 46% of the
# additions, it becomes 1024, the nearest multiple of 64. The net +8.9 is torch's error.
#
# The last line is a surprise: as a $(256, 1, 64, 64)$ convolutional batch, or even with $2 \times 2$
# positions per image, the same million values come out right; only $1 \times 1$ maps drift. So the count
# alone does not decide: torch's kernel makes this long running sum along the batch axis for $(N, C)$ inputs
# and $1 \times 1$ maps, and the risk is a very long batch of fully connected activations whose mean is far
# from 0 compared with their spread. How far it drifts depends on how the kernel splits the sum across
# threads: with `torch.set_num_threads(2)` the $(1{,}000{,}000, 1)$ batch gave output standard deviation 0.26
# on the course's 2-core machine (torch 2.13); this notebook pins one thread.
#
# `bnlab` sums in float64, where numbers near $2^{29}$ are $2^{-23} \approx 1.2\cdot 10^{-7}$ apart, so even a
# plain running sum of these million values moves the mean by less than $10^{-7}$; a pairwise (tree) sum, as
# numpy's `mean` does, also avoids the drift.
#
# ## Summary
#
# - Batch norm standardizes each feature over the batch (and over positions, for convolutions: $m = NHW$),
#   then applies a learned per-feature scale $\gamma$ and shift $\beta$. A dozen lines of numpy implement it.
# - With fixed (population) statistics $\gamma = \sqrt{\sigma^2+\epsilon}$, $\beta = \mu$ give back the
#   identity; in training mode they do so only for the one batch whose statistics they copy.
# - Per-feature normalization keeps correlations: batch norm is not whitening.
# - A bias just before batch norm is cancelled by the batch mean and gets zero gradient; $\beta$ does its job.
# - In training mode an example's output depends on its batch-mates: noise with spread about
#   $1.22/\sqrt m$ for an example one standard deviation out.
# - $\epsilon$ sits inside the square root; it caps the gain at $1/\sqrt\epsilon \approx 316$.
# - The training forward uses the biased variance: the batch is standardized exactly.
# - "Relative error" in this course is $\max|a-b| / \max(\max|a|, \max|b|)$ (`bnlab.gradcheck.rel_error`);
#   CS231n's element-wise measure gives about half as much for the same mistake.
# - Compute the statistics in two passes with a wide (float64 or pairwise) accumulator: $E[x^2]-E[x]^2$ fails
#   in float32 (negative, zero or far off, erratically), and so does a long float32 running sum.
#
# ## Questions
#
# 1. A feature takes the values $5, 5, 5, 5$ in a batch. What does batch norm output for it, with and without
#    $\epsilon$? What would its gradient be?
# 2. For a convolutional input of shape $(8, 16, 32, 32)$, how many values share one mean, and how many
#    $\gamma$ parameters does the layer have?
# 3. After training, with population statistics, batch norm can represent the identity. So why not skip it
#    and let the network learn? (Lectures 7 and 9 measure two answers: depth and the learning rate.)
# 4. A network has `nn.Linear(100, 50)` followed by `nn.BatchNorm1d(50)`. How many of its parameters can never
#    change the output in training mode, and what gradient do they receive?
# 5. At $m = 4$ the spread of one example's output was below the $1/\sqrt m$ line. Why can a batch of $m$
#    never produce $|\hat x| > \sqrt{m-1}$? (Hint: the squares of the $\hat x_i$ of one feature sum to
#    $m$, up to $\epsilon$.)
#
# Next: [Lecture 3 — the backward pass along the computational graph](03_backward_graph.ipynb).
