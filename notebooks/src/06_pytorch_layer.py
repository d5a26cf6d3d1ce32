# %% [markdown]
# # Lecture 6 — Batch norm in PyTorch
#
# **Learning goals.** After this lecture you can
# 1. write batch norm as a `torch.autograd.Function` with lecture 4's closed-form backward, and check it against
#    finite differences and against `torch.nn.functional.batch_norm`;
# 2. count what a backward keeps in memory: the `Function`, autograd's trace, PyTorch's fused kernel;
# 3. read `bnlab.nn`'s drop-in modules for `torch.nn.BatchNorm1d/2d` and test the "drop-in" claim;
# 4. explain the 2-D case (statistics per channel over batch *and* positions) and the reshape mistake it invites;
# 5. recognise two sharp edges: the batch-of-one error (and the counter it leaves behind), and `torch.func` on a
#    layer that updates its running statistics in place;
# 6. count the memory passes of plain tensor code and measure its time, and the fused kernel's, against a copy of
#    the batch, separating what the operations cost from what autograd adds;
# 7. use the convention sheet: modes, $m$, the stored variance, $\epsilon$, momentum and three flags of
#    `torch.nn.BatchNorm`, in PyTorch, Keras, CS231n, d2l and the paper.
#
# **Prerequisites.** Lectures 4 (closed form) and 5 (running statistics); `torch.autograd` basics.
#
# **Practise it.** [Exercise 4: `BatchNormFunction` and `BatchNorm2d`](../exercises/ex4_torch_layer.ipynb).
#
# **How numbers are printed**: as in lecture 4, a checked line shows a value and, in brackets, the bound it must
# stay under; rounding-level errors print as an order of magnitude ("below 1e-14", "< 1e-13"). Timings are never
# checked: they depend on the machine.

# %%
import textwrap

import torch
import torch.nn.functional as F
from IPython.display import Markdown
from torch.autograd.function import once_differentiable

import bnlab.nn
import bnlab.notebook
from bnlab.conformance import channel_batch, compare_modules
from bnlab.gradcheck import rel_error
from bnlab.lessons.pytorch import (batch_sized_traffic, convention_sheet, jacobian_error, saved_tensors,
                                   time_against_copy_study)
from bnlab.plots.speed import plot_pass_equivalents
from bnlab.report import error_text, within

bnlab.notebook.setup()
generator = torch.Generator().manual_seed(0)

# %% [markdown]
# ## Batch norm as an `autograd.Function`
#
# Autograd can differentiate a batch norm written in tensor operations by itself: it records every operation and
# keeps what each one's backward needs (lecture 3's staged graph). A `torch.autograd.Function` replaces that
# record by one node with a hand-written `backward`. Per channel, with $m$ values, $s=\sqrt{\sigma^2+\epsilon}$
# and $\delta = \partial L/\partial y$, lecture 4 derived
#
# $$
# \frac{\partial L}{\partial x} = \frac{\gamma}{m\,s}\Big(m\,\delta - \sum\delta - \hat x\sum\delta\hat x\Big),
# \qquad \frac{\partial L}{\partial\gamma} = \sum\delta\hat x, \qquad \frac{\partial L}{\partial\beta} = \sum\delta .
# $$
#
# The backward needs $\hat x$ (batch-sized), $1/s$ and $\gamma$ (one value per channel), so that is all the
# forward saves. The sums run over every dimension but the channel dimension 1: over $N$ for an $(N, C)$ batch,
# over $N$, $H$ and $W$ for $(N, C, H, W)$. Here it is, training mode, for both:

# %%
class BatchNorm(torch.autograd.Function):
    """Training-mode batch norm of x (N, C, ...) with the closed-form backward of lecture 4."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        dims = [0] + list(range(2, x.dim()))             # every dimension but the channels
        shape = [1, -1] + [1] * (x.dim() - 2)            # (C,) -> (1, C, 1, ...) to broadcast over x
        mu = x.mean(dims, keepdim=True)                  # batch mean
        xc = x - mu
        var = xc.square().mean(dims, keepdim=True)       # biased variance: divide by m
        inv = torch.rsqrt(var + eps)                     # 1 / s
        xhat = xc * inv
        ctx.save_for_backward(xhat, inv, gamma)          # one batch-sized tensor, two per-channel ones
        return xhat * gamma.view(shape) + beta.view(shape)

    @staticmethod
    @once_differentiable                                 # backward's own ops are not differentiated again
    def backward(ctx, dy):
        xhat, inv, gamma = ctx.saved_tensors
        dims = [0] + list(range(2, dy.dim()))
        shape = [1, -1] + [1] * (dy.dim() - 2)
        m = dy.numel() // dy.shape[1]                    # values per channel: N, or N*H*W
        dbeta = dy.sum(dims)                             # sum of delta
        dgamma = (dy * xhat).sum(dims)                   # sum of delta * xhat
        scale = gamma.view(shape) * inv                  # gamma / s
        dx = scale / m * (m * dy - dbeta.view(shape) - xhat * dgamma.view(shape))
        return dx, dgamma, dbeta, None                   # one gradient per forward input (none for eps)


def batch_norm_function(x, gamma, beta, eps=1e-5):
    return BatchNorm.apply(x, gamma, beta, eps)

# %% [markdown]
# ### Is the backward right? A gradient check that prints a number
#
# `torch.autograd.gradcheck` compares the Jacobian built from `backward` with finite differences of `forward`,
# in float64, and raises if they differ by more than its tolerance. To see the size of the difference, compute
# both Jacobians yourself: `torch.autograd.functional.jacobian` builds the analytic one from `backward`, and
# central differences $\big(f(x+h e_i) - f(x-h e_i)\big)/2h$ the numerical one. The inputs have channels with
# different means and scales, $\gamma$ and $\beta$ are not 1 and 0, and the check covers $x$, $\gamma$ and
# $\beta$ of a 4-D batch.
#
# **Predict, then run.** A central difference errs by $O(h^2)$. If the backward is right, what happens to the
# largest error when $h$ shrinks tenfold? As a control, the same check runs on a classic mistake: a backward that
# treats the batch mean and variance as constants, $\partial L/\partial x = (\gamma/s)\,\delta$ (right in eval
# mode, wrong in training). What happens to *its* error?

# %%
class ConstantStatistics(BatchNorm):
    """The same forward; the backward of a classic mistake (no gradient through the mean and the variance)."""

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        xhat, inv, gamma = ctx.saved_tensors
        dims, shape = [0] + list(range(2, dy.dim())), [1, -1] + [1] * (dy.dim() - 2)
        return dy * gamma.view(shape) * inv, (dy * xhat).sum(dims), dy.sum(dims), None

# %%
# NBVAL_CHECK_OUTPUT
x = channel_batch((6, 3, 2, 2), generator)
gamma = torch.rand(3, dtype=torch.float64, generator=generator) + 0.5
beta = torch.randn(3, dtype=torch.float64, generator=generator)
for sample in (x, x[:, :, 0, 0]):      # raises if the analytic and numerical Jacobians disagree
    torch.autograd.gradcheck(batch_norm_function, [t.clone().requires_grad_() for t in (sample, gamma, beta)])
print("torch.autograd.gradcheck (float64) on (6, 3, 2, 2) and (6, 3): no error raised")
print("max |analytic - numerical| over the Jacobian entries for x, gamma and beta:")
for h in (1e-2, 1e-3, 1e-4):
    right = jacobian_error(batch_norm_function, (x, gamma, beta), step=h)
    wrong = jacobian_error(lambda x, g, b: ConstantStatistics.apply(x, g, b, 1e-5), (x, gamma, beta), step=h)
    print(f"  h = {h:.0e}:  BatchNorm {within(right, 1e-5)}   ConstantStatistics {within(wrong, 1e-5)}")

# %% [markdown]
# The right backward's error falls a hundredfold for each tenfold smaller step: what remains is the finite
# difference's own truncation error. The mistake's error stays put, whatever $h$. For much smaller steps the
# rounding in $f(x\pm h e_i)$, of order (machine epsilon)$/h$, takes over (try $h = 10^{-6}$); float32's epsilon is
# about $5\cdot 10^{8}$ times float64's, which is why gradient checks run in float64.
#
# A gradient check compares `backward` with `forward` only: a forward and backward that agree on a wrong
# convention pass it (lecture 3). So compare with PyTorch's own kernel too, with a random upstream gradient.
#
# **Eval mode needs no `Function`.** With running statistics $\hat\mu$, $\hat\sigma^2$ the layer is a fixed
# affine map per channel, $y = \gamma\,(x-\hat\mu)/\sqrt{\hat\sigma^2+\epsilon} + \beta$, and autograd's trace of
# it already is the closed form: $\partial L/\partial x = (\gamma/s)\,\delta$, nothing flows through the
# statistics. `batch_norm_eval` below is those four lines; the table's last row compares it with
# `F.batch_norm(..., training=False)`.

# %%
# NBVAL_CHECK_OUTPUT
def batch_norm_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    shape = [1, -1] + [1] * (x.dim() - 2)
    scale = gamma * torch.rsqrt(running_var + eps)                   # gamma / s, per channel
    return (x - running_mean.view(shape)) * scale.view(shape) + beta.view(shape)


def torch_reference(function, *inputs, upstream):
    """Outputs and gradients of function(*inputs) for the upstream gradient, as numpy arrays."""
    leaves = [t.clone().requires_grad_() for t in inputs]
    out = function(*leaves)
    return [out.detach().numpy()] + [g.numpy() for g in torch.autograd.grad(out, leaves, upstream)]


def print_errors(label, ours, theirs):
    print(f"{label:36s}" + "".join(f"{error_text(rel_error(a, b)):>14s}"
                                   for a, b in zip(ours, theirs)))


print(f"{'max rel. error vs F.batch_norm':36s}" + "".join(f"{name:>14s}" for name in ("out", "dx", "dgamma",
                                                                                       "dbeta")) + "  (< 1e-12)")
for shape in [(16, 3), (8, 3, 5, 5)]:
    x = channel_batch(shape, generator)
    upstream = torch.randn(shape, dtype=torch.float64, generator=generator)
    ours = torch_reference(batch_norm_function, x, gamma, beta, upstream=upstream)
    theirs = torch_reference(lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True), x, gamma, beta,
                             upstream=upstream)
    print_errors(f"training mode, {shape}", ours, theirs)

running_mean = torch.randn(3, dtype=torch.float64, generator=generator)
running_var = torch.rand(3, dtype=torch.float64, generator=generator) + 0.5
ours = torch_reference(lambda x, g, b: batch_norm_eval(x, g, b, running_mean, running_var), x, gamma, beta,
                       upstream=upstream)
theirs = torch_reference(lambda x, g, b: F.batch_norm(x, running_mean, running_var, g, b, training=False),
                         x, gamma, beta, upstream=upstream)
print_errors(f"eval mode, {tuple(x.shape)}", ours, theirs)

# %% [markdown]
# ## Memory: what the backward keeps
#
# Between the forward and the backward, every tensor a graph node saved stays in memory; in a deep network that,
# summed over layers, is the training memory. Three ways to run the same training forward:
#
# 1. **autograd's trace** of plain tensor operations (below: mean, sub, square, mean, add, rsqrt, mul, mul, add),
#    each node saving what its own backward needs;
# 2. **our `Function`**, saving $\hat x$, $1/s$ and $\gamma$;
# 3. **PyTorch's fused kernel** `F.batch_norm`, which saves its input $x$ and recomputes $\hat x$ from $x$, the
#    mean and $1/s$ in its backward.
#
# `torch.autograd.graph.saved_tensors_hooks` lets you watch: its pack hook is called with every tensor saved for
# backward. `bnlab.lessons.pytorch.saved_tensors` records each one's storage, counts tensors that share a
# storage once, and sums the bytes.
#
# **Predict, then run.** For a float32 batch of shape (64, 64, 32, 32), 16 MiB, how many MiB does each of the
# three keep? Go through the nine operations of the trace and ask which inputs or outputs each backward needs.

# %%
def batch_norm_autograd(x, gamma, beta, eps=1e-5):
    """The same training forward in plain tensor operations; autograd records it and derives the backward."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    xc = x - x.mean(dims, keepdim=True)
    xhat = xc * torch.rsqrt(xc.square().mean(dims, keepdim=True) + eps)
    return xhat * gamma.view(shape) + beta.view(shape)

# %%
# NBVAL_CHECK_OUTPUT
images = torch.randn(64, 64, 32, 32, generator=generator).requires_grad_()
weight = (torch.rand(64, generator=generator) + 0.5).requires_grad_()
bias = torch.randn(64, generator=generator).requires_grad_()
print(f"input x: {tuple(images.shape)} float32, {images.numel() * 4 / 2**20:.1f} MiB")
for name, function in [("autograd's trace of tensor ops", batch_norm_autograd),
                       ("our autograd.Function", batch_norm_function),
                       ("F.batch_norm (fused kernel)", lambda x, g, b: F.batch_norm(x, None, None, g, b,
                                                                                      training=True))]:
    kept = saved_tensors(function, images, weight, bias)
    print(f"{name:31s} keeps {len(kept.shapes)} tensors ({kept.batch_sized} batch-sized): "
          f"{kept.total_bytes:>10,d} bytes = {kept.mib:5.2f} MiB = {kept.times_input:.2f} x the input")

# %% [markdown]
# The trace keeps two batch-sized tensors: $x-\mu$ (saved by `square` and by the multiplication by $1/s$) and
# $\hat x$ (saved by the multiplication by $\gamma$). The `Function` keeps one, $\hat x$. The fused kernel keeps
# one too, $x$ itself: a batch-sized tensor either way, the rest is a few hundred bytes of per-channel values
# ($1/s$, the mean, $\gamma$). So the closed form halves this layer's memory against the trace, and matches the
# fused kernel. Going below one batch-sized tensor per layer takes recovering $\hat x = (y-\beta)/\gamma$ from
# the output the next layer keeps anyway (in-place activated batch norm, Rota Bulò et al. 2018): that needs
# $\gamma \ne 0$ and an invertible activation after the layer (they use a leaky ReLU; a ReLU loses every negative
# value).
#
# ## The library: `bnlab.nn`
#
# `bnlab.nn.batch_norm` is the same `Function`, grown to the signature of `F.batch_norm`: optional $\gamma$ and
# $\beta$, running statistics updated in place in training mode (through `bnlab.running_stats`, lecture 5), and
# an eval branch whose backward is the fixed affine map above. Read it next to the notebook's version:

# %%
bnlab.notebook.show_source(bnlab.nn.BatchNormFunction)

# %% [markdown]
# Its training forward and backward are the notebook's, operation for operation, so on the same inputs they give
# the same bits, not merely close ones:

# %%
# NBVAL_CHECK_OUTPUT
x = channel_batch((8, 3, 5, 5), generator)
upstream = torch.randn(x.shape, dtype=torch.float64, generator=generator)
ours = torch_reference(batch_norm_function, x, gamma, beta, upstream=upstream)
library = torch_reference(lambda x, g, b: bnlab.nn.batch_norm(x, None, None, g, b, training=True), x, gamma,
                          beta, upstream=upstream)
print("largest |notebook - bnlab.nn| over out, dx, dgamma, dbeta:",
      max(abs(a - b).max() for a, b in zip(ours, library)), "(exact: same operations in the same order)")

# %% [markdown]
# ## A drop-in module
#
# PyTorch's modules share one base class that owns the parameters, the buffers, their reset and the momentum
# rule; the subclasses only check the input's number of dimensions; `forward` hands everything to one functional
# call. `bnlab.nn` follows the same design: `forward` checks the arguments once, then `_normalize` makes one call
# of the `BatchNormFunction` above. This is the whole of `BatchNorm2d`, and the base class's `forward`:

# %%
bnlab.notebook.show_source(bnlab.nn.BatchNorm2d)

# %%
bnlab.notebook.show_source(bnlab.nn.BatchNormBase.forward)

# %% [markdown]
# "Drop-in" is a claim to be tested, not asserted. `bnlab.conformance.compare_modules` drives ours and PyTorch's
# through the same sequence (training steps with batches of 8, 3, 16 and 2, eval steps with 5 and with a single
# example), with the same random upstream gradient, and records the largest absolute difference in outputs,
# input gradients, parameter gradients and every buffer after every step. In float64:

# %%
# NBVAL_CHECK_OUTPUT
for momentum in (0.1, None):
    for ours_class, theirs_class, sample in [(bnlab.nn.BatchNorm1d, torch.nn.BatchNorm1d, (4,)),
                                             (bnlab.nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 5, 5))]:
        worst = compare_modules(ours_class(4, momentum=momentum, dtype=torch.float64),
                                theirs_class(4, momentum=momentum, dtype=torch.float64), sample)
        outputs = max(worst[key] for key in ("output", "grad input", "grad weight", "grad bias"))
        buffers = max(worst["running_mean"], worst["running_var"])
        print(f"{theirs_class.__name__}, momentum={str(momentum):4s}  out, grads "
              f"{within(outputs, 1e-10, floor=1e-12)}; running stats {within(buffers, 1e-10, floor=1e-12)}; "
              f"num_batches_tracked differs by {int(worst['num_batches_tracked'])}")

# %% [markdown]
# Outputs and input gradients are of order 1, parameter gradients are sums over up to 400 values (16 examples
# times 25 positions): an absolute difference below $10^{-12}$ is float64 rounding, nothing more.
# `tests/test_conformance.py` runs the same comparison on more shapes.
#
# ## The 2-D case
#
# For an image batch $(N, C, H, W)$ each channel has one $\gamma$, one $\beta$ and one pair of statistics, shared
# over the batch and all $H\cdot W$ positions: $m = N\cdot H\cdot W$, and the layer is a 1-D batch norm over
# $N\cdot H\cdot W$ "examples" with $C$ features. To use a 1-D implementation, move the channels last *before*
# flattening: `permute(0, 2, 3, 1)` turns $(N, C, H, W)$ into $(N, H, W, C)$, and then `reshape(-1, C)` makes each
# row one position of one image, with its $C$ channel values.
#
# **Predict, then run.** Reshaping $(N, C, H, W)$ straight to $(N\cdot H\cdot W, C)$ also gives a tensor of that
# shape and runs without complaint. Does it match `BatchNorm2d`? What ends up in one "column" of it?

# %%
# NBVAL_CHECK_OUTPUT
images = channel_batch((8, 3, 4, 4), generator)
per_channel = F.batch_norm(images, None, None, training=True)              # what BatchNorm2d computes
channels_last = images.permute(0, 2, 3, 1).reshape(-1, 3)                  # (N*H*W, C): right
right = F.batch_norm(channels_last, None, None, training=True).reshape(8, 4, 4, 3).permute(0, 3, 1, 2)
wrong = F.batch_norm(images.reshape(-1, 3), None, None, training=True).reshape(images.shape)
print("channel means of the batch:", ", ".join(f"{v:.2f}" for v in images.mean(dim=(0, 2, 3)).tolist()))
print("permute, then flatten:     max |difference| vs BatchNorm2d", within((right - per_channel).abs().max(), 1e-12))
print(f"flatten without permuting: max |difference| vs BatchNorm2d {(wrong - per_channel).abs().max().item():.2f}"
      f" (output values are of order 1)")

# %% [markdown]
# Row-major reshaping walks through the memory in order: channel 0's 16 positions of image 0, then channel 1's,
# and so on, cut into rows of 3. A "column" of the wrong version mixes all three channels, whose means (first
# line) differ by up to about 3, so its statistics describe no channel. The error is of the size of the outputs
# themselves, and it would vanish if all channels happened to have the same statistics: a test with identically
# distributed channels cannot catch it. `bnlab.mistakes` catalogues it as `reshape_without_moving_channels`, and
# the grader names it when a submission makes it.
#
# ## State dicts
#
# Same parameter and buffer names, shapes and dtypes mean checkpoints move freely between the two
# implementations. Below, a PyTorch layer trained for one step is loaded into ours, and ours into a fresh
# PyTorch layer (float32). Loading copies values, so the round trip is exact; our eval forward rounds in another
# order than torch's kernel, so its outputs may differ in float32's last bits.

# %%
# NBVAL_CHECK_OUTPUT
trained = torch.nn.BatchNorm2d(3)
trained(channel_batch((8, 3, 4, 4), generator, torch.float32))        # one training step
ours, back = bnlab.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
ours.load_state_dict(trained.state_dict())
back.load_state_dict(ours.state_dict())
probe = channel_batch((2, 3, 4, 4), generator, torch.float32)
with torch.no_grad():
    state = max((trained.state_dict()[k] - back.state_dict()[k]).abs().max() for k in trained.state_dict())
    outputs = (ours.eval()(probe) - trained.eval()(probe)).abs().max()
print(f"torch -> bnlab -> torch: max |state difference| {within(state, 1e-12)}; bnlab's eval outputs with "
      f"torch's state: max |difference| {within(outputs, 1e-4, floor=1e-5)}")

# %% [markdown]
# ## Two sharp edges
#
# **A batch of one in training mode.** With one value per channel the batch variance is 0 and the output is
# $\beta$ whatever the input, with zero gradient: PyTorch refuses, and so do we, with the same message. A single
# *image* is fine in `BatchNorm2d` (its channels still have $H\cdot W$ values each), and in eval mode any batch
# size works. The error leaves a trace, though: PyTorch adds 1 to `num_batches_tracked` *before* it checks the
# batch, `bnlab.nn` only for batches it used (a deliberate difference, stated in `bnlab/nn/modules.py`). With
# the default momentum the count is never used; with `momentum=None` it is the weight, $1/k$ for batch $k$. So
# "drop-in" holds for every call that succeeds, not after a caught exception.
#
# **Predict, then run.** A layer with `momentum=None` catches a batch-of-one error, then sees the batch
# $\{1, 2\}$. What is its `running_mean` in PyTorch, and in `bnlab.nn`?

# %%
# NBVAL_CHECK_OUTPUT
for layer in (torch.nn.BatchNorm1d(1, momentum=None), bnlab.nn.BatchNorm1d(1, momentum=None)):
    library = type(layer).__module__.split(".")[0]
    try:
        layer(torch.tensor([[5.0]]))                     # one value per channel: raises
    except ValueError as error:
        print(f"{library:6s} ValueError: {error}")
    counted = int(layer.num_batches_tracked)
    layer(torch.tensor([[1.0], [2.0]]))                  # then a real batch, mean 1.5
    print(f"{library:6s} num_batches_tracked after the error {counted}, after the next batch "
          f"{int(layer.num_batches_tracked)}; running_mean {layer.running_mean.item():.2f}")
print("one 4x4 image in BatchNorm2d, training:", tuple(bnlab.nn.BatchNorm2d(3)(torch.randn(1, 3, 4, 4)).shape))
print("one vector in eval mode:              ", tuple(bnlab.nn.BatchNorm1d(3).eval()(torch.randn(1, 3)).shape))

# %% [markdown]
# **`torch.func` and in-place buffers.** `torch.func`'s transforms (`grad`, `vjp`, `jacrev`, `vmap`, used for
# per-example gradients and ensembles) call your function with tensors of their own. A training-mode batch norm
# updates its running statistics (and `num_batches_tracked`) in place, and the transforms accept that only under
# conditions:
#
# - `grad` (and `vjp`, `jacrev`) refuse to mutate a tensor the function *captured*, such as a module's buffer, but
#   allow mutating one passed in as an input: give the buffers to `torch.func.functional_call` together with the
#   parameters, and the update lands in the tensors you passed;
# - `vmap` refuses a batched input when the running statistics it would update are not batched too;
# - `torch.func.replace_all_batch_norm_modules_(model)` removes the running statistics of every batch norm layer
#   (batch statistics in eval mode too), and then every transform works; so do eval mode and
#   `track_running_stats=False`.
#
# The cell prints the first line of each error PyTorch raises.

# %%
# NBVAL_CHECK_OUTPUT
def first_line(error):
    return textwrap.fill(str(error).splitlines()[0], 108, initial_indent="    ", subsequent_indent="    ")


net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).double()
params = dict(net.named_parameters())
batch = torch.randn(8, 3, dtype=torch.float64, generator=generator)
loss = lambda p, x: torch.func.functional_call(net, p, (x,)).square().sum()  # noqa: E731 (buffers captured)
try:
    torch.func.grad(loss)(params, batch)
except RuntimeError as error:
    print("grad, buffers captured from the module: RuntimeError\n" + first_line(error))

state = {name: b.clone() for name, b in net.named_buffers()}   # the buffers, passed in as inputs
loss_of_state = lambda p, b, x: torch.func.functional_call(net, (p, b), (x,)).square().sum()  # noqa: E731
grads = torch.func.grad(loss_of_state)(params, state, batch)
net.zero_grad()
net(batch).square().sum().backward()
print("grad, buffers passed as inputs: max |grad - loss.backward()|",
      within(max((grads[name] - p.grad).abs().max() for name, p in net.named_parameters()), 1e-12),
      f"| the passed num_batches_tracked is now {int(state['1.num_batches_tracked'])}")

batches = torch.randn(5, 8, 3, dtype=torch.float64, generator=generator)   # five batches of 8
try:
    torch.func.vmap(lambda x: loss_of_state(params, state, x))(batches)
except RuntimeError as error:
    print("vmap over 5 batches, running statistics not batched: RuntimeError\n" + first_line(error))

torch.func.replace_all_batch_norm_modules_(net)
losses = torch.func.vmap(lambda x: loss(params, x))(batches)
one_by_one = torch.stack([loss(params, b) for b in batches])
print(f"after replace_all_batch_norm_modules_ (buffers left: {len(dict(net.named_buffers()))}): vmap gives "
      f"{len(losses)} losses, max |vmap - one batch at a time| {within((losses - one_by_one).abs().max(), 1e-12)}")

# %% [markdown]
# ## Speed: plain tensor code against the fused kernel
#
# Each tensor operation in our `Function` (and so in `bnlab.nn.batch_norm`) reads its batch-sized operands and
# writes a fresh batch-sized result: one pass over memory per operand. A `TorchDispatchMode` sees every operation
# PyTorch runs, so the passes can be counted rather than guessed (`bnlab.lessons.pytorch.batch_sized_traffic`;
# views and bare allocations are not counted).
#
# **Predict, then run.** Count the batch-sized reads and writes in the notebook's `forward` and `backward` above.
# What is the least any implementation could do? (Forward: read $x$ once for both statistics, as Welford's
# one-pass algorithm does without cancellation, read it again to normalize, write $y$. Backward: read $\delta$
# and $x$ for the two sums, read them again for $dx$, write $dx$.)

# %%
# NBVAL_CHECK_OUTPUT
x = torch.randn(128, 100, generator=generator)
w, b = torch.rand(100, generator=generator) + 0.5, torch.randn(100, generator=generator)
for name, function in [("our Function", batch_norm_function),
                       ("bnlab.nn.batch_norm", lambda x, g, b: bnlab.nn.batch_norm(x, None, None, g, b, training=True))]:
    traffic = batch_sized_traffic(function, x, w, b)
    print(f"{name:28s} {traffic.ops:2d} operations, {traffic.reads} reads + {traffic.writes} writes "
          f"= {traffic.accesses} batch-sized passes")
plain_passes = traffic.accesses                         # the same for both
print(textwrap.fill("  per operation (reads+writes): "
                    + ", ".join(f"{op}({r}+{wr})" for op, r, wr in traffic.per_op), 110, subsequent_indent="    "))
traffic = batch_sized_traffic(lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True), x, w, b)
print(f"{'F.batch_norm (fused kernel)':28s} {traffic.ops:2d} operations: {', '.join(traffic.names)}")
print(f"{'least possible':28s}  3 forward + 5 backward = 8 batch-sized passes")

# %% [markdown]
# Per-channel operations (`add` of $\epsilon$, `rsqrt`, $\gamma/s$) read and write nothing batch-sized: they
# cost a call, not a pass. The fused kernel's passes happen inside its two calls, where the dispatcher cannot see
# them; 8 is the least any kernel can make, not a count of what PyTorch's does.
#
# **The control.** Time, in the same run, a copy of the batch into a tensor allocated beforehand: one read and
# one write, so half the copy's time is one pass at the speed this machine streams memory
# (`bnlab.timing.pass_equivalents`, as in lecture 4). Below, each implementation's forward + backward is shown in
# those units, with its counted passes or the floor (PyTorch's kernel, whose passes we cannot see) marked on its
# bar. To separate what the operations cost from what wraps them, the same 19 operations run three ways:
# `bnlab.nn.batch_norm` (argument checks, then the `Function`), the notebook's `Function` (no checks), and its
# `forward` and `backward` called directly under `torch.no_grad()`, with no autograd graph at all. 4-D batches
# also run PyTorch's kernel on the batch stored `channels_last` ($N, H, W, C$ in memory), and every panel times
# one tiny tensor operation, the fixed cost of any call. Three batches: an MLP's (128, 100), 50 KiB; a wide
# layer's (256, 1024), 1 MiB; an image batch (64, 64, 32, 32), 16 MiB. Float32, one thread.

# %%
class Saved:
    """Stands in for ctx when forward and backward are called directly: keeps what forward saves."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


def operations_alone(x, gamma, beta, dy):
    with torch.no_grad():                                # no graph, no autograd engine
        ctx = Saved()
        BatchNorm.forward(ctx, x, gamma, beta, 1e-5)
        return BatchNorm.backward(ctx, dy)


def notebook_function(x, gamma, beta, dy):
    return torch.autograd.grad(batch_norm_function(x, gamma, beta), (x, gamma, beta), dy)


speed = time_against_copy_study(repeats=5, rounds=3, extra={"our Function": notebook_function,
                                                            "its operations alone": operations_alone})
ticks = {name: (plain_passes, "counted") for name in ("bnlab.nn", "our Function", "its operations alone")}
ticks |= {"torch native": (8, "floor"), "torch native, channels_last": (8, "floor")}
plot_pass_equivalents(speed, ticks, "Forward + backward in passes at the copy's speed; ticks: counted passes or the floor",
                      ratios=[("bnlab.nn", "torch native")]);

# %% [markdown]
# **What to notice.** Read each bar against its tick. The ranges below are from 30 runs on the machine the
# course was built on, for bars with no page faults beside them; rerun the cell to see how much yours move.
#
# - **The MLP batch, 50 KiB.** Copying the whole batch takes less time than one tiny tensor operation, so memory
#   is not what costs here: calls are. The 19 operations alone took 26 to 29 tiny operations' worth. Inside our
#   `Function` they took 1.8 to 2.2 times as long: what autograd does around a `Function` (recording the graph
#   node, saving tensors, running the backward through its engine) costs about as much as the operations
#   themselves. `bnlab.nn`'s argument checks added 0 to 18%. PyTorch's two calls took about 20 tiny operations'
#   worth, so `bnlab.nn` / torch native (in the panel's title) came out 2.5 to 3.1, not $19/2 \approx 10$.
# - **The large batches.** The operations alone took 1.3 to 2.0 times their 28 counted passes; inside
#   autograd they took longer. PyTorch's kernel took 3.0 to 4.4 times the floor of 8, on both the 1 MiB batch
#   and the NCHW image batch; the same kernel on the image batch stored `channels_last`, 1.2 to 1.8 times it. So
#   a fused kernel can run near 8 passes, but PyTorch's NCHW kernel does not, and that is why the operations
#   alone were only 1.3 to 1.8 times slower than it on the image batch, not $28/8 = 3.5$ times.
# - **Page faults** (beside the bars) appear mostly on the image batch, where a fresh 16 MiB result may be memory
#   the allocator has just obtained from the system. How many depends on the allocator's state and changes from
#   run to run; `bnlab.nn` and our `Function` make 11 fresh batch-sized results per call and counted up to
#   tens of thousands of faults per call. Faults add time, by an amount that changes from run to run.
#
# Writing the same 19 operations in C++ would remove the call overhead, not the passes: fusing them does. That
# is why the course's experiments train with `torch.nn.BatchNorm1d/2d` and use `bnlab.nn` only where nothing in
# PyTorch does the job, ghost batch norm (lecture 8). `bnlab.nn` is the code you read and test against;
# PyTorch's is the code you train with.
#
# ## Convention sheet
#
# **Training vs eval.** In training mode a layer normalizes with the batch's statistics and, if it tracks them,
# moves its running statistics towards them; in eval mode it normalizes with the running statistics and changes
# nothing. `model.train()` / `model.eval()` switch the mode; nothing else does (not `torch.no_grad()`, although
# d2l's from-scratch layer takes that shortcut and decides by `torch.is_grad_enabled()`).
#
# **$m$, the values per channel.** $(N, C)$: $m = N$. $(N, C, L)$: $m = N\cdot L$. $(N, C, H, W)$:
# $m = N\cdot H\cdot W$, one mean and variance per channel over the batch and all positions.
#
# **The channel axis.** PyTorch (and d2l) keep channels in dimension 1. Keras normalizes over its `axis`
# argument, by default $-1$, the last: Keras image batches are $(N, H, W, C)$. Porting a layer means moving the
# axis, not only the numbers (the 2-D section above shows what a wrong axis does).
#
# **Variance, $\epsilon$, momentum.** Every code *normalizes* a training batch with the biased variance
# $\sigma^2_\mathcal{B}$ (Algorithm 1), $\epsilon$ inside the square root; they differ in what they *store*
# (PyTorch and the paper the unbiased $\frac{m}{m-1}\sigma^2_\mathcal{B}$, the others the biased one), in
# $\epsilon$, and in what momentum means: the weight of the newest batch in PyTorch and d2l, of the old average
# in Keras and CS231n (lecture 5 runs one update in each).
#
# **Freezing.** In PyTorch, freezing $\gamma$ and $\beta$ (`requires_grad_(False)`) and the mode are separate. In
# Keras 3, `trainable=False` on a batch norm layer also puts it in inference mode: its `call()` normalizes with
# the batch statistics, and updates the moving ones, only `if training and self.trainable`, so a frozen layer
# uses its moving statistics even inside `fit()`.
#
# The table is rendered from `bnlab.running_stats.CONVENTIONS`, whose PyTorch and Keras rows
# `tests/test_running_stats.py` checks against the libraries; [lecture 5's table](05_inference.ipynb) cites where
# each rule is written.

# %%
# NBVAL_CHECK_OUTPUT
Markdown(convention_sheet())

# %% [markdown]
# **Three flags of `torch.nn.BatchNorm1d/2d`.** `track_running_stats=False`: no running statistics; batch
# statistics in eval mode too (so eval outputs depend on the batch). `affine=False`: no $\gamma$ and $\beta$ (no
# parameters; the output is $\hat x$). `momentum=None`: the running statistics are the equal-weight average of
# all batches so far (batch $k$ gets weight $1/k$, counted by `num_batches_tracked`; lecture 5 checks it). Run
# after training, on frozen weights, over training batches, that is the paper's Algorithm 2 (precise batch norm,
# `bnlab.nn.recompute_batchnorm_statistics`); left on during training it averages every batch of the
# trajectory, the untrained network's too, which is not Algorithm 2. The first two flags with PyTorch itself,
# and $m$ read back from `running_var`:

# %%
# NBVAL_CHECK_OUTPUT
batch = channel_batch((16, 3), generator)
no_tracking = torch.nn.BatchNorm1d(3, track_running_stats=False, dtype=torch.float64).eval()
print("track_running_stats=False, eval output vs batch statistics: max |difference|",
      within((no_tracking(batch) - F.batch_norm(batch, None, None, training=True)).abs().max(), 1e-12),
      "| state:", list(no_tracking.state_dict()))

plain = torch.nn.BatchNorm1d(3, affine=False)
print("affine=False: parameters", sum(p.numel() for p in plain.parameters()), "| state:", list(plain.state_dict()))

images = channel_batch((8, 3, 4, 4), generator)
layer = torch.nn.BatchNorm2d(3, momentum=1.0, dtype=torch.float64)   # momentum 1: running_var = unbiased var
layer(images)
biased = images.var(dim=(0, 2, 3), unbiased=False)
print("m read back from running_var of an (8, 3, 4, 4) batch:",
      (layer.running_var / (layer.running_var - biased)).round(decimals=3).tolist(), "(N*H*W = 128)")

# %% [markdown]
# ## Summary
#
# - A `torch.autograd.Function` supplies the closed-form backward: its forward saves $\hat x$, $1/s$ and $\gamma$;
#   its backward is lecture 4's formula in four lines. Check it against finite differences (the error shrinks as
#   $h^2$) and against `F.batch_norm` (agreement to float64 rounding), with random upstream gradients.
# - Counted with `saved_tensors_hooks`: autograd's trace of the same forward keeps two batch-sized tensors, the
#   `Function` one ($\hat x$), PyTorch's fused kernel one ($x$).
# - A module is a drop-in only if constructor, parameters, buffers, state-dict keys, modes and errors all match;
#   test the claim over a sequence of training and eval steps, with momentum 0.1 and `None`. `bnlab.nn` raises
#   PyTorch's errors but, unlike PyTorch, does not count a batch that raised in `num_batches_tracked`.
# - 2-D batch norm is 1-D batch norm over $N\cdot H\cdot W$ rows with channels last: permute before you flatten.
# - Training mode refuses one value per channel. `torch.func.grad` refuses to update buffers the function
#   captured but accepts buffers passed to `functional_call`; `vmap` needs them batched, or gone
#   (`replace_all_batch_norm_modules_`).
# - Plain tensor code makes 28 passes over memory in 19 operations per forward + backward; any kernel needs at
#   least 8 passes. Timed against a copy, PyTorch's NCHW kernel sits well above that floor and its channels_last
#   kernel near it; plain code is slower than both, and on small batches per-call overhead (half of it what
#   autograd does around a `Function`), not memory, sets the time. The course trains with PyTorch's layers.
# - Conventions differ in momentum's meaning, the stored variance, $\epsilon$, the initial running variance, the
#   channel axis and what freezing a layer does: read the sheet above before porting a model or a checkpoint.
#
# ## Questions
#
# 1. `BatchNorm.backward` is marked `once_differentiable`, so asking for a second derivative (e.g. for a gradient
#    penalty) raises. Without the mark, PyTorch would record backward's operations, but $\hat x$ and $1/s$, made
#    inside `forward`, would enter them as constants. Which paths would the second derivative miss? What would
#    you need to save, or recompute, to support it?
# 2. PyTorch's kernel saves $x$ where our `Function` saves $\hat x$. Which extra work does its backward do, and
#    when would saving $x$ be free in a real network?
# 3. Why does a single $1\times 1$ image fail in `BatchNorm2d` but a single $4\times 4$ image not? What do the
#    statistics of that $4\times 4$ image describe?
# 4. After `replace_all_batch_norm_modules_`, what does the network use at evaluation time?
# 5. A Keras model trained with `momentum=0.99` and the default `epsilon` is ported to PyTorch. Which momentum
#    and which `eps` do you pass? Which would change the outputs more if you forgot it: $\epsilon$, or the
#    biased moving variance loaded into `running_var` (for a channel of variance 1e-3, and for a batch of 256)?
#
# Next: [Lecture 7 — experiment: depth](07_depth.ipynb).
