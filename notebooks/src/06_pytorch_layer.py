# %% [markdown]
# # Lecture 6 — Batch norm in PyTorch
#
# **Learning goals.** After this lecture you can
# 1. write batch norm as a `torch.autograd.Function` whose backward is the closed form of lecture 4;
# 2. wrap it in an `nn.Module` that is a drop-in for `torch.nn.BatchNorm1d/2d` — same constructor, buffers,
#    state dict, modes and errors — and prove the match;
# 3. explain the 2-D case (statistics per channel over batch *and* positions) and the reshape mistake it invites;
# 4. recognise two sharp edges: the batch-of-one error and `torch.func`'s refusal of in-place buffer updates.
#
# **Prerequisites.** Lectures 4 (closed form) and 5 (running statistics); `torch.autograd` basics.
#
# **Practise it.** [Exercise 4: `BatchNormFunction` and `BatchNorm2d`](../exercises/ex4_torch_layer.ipynb).

# %%
import torch
import torch.nn.functional as F

import bnlab.nn
import bnlab.notebook
import bnlab.plots as plots
from bnlab.conformance import channel_batch, compare_modules
from bnlab.timing import time_torch_batch_norms

bnlab.notebook.setup()
generator = torch.Generator().manual_seed(0)

# %% [markdown]
# ## An `autograd.Function` with the closed-form backward
#
# Autograd could differentiate a batch norm written in tensor operations by itself, recording every intermediate
# (lecture 3's staged graph). A `torch.autograd.Function` instead supplies its own `backward`, so it can save
# only what the closed form needs — here $x$, the mean, $1/\sqrt{\sigma^2+\epsilon}$ and $\gamma/\sqrt{\sigma^2+\epsilon}$
# — and evaluate
# $\frac{\partial L}{\partial x} = \frac{\gamma}{ms}\big(m\delta - \sum\delta - \hat x\sum\delta\hat x\big)$
# in a few passes. The library's version is written for speed (in-place operations into preallocated buffers,
# `addcmul` for multiply-and-add), but its structure is the one you will write in exercise 4:

# %%
bnlab.notebook.show_source(bnlab.nn.BatchNormFunction)

# %% [markdown]
# Is the hand-written backward right? `torch.autograd.gradcheck` compares it with finite differences — in float64,
# with random inputs, exactly the rules of lecture 3 — for the input, $\gamma$ and $\beta$, in both modes:

# %%
# NBVAL_CHECK_OUTPUT
x = channel_batch((6, 3, 2, 2), generator)
weight = torch.rand(3, dtype=torch.float64, generator=generator) + 0.5
bias = torch.randn(3, dtype=torch.float64, generator=generator)
inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
mean, var = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
for training in (True, False):
    ok = torch.autograd.gradcheck(
        lambda x, w, b: bnlab.nn.batch_norm(x, mean.clone(), var.clone(), w, b, training=training), inputs)
    print(f"gradcheck, training={training}:", ok)

# %% [markdown]
# ## A drop-in module
#
# PyTorch's own modules share one base class that owns the parameters, the buffers, the reset and the momentum
# rule; the subclasses only check the input's number of dimensions; `forward` hands everything to one functional
# call. `bnlab.nn` follows the same design — this is the whole of `BatchNorm2d`:

# %%
bnlab.notebook.show_source(bnlab.nn.BatchNorm2d)

# %% [markdown]
# "Drop-in" is a claim to be tested, not asserted. Drive ours and PyTorch's through the same sequence — training
# steps with batches of 8, 3, 16 and 2, eval steps with 5 and a single example — and compare outputs, input
# gradients, parameter gradients and every buffer after every step:

# %%
# NBVAL_CHECK_OUTPUT
for momentum in (0.1, None):
    for ours, theirs, sample in [(bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d, (4,)),
                                 (bnlab.nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 5, 5))]:
        worst = compare_modules(ours(4, momentum=momentum, dtype=torch.float64),
                                theirs(4, momentum=momentum, dtype=torch.float64), sample)
        print(f"{theirs.__name__}, momentum={momentum}: everything agrees to 1e-12:",
              max(worst.values()) < 1e-12)

# %% [markdown]
# ## The 2-D case
#
# For an image batch $(N, C, H, W)$ each channel has one $\gamma$, one $\beta$ and one pair of statistics, shared
# over the batch and all $H\cdot W$ positions: the layer is a 1-D batch norm over $N\cdot H\cdot W$ "examples" with
# $C$ features. To use a 1-D implementation you must move the channels last *before* flattening. Reshaping
# $(N, C, H, W)$ straight to $(N\cdot H\cdot W, C)$ runs without complaint and mixes channels and positions:

# %%
# NBVAL_CHECK_OUTPUT
images = channel_batch((8, 3, 4, 4), generator)
per_channel = F.batch_norm(images, None, None, training=True)
channels_last = images.permute(0, 2, 3, 1).reshape(-1, 3)                # (N*H*W, C): right
as_vectors = F.batch_norm(channels_last, None, None, training=True)
right = as_vectors.reshape(8, 4, 4, 3).permute(0, 3, 1, 2)
wrong = F.batch_norm(images.reshape(-1, 3), None, None, training=True).reshape(images.shape)
print("permute, then flatten: equals BatchNorm2d:   ", torch.allclose(right, per_channel, atol=1e-12))
print("flatten without permuting: equals BatchNorm2d:", torch.allclose(wrong, per_channel, atol=1e-2))

# %% [markdown]
# ## State dicts
#
# Same parameter and buffer names means checkpoints move freely between the two implementations:

# %%
# NBVAL_CHECK_OUTPUT
trained = torch.nn.BatchNorm2d(3)
trained(channel_batch((8, 3, 4, 4), generator, torch.float32))
ours = bnlab.nn.BatchNorm2d(3)
ours.load_state_dict(trained.state_dict())
back = torch.nn.BatchNorm2d(3)
back.load_state_dict(ours.state_dict())
print("keys:", list(ours.state_dict()))
probe = channel_batch((2, 3, 4, 4), generator, torch.float32)
print("same eval outputs after the round trip:", torch.equal(back.eval()(probe), trained.eval()(probe))
      and torch.allclose(ours.eval()(probe), trained(probe), atol=1e-6))

# %% [markdown]
# ## Two sharp edges
#
# **A batch of one in training mode.** With one value per channel the batch variance is 0 and the output is
# $\beta$ whatever the input, with zero gradient: PyTorch refuses, and so do we, with the same message. A single
# *image* is fine in `BatchNorm2d`: its channels still have $H\cdot W$ values each. In eval mode any batch size works.

# %%
# NBVAL_CHECK_OUTPUT
for layer in (torch.nn.BatchNorm1d(3), bnlab.nn.BatchNorm1d(3)):
    try:
        layer(torch.randn(1, 3))
    except ValueError as error:
        print(f"{type(layer).__module__.split('.')[0]:6s} ValueError: {error}")
print("one 4x4 image in BatchNorm2d, training:", tuple(bnlab.nn.BatchNorm2d(3)(torch.randn(1, 3, 4, 4)).shape))
print("one vector in eval mode:              ", tuple(bnlab.nn.BatchNorm1d(3).eval()(torch.randn(1, 3)).shape))

# %% [markdown]
# **`torch.func` and in-place buffers.** `torch.func`'s transforms (`vmap`, `grad`, `jacrev`, used for per-example
# gradients and ensembles) treat a function as pure; a training-mode batch norm updates its running statistics in
# place, which they reject. The remedies: evaluate in eval mode, build the layer with `track_running_stats=False`,
# or call `torch.func.replace_all_batch_norm_modules_(model)`, which does the latter for every layer of a model.

# %%
# NBVAL_CHECK_OUTPUT
net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
params = dict(net.named_parameters())
loss = lambda p, x: torch.func.functional_call(net, p, (x,)).square().sum()  # noqa: E731
batch = torch.randn(8, 3, generator=generator)
try:
    torch.func.grad(loss)(params, batch)
except RuntimeError as error:
    print("training mode:", "rejected, in-place update" if "in-place" in str(error) else str(error)[:80])
torch.func.replace_all_batch_norm_modules_(net)
print("after replace_all_batch_norm_modules_:", sorted(torch.func.grad(loss)(params, batch)))

# %% [markdown]
# ## Speed: Python closed form vs the C++ kernel
#
# `bnlab.nn.batch_norm` is a handful of tensor operations per pass; PyTorch's kernel is compiled C++. Measured
# live, float32 forward + backward, one thread (`benchmarks/bench_nn_batchnorm.py` measures more carefully):

# %%
for shape in [(256, 1024), (64, 64, 32, 32)]:
    plots.plot_timings(time_torch_batch_norms(shape, repeats=5, rounds=2), shape)

# %% [markdown]
# **What to notice.** A few well-chosen tensor operations come within a small factor of hand-written C++: on
# large batches the time is set by how many times the data crosses memory, not by the language.
#
# ## Summary
#
# - A `torch.autograd.Function` lets you supply the closed-form backward; `gradcheck` in float64 verifies it.
# - A module is a drop-in only if constructor, parameters, buffers, state dict keys, modes and errors all match;
#   test the claim over a sequence of train and eval steps, with momentum 0.1 and `None`.
# - 2-D batch norm is 1-D batch norm over $N\cdot H\cdot W$ rows with channels last: permute before you flatten.
# - Training mode refuses one value per channel; `torch.func` refuses in-place running-statistic updates.
#
# ## Questions
#
# 1. `BatchNormFunction.backward` is marked `once_differentiable`. What would you need to save, or recompute, to
#    support double backward (e.g. for a gradient penalty)?
# 2. Why does a single $1\times 1$ image fail in `BatchNorm2d` but a single $4\times 4$ image not? What do the
#    statistics of that $4\times 4$ image describe?
# 3. After `replace_all_batch_norm_modules_`, what does the network use at evaluation time?
#
# Next: [Lecture 7 — experiment: depth](07_depth.ipynb).
