# %% [markdown]
# # Exercise 4 — Batch norm in PyTorch
#
# **Goals.** After this exercise you have written
# 1. `BatchNormFunction`, a `torch.autograd.Function` whose backward is the closed form you derived, with the
#    arguments of `torch.nn.functional.batch_norm`;
# 2. `BatchNorm2d`, an `nn.Module` that is a drop-in for `torch.nn.BatchNorm2d`: same parameters, buffers,
#    `state_dict` keys, train/eval behaviour and numbers.
#
# **Before you start.** Exercises 1–3 and the lecture on batch norm in PyTorch.
#
# **How this works.** As before. The tests compare your code with `torch.nn.functional.batch_norm` and
# `torch.nn.BatchNorm2d`. When graded, torch's own batch norm functions are blocked, so your code cannot call
# them (comparing against them in your own scratch cells is fine while you work).

# %% locked id=ex4_setup
import numpy as np
import torch
from torch import nn

torch.manual_seed(0)

# %% [markdown]
# ## Recap
#
# `F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)` normalizes each channel
# (axis 1) of $(N, C)$ or $(N, C, H, W)$ input. With `training=True` it uses the batch mean and biased variance
# and, when running statistics are given, updates them **in place**:
# $r \leftarrow (1-\text{momentum})\,r + \text{momentum}\cdot b$, storing the unbiased variance
# $\frac{m}{m-1}\sigma^2_B$. With `training=False` it uses the running statistics. The gradient:
#
# $$
# \frac{\partial L}{\partial x} = \frac{\gamma}{m\sqrt{\sigma^2+\epsilon}}
#     \Big(m\,\delta - \sum \delta - \hat x \sum \delta\,\hat x\Big)\ \text{(training)},\qquad
# \frac{\partial L}{\partial x} = \frac{\gamma\,\delta}{\sqrt{\sigma^2_{\text{running}}+\epsilon}}\ \text{(eval)} .
# $$
#
# ## Task 1: `class BatchNormFunction(torch.autograd.Function)`
#
# `BatchNormFunction.apply(x, running_mean, running_var, weight, bias, training, momentum, eps)` returns the
# normalized tensor. `running_mean`/`running_var` may be `None` in training mode (then nothing is updated).
# `backward(ctx, grad_out)` returns one gradient per argument of `forward`: for `x`, `weight`, `bias`, and `None`
# for the rest. Save what backward needs with `ctx.save_for_backward(...)`. Hidden tests add
# $(N, C, H, W)$ input, other momentum and eps, and a batch of two.
#
# **Hints.** Reduce over `dims = [0] + list(range(2, x.dim()))` with `keepdim=True`; update running statistics
# with in-place operations under `torch.no_grad()` (`running_mean.mul_(1 - momentum).add_(momentum * mean)`).

# %% solution id=ex4_function
class BatchNormFunction(torch.autograd.Function):
    """Batch norm with a hand-written backward; arguments as torch.nn.functional.batch_norm."""

    ### BEGIN SOLUTION
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps):
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        m = x.numel() // x.shape[1]
        if training:
            mean = x.mean(dim=dims, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
            if running_mean is not None:
                with torch.no_grad():
                    running_mean.mul_(1 - momentum).add_(momentum * mean.reshape(-1))
                    running_var.mul_(1 - momentum).add_(momentum * var.reshape(-1) * m / (m - 1))
        else:
            mean, var = running_mean.reshape(shape), running_var.reshape(shape)
        inv = torch.rsqrt(var + eps)
        xhat = (x - mean) * inv
        ctx.save_for_backward(xhat, inv, weight)
        ctx.training, ctx.dims, ctx.m = training, dims, m
        return weight.reshape(shape) * xhat + bias.reshape(shape)

    @staticmethod
    def backward(ctx, grad_out):
        xhat, inv, weight = ctx.saved_tensors
        dims, m = ctx.dims, ctx.m
        shape = inv.shape
        dbias = grad_out.sum(dim=dims)
        dweight = (grad_out * xhat).sum(dim=dims)
        scale = weight.reshape(shape) * inv
        if ctx.training:
            dx = scale / m * (m * grad_out - dbias.reshape(shape) - xhat * dweight.reshape(shape))
        else:
            dx = scale * grad_out
        return dx, None, None, dweight, dbias, None, None, None
    ### END SOLUTION

# %% tests id=ex4_function_tests points=3
from bnlab.grading import checks
checks.torch_function(BatchNormFunction)

# %% tests id=ex4_function_hidden points=1
from bnlab.grading import checks
print("Hidden tests of BatchNormFunction run when your work is graded: (N, C, H, W), other momentum and eps, "
      "a batch of 2.")
### BEGIN HIDDEN TESTS
checks.torch_function_conv(BatchNormFunction)
### END HIDDEN TESTS

# %% [markdown]
# ## Task 2: `class BatchNorm2d(nn.Module)`
#
# * `BatchNorm2d(num_features, eps=1e-5, momentum=0.1)` with parameters `weight` (ones) and `bias` (zeros) and
#   buffers `running_mean` (zeros), `running_var` (ones) and `num_batches_tracked` (0, a long tensor), so that
#   `state_dict()` has torch's five keys.
# * `forward(x)` calls `BatchNormFunction.apply`. Training or eval is decided by `self.training` — *not* by
#   whether gradients are enabled: a training-mode forward under `torch.no_grad()` still uses and updates batch
#   statistics. Count training forwards in `num_batches_tracked`.
#
# Hidden tests use other eps and momentum values.

# %% solution id=ex4_module
class BatchNorm2d(nn.Module):
    """A drop-in for torch.nn.BatchNorm2d built on BatchNormFunction."""

    ### BEGIN SOLUTION
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)
        return BatchNormFunction.apply(x, self.running_mean, self.running_var, self.weight, self.bias,
                                       self.training, self.momentum, self.eps)
    ### END SOLUTION

# %% tests id=ex4_module_tests points=3
from bnlab.grading import checks
checks.torch_module(BatchNorm2d)

# %% tests id=ex4_module_hidden points=1
from bnlab.grading import checks
print("Hidden tests of BatchNorm2d run when your work is graded: other eps and momentum values.")
### BEGIN HIDDEN TESTS
checks.torch_module_conv(BatchNorm2d)
### END HIDDEN TESTS

# %% [markdown]
# ## A question
#
# **Q5.** A model with batch norm is evaluated on the test set one example at a time, but the author forgot
# `model.eval()`. What happens in PyTorch?
#
# * (a) nothing: batch norm notices the batch of one and uses the running statistics
# * (b) `BatchNorm1d` on $(1, C)$ input raises an error; with larger test batches the outputs depend on which
#   examples share a batch, and the running statistics are updated with test data
# * (c) the outputs are right but the running statistics drift
# * (d) the gradients are wrong but the outputs are right
#
# Answer with one letter, e.g. `answer_q5 = "a"`.

# %% solution id=ex4_q5
### BEGIN SOLUTION
answer_q5 = "b"
### END SOLUTION

# %% tests id=ex4_q5_tests points=1
from bnlab.grading import checks
checks.choice(answer_q5, options="abcd")
### BEGIN HIDDEN TESTS
checks.choice(answer_q5, options="abcd", correct="b",
              why="In training mode BN always uses batch statistics (one value per channel raises) and updates "
                  "the running statistics, whatever the data.")
### END HIDDEN TESTS
