# %% [markdown]
# # Exercise 1 — The forward pass and inference
#
# **Goals.** After this exercise you have written, in numpy,
# 1. `batchnorm_forward`: training-mode batch norm (Algorithm 1 of Ioffe & Szegedy, 2015) for inputs of shape
#    $(N, C)$ and $(N, C, H, W)$;
# 2. `batchnorm_inference`: inference-mode batch norm with stored running statistics (Algorithm 2);
#
# and you can say why the training forward uses the biased variance and where $\epsilon$ goes.
#
# **Before you start.** [Lecture 2: the forward pass](../notebooks/02_forward_pass.ipynb).
#
# **How this works.** Write your code where it says `# YOUR CODE HERE` (delete the `raise NotImplementedError()`
# line). Run the test cell under each task: it prints a ✔ line ending "visible checks passed — hidden checks run
# when your work is graded", or an error that names the most likely mistake. When your work is graded, the same
# tests run again together with a few hidden ones (the task says what they cover), on fresh inputs. Keep the function names and signatures as given, and do not import the course's own implementation
# (`bnlab.functional`): grading blocks it.

# %% locked id=ex1_setup
import numpy as np

# %% [markdown]
# ## Recap
#
# For each channel $c$ separately, with the $m$ values $x_1,\dots,x_m$ that channel takes in the batch
# ($m = N$ for $(N, C)$ input, $m = N\cdot H\cdot W$ for $(N, C, H, W)$ input):
#
# $$
# \mu = \frac{1}{m}\sum_{i=1}^{m} x_i, \qquad
# \sigma^2 = \frac{1}{m}\sum_{i=1}^{m} (x_i-\mu)^2, \qquad
# \hat x_i = \frac{x_i-\mu}{\sqrt{\sigma^2+\epsilon}}, \qquad
# y_i = \gamma_c\,\hat x_i + \beta_c .
# $$
#
# ## Task 1: `batchnorm_forward(x, gamma, beta, eps=1e-5) -> (out, cache)`
#
# * `x` has shape $(N, C)$ or $(N, C, H, W)$ (any $(N, C, \ldots)$, in fact); `gamma` and `beta` have shape $(C,)$.
# * Return `out` (shape and dtype of `x`) and a `cache`: anything you like that your backward pass (exercise 2)
#   will need. Nobody else reads it.
# * Do not modify `x`, `gamma` or `beta` in place.
#
# Hidden tests also try $(N, C, H, W)$ and $(N, C, L)$ input, a non-default `eps`, float32 input (the
# output must stay float32), and float64 input with float32 `gamma` and `beta` (the output stays float64).
#
# **Hints.**
# * Reduce over every axis except axis 1: `axes = (0,) + tuple(range(2, x.ndim))`.
# * `keepdims=True` keeps the statistics in shape $(1, C)$ or $(1, C, 1, 1)$, so they broadcast against `x`;
#   `gamma` needs the same shape: `gamma.reshape(1, -1, *([1] * (x.ndim - 2)))`.
# * `np.var` divides by $m$ by default (`ddof=0`): that is what Algorithm 1 wants here.
# * $\epsilon$ goes *inside* the square root.

# %% solution id=ex1_forward
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """Training-mode batch norm. x: (N, C, ...); gamma, beta: (C,). Returns (out, cache)."""
    ### BEGIN SOLUTION
    axes = tuple(a for a in range(x.ndim) if a != 1)
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    centred = x - mu
    var = (centred * centred).mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + eps)
    xhat = centred * inv_std
    g = np.reshape(gamma, per_channel)
    out = g * xhat + np.reshape(beta, per_channel)
    cache = {"xhat": xhat, "inv_std": inv_std, "g": g, "axes": axes, "centred": centred}
    return out, cache
    ### END SOLUTION

# %% tests id=ex1_forward_tests points=3
from bnlab.grading import checks
checks.forward(batchnorm_forward)

# %% tests id=ex1_forward_hidden points=2
from bnlab.grading import checks
print("Hidden tests of batchnorm_forward run when your work is graded: (N, C, H, W) and (N, C, L) input, "
      "the eps argument, float32 input (one batch with a large mean), float64 input with float32 gamma and beta.")
### BEGIN HIDDEN TESTS
checks.forward_conv(batchnorm_forward)
checks.forward_options(batchnorm_forward)
### END HIDDEN TESTS

# %% [markdown]
# ## Task 2: `batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5) -> out`
#
# At inference the layer uses stored population statistics instead of the batch's own:
#
# $$ y = \gamma\,\frac{x - \mu_{\text{running}}}{\sqrt{\sigma^2_{\text{running}} + \epsilon}} + \beta . $$
#
# Every argument but `x` has shape $(C,)$. One example's output must not depend on the other examples in the
# batch, so a batch of one example works too. Hidden tests also try $(N, C, H, W)$ input, a non-default `eps`,
# and float64 input with float32 statistics (the output keeps the dtype of `x`).
#
# **Hint.** This is one multiply and one add per channel: `scale = gamma / sqrt(running_var + eps)`,
# `shift = beta - running_mean * scale`.

# %% solution id=ex1_inference
def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    """Inference-mode batch norm with running statistics. x: (N, C, ...); the rest (C,). Returns out."""
    ### BEGIN SOLUTION
    per_channel = (1, -1) + (1,) * (x.ndim - 2)
    scale = np.asarray(gamma) / np.sqrt(np.asarray(running_var) + eps)
    shift = np.asarray(beta) - np.asarray(running_mean) * scale
    return x * scale.reshape(per_channel) + shift.reshape(per_channel)
    ### END SOLUTION

# %% tests id=ex1_inference_tests points=2
from bnlab.grading import checks
checks.inference(batchnorm_inference)

# %% tests id=ex1_inference_hidden points=1
from bnlab.grading import checks
print("Hidden tests of batchnorm_inference run when your work is graded: (N, C, H, W) input, the eps argument, "
      "float64 input with float32 statistics.")
### BEGIN HIDDEN TESTS
checks.inference_conv(batchnorm_inference)
### END HIDDEN TESTS

# %% [markdown]
# ## Two questions
#
# Answer each with one letter in a string, e.g. `answer_q1 = "a"`. The test cell only checks that your answer
# is one of the letters; whether it is right is marked when your work is graded.
#
# **Q1.** A batch of **two** examples goes through training-mode batch norm with $\gamma = 1$, $\beta = 0$, and
# a feature takes two different values $a < b$. What does that feature's output look like?
#
# * (a) both outputs are 0
# * (b) $-1$ and $+1$ (up to $\epsilon$), whatever $a$ and $b$ are
# * (c) $a - \mu$ and $b - \mu$
# * (d) it depends on how far apart $a$ and $b$ are

# %% solution id=ex1_q1
### BEGIN SOLUTION
answer_q1 = "b"
### END SOLUTION

# %% tests id=ex1_q1_tests points=1
from bnlab.grading import checks
checks.choice(answer_q1, options="abcd")
### BEGIN HIDDEN TESTS
checks.choice(answer_q1, options="abcd", correct="b",
              why="With m = 2 the centred values are -d and +d and the biased variance is d**2, so xhat = -1, +1.")
### END HIDDEN TESTS

# %% [markdown]
# **Q2.** Why does the *training* forward divide the variance by $m$ rather than $m - 1$?
#
# * (a) dividing by $m - 1$ is numerically unstable in float32
# * (b) PyTorch divides by $m - 1$ in training; the paper divides by $m$
# * (c) it normalizes the batch by the spread the batch actually has; $m - 1$ estimates the spread of the whole
#   population, which is what `running_var` stores for inference
# * (d) it makes no difference to the output

# %% solution id=ex1_q2
### BEGIN SOLUTION
answer_q2 = "c"
### END SOLUTION

# %% tests id=ex1_q2_tests points=1
from bnlab.grading import checks
checks.choice(answer_q2, options="abcd")
### BEGIN HIDDEN TESTS
checks.choice(answer_q2, options="abcd", correct="c",
              why="Algorithm 1 uses the batch's own (biased) variance; the unbiased m/(m-1) estimate is for "
                  "running_var. At small m the two outputs differ visibly (7% at m = 4).")
### END HIDDEN TESTS
