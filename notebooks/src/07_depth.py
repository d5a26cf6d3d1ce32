# %% [markdown]
# # Lecture 7 — Experiment: how deep can you go?
#
# **Learning goals.** After this lecture you can
# 1. locate, on a grid of every depth from 2 to 8, where a plain sigmoid, tanh or ReLU MLP stops learning under
#    torch's default initialization, and read the border off each seed rather than off a mean;
# 2. read per-layer pre-activation percentiles and gradient norms and say *why* a deep plain net is stuck
#    (a signal that shrinks layer after layer until the gradient vanishes, or underflows to exactly 0);
# 3. state precisely what batch norm buys here, what it costs (gradients that *grow* backward through the
#    layers), and that a careful initialization (He) buys much of it too;
# 4. measure how alike a layer makes the examples look (rank collapse), see that BN keeps them apart where
#    LayerNorm and plain nets do not, and test with a control whether that is why LayerNorm fails at depth 15;
# 5. drive the depth dashboard, including the settings that diverge or underflow, and tell an effect from
#    seed noise.
#
# **Prerequisites.** Lecture 1 (activations drifting into saturation), lecture 2 (the forward pass), lecture 3
# (the backward pass).
#
# **The setting.** The 4,000/1,000 MNIST subset; MLPs of width 100 with $L$ hidden layers (the normalization,
# when there is one, sits before each nonlinearity); plain SGD with learning rate $\eta = 0.1$, batch 64, 600
# updates; three seeds per setting (each seed draws the weights and the minibatch order). **Varied:** depth,
# activation, normalization, initialization. **Held fixed:** everything else, including $\eta$. Every number
# below is computed by `bnlab.experiments` from runs that ship with the course (depth 2–8, 10, 15, 20 ×
# sigmoid/tanh/ReLU × none/BN/LayerNorm × default/He init), so nothing here trains.

# %%
import numpy as np

import bnlab.notebook
from bnlab.experiments import DepthConfig, depth_sweep, learning_rate_sweep, run
from bnlab.lessons.depth import (backward_growth, depth_border, gradient_ratio, last_layer_similarities,
                                 last_layer_similarity)
from bnlab.lessons.learning_rate import learning_rate_border
from bnlab.plots.depth import plot_depth_runs, plot_depth_sweep
from bnlab.report import bracketed, seed_values
from bnlab.widgets import DepthDashboard

bnlab.notebook.setup()
sweep = depth_sweep(cached_only=True)   # sweep[activation][setting][depth] -> runs over 3 seeds


def runs(**setting):
    """The three seeds of one depth setting, from the shipped results."""
    return run(DepthConfig(**setting), cached_only=True)

# %% [markdown]
# ## Accuracy against depth
#
# Each dot is one seed's test accuracy after 600 updates; the line goes through the seed mean, a diverged seed
# (an x) counted at chance. The dotted line is chance, 0.1 (ten classes).
#
# **What to look for.** Where each grey "no norm" line falls to chance, and how sharply; whether the blue BN
# line falls at all; the red He-init line at depth 15 and 20; the green LayerNorm line.

# %%
plot_depth_sweep(sweep);

# %% [markdown]
# A border is a depth where *every* seed changes side, so we read it per seed: a depth "trains" when every
# seed ends above 0.8, and is "stuck" when every seed ends below 0.2 or diverged.

# %%
# NBVAL_CHECK_OUTPUT
for activation in ("sigmoid", "tanh", "relu"):
    for setting in ("no norm", "no norm, He init", "LayerNorm", "BN"):
        trains, stuck = depth_border(sweep[activation][setting])
        stuck_text = f"from depth {stuck}" if stuck else "at no depth up to 20"
        print(f"{activation:7s} {setting:16s}: every seed trains up to depth {trains}, every seed stuck "
              f"{stuck_text}")
print("ReLU, no norm, per seed: depth 6:", seed_values(sweep["relu"]["no norm"][6]),
      "| 7:", seed_values(sweep["relu"]["no norm"][7]), "| 8:", seed_values(sweep["relu"]["no norm"][8]))
print("sigmoid, no norm, per seed: depth 2:", seed_values(sweep["sigmoid"]["no norm"][2]),
      "| 3:", seed_values(sweep["sigmoid"]["no norm"][3]))

# %% [markdown]
# The borders are sharp and early. Under torch's default init the plain **sigmoid** net is already at chance
# at depth **3** in every seed; **tanh** holds out to depth 8 and is stuck from 15; **ReLU** is fine at
# depth 6 (0.89–0.90), split at 7 (0.34–0.60, a border runs through it) and at chance from 8.
# **Batch norm** trains every depth to 20 with every activation.
# **He init** ($\mathrm{Var}[w] = 2/\mathrm{fan\_in}$) trains the plain ReLU and tanh nets to depth 10 and
# beyond — but not every seed: at depth 15 and 20 one ReLU seed in three diverges (next cell). It does not
# rescue the sigmoid net beyond depth 3: sigmoid's slope, at most $1/4$, shrinks the backward signal whatever
# the weights' scale.

# %%
# NBVAL_CHECK_OUTPUT
for activation in ("sigmoid", "tanh", "relu"):
    depth20 = sweep[activation]["BN"][20]
    print(f"BN, {activation:7s} depth 20: {seed_values(depth20)}; lowest seed "
          f"{bracketed(depth20.final_accuracies().min(), low=0.85)}")
for depth in (10, 15, 20):
    print(f"He init, no norm, ReLU, depth {depth}: {sweep['relu']['no norm, He init'][depth].outcome()}")

# %% [markdown]
# So the honest claim is Ioffe & Szegedy's own (2015, §1): with BN "we can be less careful about
# initialization" — not "deep nets need batch norm".
#
# ## Why the deep plain net is stuck
#
# Torch's default init draws weights uniformly with variance $\frac{1}{3\,\mathrm{fan\_in}}$ and biases with
# variance $\frac{1}{3\,\mathrm{fan\_in}}$ too. Let $q_\ell$ be the second moment of layer $\ell$'s
# pre-activations. A ReLU passes on half of a symmetric signal's second moment, so layer $\ell + 1$ sees
#
# $$q_{\ell+1} = \mathrm{fan\_in}\cdot\mathrm{Var}[w]\cdot\frac{q_\ell}{2} + \mathrm{Var}[b]
#   = \frac{q_\ell}{6} + \frac{1}{300} \qquad (\mathrm{fan\_in} = 100).$$
#
# The input-dependent part of the second moment shrinks 6-fold per layer (its standard deviation
# $\sqrt 6 \approx 2.4$-fold): after ten layers it is $6^{-10} \approx 2\cdot 10^{-8}$ of what it was. What
# is left is the fixed point $q^* = \frac{1/300}{1 - 1/6} = 0.004$, a standard deviation of 0.063 made of
# biases, the same for every image. The backward pass multiplies by the same weights, so the gradient shrinks
# on its way back too. Batch norm divides each layer's pre-activation by its batch standard deviation, so the
# scale of the weights drops out; He init ($\mathrm{Var}[w] = 2/\mathrm{fan\_in}$) picks the scale that makes
# the factor 1.
#
# **What to look for** in the figure (depth 10, ReLU, default init): the grey no-norm net against the same net
# with BN. Bottom row: the 15th–85th percentile band of each hidden layer's pre-activations at initialization
# (filled, measured with batch statistics as the first updates see them) and after training (dashed, in eval
# mode, with the running statistics). Top:
# gradient norm per layer (solid at init, dashed after training) and the similarity of examples, explained in
# the next section.

# %%
plain10, bn10 = runs(depth=10), runs(depth=10, norm="batch")
plot_depth_runs(plain10, "Depth 10, ReLU, default init: no normalization against BN",
                compare={"BN": bn10}, label="no norm");

# %% [markdown]
# **What to notice.** Without BN the band narrows layer after layer to the bias floor, about $\pm 0.07$ (the
# fixed point's $\pm 0.063$); the gradients are $2$–$7\cdot 10^{-4}$ in layers 1–6, rising only towards the
# output; and after 600 updates nothing has changed: the net never left its starting point. With BN the band
# has the same width in every layer.
#
# BN's gradients are *not* "of comparable size" across layers, though: they **grow** going backward. At
# initialization layer 1's gradient is many times the output layer's (next cell). Part of that is layer 1's
# 784-pixel input; the rest is a steady factor per layer, 1.22 with ReLU at every depth we ran. Yang et al.
# (2019, *A mean field theory of batch normalization*) show that this growth at initialization is caused by
# batch norm itself: tuning the init or the activation can reduce it but not remove it (we measure smaller
# factors with tanh and sigmoid), and it is why plain BN nets without skip connections stop being trainable at
# much larger depths. After training (dashed) the spread is smaller. For contrast, the last line of the next
# cell is the plain *sigmoid* net, whose gradient vanishes: its slope is at most $1/4$.

# %%
# NBVAL_CHECK_OUTPUT
print(f"no norm, ReLU, depth 10: layer-1 / output-layer gradient at init "
      f"{bracketed(gradient_ratio(plain10), high=0.05, digits=2)}")
print(f"BN,      ReLU, depth 10: layer-1 / output-layer gradient at init "
      f"{bracketed(gradient_ratio(bn10), 5, 50, digits=3)} "
      f"(layer 1: {bn10.mean('grad_norms_init')[0]:.1f}, output layer: {bn10.mean('grad_norms_init')[-1]:.2f})")
for depth in (10, 15, 20):
    print(f"BN,      ReLU, depth {depth}: growth per layer going backward (layers L..2) "
          f"{bracketed(backward_growth(runs(depth=depth, norm='batch')), 1.1, 1.35, digits=3)}")
print(f"no norm, sigmoid, depth 10: layer-1 / output-layer gradient at init "
      f"{bracketed(gradient_ratio(runs(depth=10, activation='sigmoid')), high=1e-6, digits=2)}")

# %% [markdown]
# ## LayerNorm at depth 15: healthy scales, collapsed directions — and the step size
#
# LayerNorm (Ba et al. 2016) normalizes each example over its own features instead of each feature over the
# batch. At depth 15 with ReLU and $\eta = 0.1$ it keeps every layer's pre-activations standardized and its
# gradients at initialization are of order 1 in every layer — and yet every seed ends at or near chance. Scale
# is not the problem. Is it **direction**?
#
# Measure how alike the examples look to a layer: the mean cosine similarity between the hidden
# representations $h_i$, $h_j$ (after the nonlinearity) of two different test images,
#
# $$\bar c = \frac{1}{N(N-1)} \sum_{i \ne j} \frac{\langle h_i, h_j\rangle}{\lVert h_i\rVert\,\lVert h_j\rVert}.$$
#
# If each pre-activation has mean zero over the examples and is uncorrelated between two examples — what BN's
# centring produces — then after a ReLU $\bar c \approx 1/\pi \approx 0.32$ (question 3; the dotted line in
# the figure). Near 1, every image points the same way and the next layer can barely tell them apart: the
# representation has collapsed towards rank one. A ReLU adds a common, non-negative component to every
# example, and a random layer maps two inputs at cosine $c$ to a larger cosine, so without BN $\bar c$ climbs
# with depth. LayerNorm rescales and shifts **each example on its own**, so two examples that arrive nearly
# parallel leave nearly parallel; batch norm compares examples, and subtracting each feature's batch mean
# removes the component they share. Daneshmand et al. (2020, *Batch normalization provably avoids rank collapse
# for randomly initialised deep networks*) prove that BN avoids this collapse.
#
# **What to look for.** The top-right panel: LayerNorm's similarity climbing layer after layer, BN's flat at
# $1/\pi$; the gradients (top middle) of both at init.

# %%
ln15, bn15, he15 = runs(depth=15, norm="layer"), runs(depth=15, norm="batch"), runs(depth=15, init="he")
plot_depth_runs(ln15, "Depth 15, ReLU, default init, eta = 0.1: LayerNorm against BN", compare={"BN": bn15},
                label="LayerNorm");

# %%
# NBVAL_CHECK_OUTPUT
print(f"LayerNorm, eta 0.1: test accuracy per seed {seed_values(ln15)}; layer-1 gradient at init "
      f"{bracketed(ln15.mean('grad_norms_init')[0], 0.5, 10, digits=2)} (not vanishing)")
print(f"similarity of examples at hidden layer 15, at init: LayerNorm "
      f"{bracketed(last_layer_similarity(ln15), low=0.85, digits=2)}, BN "
      f"{bracketed(last_layer_similarity(bn15), 0.25, 0.4, digits=2)} (1/pi = {1 / np.pi:.2f}), "
      f"no norm with He init {bracketed(last_layer_similarity(he15), low=0.85, digits=2)}")

# %% [markdown]
# BN keeps the examples apart, exactly at $1/\pi$; LayerNorm and the plain He-init net start nearly collapsed.
# But a collapsed start is not fatal by itself: the plain He-init net at the same similarity trains in two
# seeds of three, and the plain ReLU net at depth 6 trains from a similarity above 0.99. The control is the
# step size. The same nets, same seeds, same initialization, trained with $\eta = 0.03$:

# %%
# NBVAL_CHECK_OUTPUT
for label, setting in (("LayerNorm", {"norm": "layer"}), ("no norm, He init", {"init": "he"}),
                       ("BN", {"norm": "batch"})):
    for depth in (15, 20):
        slow = runs(depth=depth, lr=0.03, **setting)
        print(f"{label:16s} depth {depth}: eta 0.1 -> {seed_values(runs(depth=depth, **setting))}; "
              f"eta 0.03 -> {seed_values(slow)}")
after = ", ".join(f"{value:.2f}" for value in last_layer_similarities(ln15, "final"))
print(f"LayerNorm, depth 15, eta 0.1: similarity at layer 15 after training, per seed {after}")

# %% [markdown]
# With a three times smaller step LayerNorm trains at depth 15 (0.88–0.92) and the He-init net trains in every
# seed at depth 15 and 20; at depth 20 LayerNorm is still mostly stuck (0.18–0.39), so depth keeps mattering.
# What fails at $\eta = 0.1$ is the *combination* of depth and step size: in two of the failed LayerNorm runs
# the examples collapse completely during training (similarity 1.00 after training), beyond where they
# started. What BN adds
# here is tolerance of the larger step — lecture 9 measures how much larger — and a start in which the examples
# are kept apart. The similarity at initialization is a warning sign, not the cause on its own.
#
# The plain net's learning-rate border, measured in lecture 9 for the depth-10 ReLU net with He init, puts
# $\eta = 0.1$ in perspective:

# %%
# NBVAL_CHECK_OUTPUT
last_good, first_bad = learning_rate_border(learning_rate_sweep(cached_only=True)["no BN"])
print(f"plain depth-10 ReLU net, He init: every seed trains at lr {last_good:g}, every seed diverges at the next "
      f"grid rate {first_bad:g}; the border is {bracketed(last_good / 0.1, 1, 2, digits=3)} to "
      f"{bracketed(first_bad / 0.1, 3, 4, digits=3)} times the eta = 0.1 used here")

# %% [markdown]
# At depth 10 the plain net's border lies between 1.8 and 3.2 times the $\eta$ used here, and a deeper net is
# more sensitive: the depth-15 He-init seed that diverges at update 4 is a net run close to its limit.
#
# ## Your turn: the dashboard
#
# Move the depth slider and change activation, norm and init. Every setting of the grid answers instantly;
# anything else (depth 9, or a Gaussian init with a standard deviation you choose) greys the figure and says
# "not precomputed": press **Train live**. The first seed is drawn after a few seconds, then all three;
# **Cancel** stops a run, and finished seeds stay cached. **Pin** keeps the current setting and draws it in
# black over the next ones; **Reset** returns here; **Save PNG/SVG** writes the figure to this folder.
#
# Things to try:
# - sigmoid, no norm, depth 2 then 3; then switch on BN.
# - ReLU, no norm, depth 7: compare the three seeds. Then depth 15: default init, He init.
# - Gaussian init, depth 10: std 0.01, 0.1, 0.178, then 0.316 and 1. A diverged run is drawn and named in the
#   title and the status line ("3 of 3 seeds diverged (updates 1, 1, 1)"); update 1 means the *untrained*
#   net's loss on its first minibatch was already above 1,000.
# - Gaussian init, std 0.001, depth 20: the signal shrinks a thousandfold per layer until float32 cannot
#   hold it; layer 1's gradient is exactly 0 (marked v), the others are around $10^{-43}$, and training cannot
#   start.
# - LayerNorm at depth 15 and 20 with each activation: watch the similarity panel.

# %%
dashboard = DepthDashboard()
dashboard

# %% [markdown]
# ## What the papers claim, and what we reproduce
#
# | claim | source | here |
# |---|---|---|
# | BN lets deep saturating (sigmoid) nets train | Ioffe & Szegedy 2015, §3.3, §4.1 | **reproduced**: sigmoid depth 20 trains with BN (0.88–0.91); without, every depth from 3 is at chance |
# | "we can be less careful about initialization" | Ioffe & Szegedy 2015, §1 | **reproduced**: BN trains depth 20 under torch's default init with every activation |
# | careful init alone trains deep ReLU nets | He et al. 2015 | **partly**: He init, no norm, trains every ReLU seed to depth 10; at 15 and 20 one seed in three diverges at $\eta = 0.1$ |
# | BN nets' gradients explode with depth at init | Yang et al. 2019 | **reproduced in kind**: about 1.22× per layer going backward at depth 10, 15 and 20 |
# | BN avoids rank collapse at initialization | Daneshmand et al. 2020 | **reproduced**: cosine similarity of examples at layer 15: BN 0.33 ($\approx 1/\pi$), LayerNorm 0.94, plain He init 0.93 |
# | (bn-facts) LayerNorm fails at depth 15 *because* of that collapse | course reference | **not supported**: at $\eta = 0.03$ LayerNorm trains at depth 15; the failure at 0.1 is depth and step size together |
#
# Caveats: 600 updates on 4,000 digits is a short run; "stuck" means "not learning within this budget at
# $\eta = 0.1$". A smaller learning rate moves the borders of LayerNorm and He init a lot (the control above);
# it cannot rescue the default-init plain nets, whose gradients vanish whatever the step.
#
# ## Summary
#
# - Under torch's default init, plain MLPs lose their signal with depth: sigmoid nets are stuck from depth 3,
#   ReLU nets from depth 8 (with a seed-dependent border at 7), tanh nets hold out longer.
# - Batch norm restandardizes every layer, so depth 20 trains with any activation; its gradients at init grow
#   backward by about 1.2× per layer — large, not vanishing.
# - He init fixes the ReLU net's scale without BN but not the similarity of its examples; at depth 15 it trains
#   in two seeds of three at $\eta = 0.1$ and in all three at 0.03.
# - BN, which compares examples, keeps them apart (similarity $1/\pi$); LayerNorm and plain nets start nearly
#   collapsed at depth 15. That start is a warning sign, not the whole story: LayerNorm fails at
#   $\eta = 0.1$ and trains at 0.03.
#
# ## Questions
#
# 1. Iterate $q_{\ell+1} = q_\ell/6 + 1/300$ from $q_1 = 1$: after how many layers is the pre-activation's
#    standard deviation within 10% of the bias floor 0.063? Check against the percentile panel of depth 8.
# 2. Why does a sigmoid net fail at a smaller depth than a ReLU net under the same init, and why does He init
#    not help it? (Hint: the slope of the sigmoid at 0 is $1/4$.)
# 3. Show that for two independent standard normal vectors $u, v$, $\mathbb{E}\langle \mathrm{relu}(u),
#    \mathrm{relu}(v)\rangle / \mathbb{E}\lVert \mathrm{relu}(u)\rVert^2 = 1/\pi$. Why is that BN's similarity?
# 4. LayerNorm kept working for tanh up to depth 15 but not for ReLU. What does tanh do to the common
#    component that ReLU does not?
# 5. With the dashboard, find the Gaussian init stds at which the plain ReLU net at depth 10 trains. How many
#    slider notches wide is the window between vanishing and divergence, and how does it compare with He
#    init's std for a 100-input layer, $\sqrt{2/100} = 0.14$?
#
# Next: [Lecture 8 — batch size](08_batch_size.ipynb).
