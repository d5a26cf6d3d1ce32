# %% [markdown]
# # Exercise 3 — A numpy layer with running statistics
#
# **Goals.** After this exercise you have written a numpy `BatchNorm` layer that behaves like
# `torch.nn.BatchNorm1d/2d`: it learns `weight` ($\gamma$) and `bias` ($\beta$), keeps running statistics in
# training mode, uses them in eval mode, and backpropagates. You can say which momentum convention PyTorch
# uses and why `running_var` is unbiased.
#
# **Before you start.** Exercises 1 and 2 (you may paste your functions from them into the solution cell) and
# the lecture on inference (running statistics, momentum conventions).
#
# **How this works.** As before: code where it says `# YOUR CODE HERE`, run the tests below it. The tests drive
# your layer through a script of constructor calls, `train()`/`eval()`, forwards and backwards, and compare it
# step by step with a reference layer; a failure says at which step and what differs.

# %% locked id=ex3_setup
import numpy as np

# %% [markdown]
# ## Recap: running statistics
#
# In training mode the layer normalizes with the batch's mean $\mu_B$ and *biased* variance $\sigma_B^2$, and
# then folds them into running averages, PyTorch's way:
#
# $$
# \text{running\_mean} \leftarrow (1-\text{momentum})\cdot\text{running\_mean} + \text{momentum}\cdot\mu_B,\qquad
# \text{running\_var} \leftarrow (1-\text{momentum})\cdot\text{running\_var} + \text{momentum}\cdot\frac{m}{m-1}\,\sigma_B^2 .
# $$
#
# The running variance stores the **unbiased** estimate ($m$ = values per channel: $N$ for $(N, C)$,
# $N\cdot H\cdot W$ for $(N, C, H, W)$). They start at `running_mean = 0`, `running_var = 1`. In eval mode the
# layer normalizes with the running statistics and changes nothing.
#
# (Keras writes the average the other way round, `moving = momentum * moving + (1 - momentum) * batch`, with
# default 0.99, and feeds its moving variance the *biased* batch variance: both matter when you port a model.)
#
# ## Task: `class BatchNorm`
#
# * `BatchNorm(num_features, eps=1e-5, momentum=0.1)`: `weight` = ones, `bias` = zeros, `running_mean` = zeros,
#   `running_var` = ones, all of shape $(C,)$; the layer starts in training mode.
# * `train()` and `eval()` switch modes (store the mode in `self.training`).
# * `forward(x)` for $x$ of shape $(N, C)$ or $(N, C, H, W)$: training mode normalizes with batch statistics and
#   updates the running statistics once; eval mode uses the running statistics and updates nothing.
# * `backward(dout)` after a training-mode forward: returns `dx` and stores `self.grad = {"weight": dgamma,
#   "bias": dbeta}`.
#
# Hidden tests repeat the script on $(N, C, H, W)$ input.
#
# **Hints.** Careful with `self.train = False`: it replaces the method `train` by a boolean. Update the running
# statistics with new arrays (`self.running_mean = ...`), not a local variable.

# %% solution id=ex3_layer
class BatchNorm:
    """Batch norm over axis 1 of (N, C) or (N, C, H, W) input, with running statistics like torch's."""

    ### BEGIN SOLUTION
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = np.ones(num_features)
        self.bias = np.zeros(num_features)
        self.running_mean = np.zeros(num_features)
        self.running_var = np.ones(num_features)
        self.training = True
        self.grad = {}
        self._saved = None

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    def forward(self, x):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            m = x.size // x.shape[1]
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            rate = self.momentum
            self.running_mean = (1 - rate) * self.running_mean + rate * mean
            self.running_var = (1 - rate) * self.running_var + rate * var * m / (m - 1)
        else:
            mean, var = self.running_mean, self.running_var
        inv = 1.0 / np.sqrt(var + self.eps)
        xhat = (x - mean.reshape(shape)) * inv.reshape(shape)
        self._saved = (xhat, inv.reshape(shape), axes, shape, self.training)
        return self.weight.reshape(shape) * xhat + self.bias.reshape(shape)

    def backward(self, dout):
        xhat, inv, axes, shape, batch_stats = self._saved
        dbeta = dout.sum(axis=axes)
        dgamma = (dout * xhat).sum(axis=axes)
        self.grad = {"weight": dgamma, "bias": dbeta}
        scale = self.weight.reshape(shape) * inv
        if not batch_stats:
            return dout * scale
        m = dout.size // dout.shape[1]
        return scale / m * (m * dout - dbeta.reshape(shape) - xhat * dgamma.reshape(shape))
    ### END SOLUTION

# %% tests id=ex3_train_tests points=3
from bnlab.grading import checks
checks.layer_train(BatchNorm)

# %% tests id=ex3_eval_tests points=3
from bnlab.grading import checks
checks.layer_eval(BatchNorm)

# %% tests id=ex3_conv_hidden points=2
from bnlab.grading import checks
print("Hidden tests of BatchNorm run when your work is graded: the same script on (N, C, H, W) input.")
### BEGIN HIDDEN TESTS
checks.layer_conv(BatchNorm)
### END HIDDEN TESTS

# %% [markdown]
# ## A question
#
# **Q4.** A Keras model uses `BatchNormalization(momentum=0.99)`. Which PyTorch `momentum` gives the newest
# batch the same weight in the running averages?
#
# * (a) 0.99
# * (b) 0.9
# * (c) 0.1
# * (d) 0.01
#
# Answer with one letter, e.g. `answer_q4 = "a"`.

# %% solution id=ex3_q4
### BEGIN SOLUTION
answer_q4 = "d"
### END SOLUTION

# %% tests id=ex3_q4_tests points=1
from bnlab.grading import checks
checks.choice(answer_q4, options="abcd")
### BEGIN HIDDEN TESTS
checks.choice(answer_q4, options="abcd", correct="d",
              why="Keras weights the old value by momentum, PyTorch the new batch: Keras 0.99 = PyTorch 0.01.")
### END HIDDEN TESTS
