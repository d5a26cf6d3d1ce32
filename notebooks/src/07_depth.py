# %% [markdown]
# # Lecture 7 — Experiment: how deep can you go?
#
# **Learning goals.** After this lecture you can
# 1. predict at which depth a plain sigmoid or ReLU MLP stops learning under torch's default initialization;
# 2. read per-layer pre-activation percentiles and gradient norms and say *why* a deep net is stuck
#    (saturation, vanishing signal, vanishing gradient);
# 3. state precisely what batch norm buys here — and that a careful initialization (He) buys much of it too;
# 4. drive the depth dashboard and tell a real effect from seed noise.
#
# **Prerequisites.** Lecture 1 (activations drifting into saturation), lecture 2 (the forward pass).
#
# **The setting** (the course's reference measurements, bn-facts): the 4,000/1,000 MNIST subset, MLPs of width
# 100 with $L$ hidden layers, plain SGD with learning rate $\eta = 0.1$, batch 64, 600 updates, three seeds
# per setting. Everything below is computed by `bnlab.experiments.depth_experiment`; the runs of the default
# grid (depth 2, 5, 10, 15, 20 × sigmoid/tanh/ReLU × none/BN/LayerNorm × default/He init) ship with the course,
# so nothing here trains unless you ask for a setting outside the grid.

# %%
import numpy as np

import bnlab.notebook
import bnlab.plots as plots
from bnlab.experiments import DepthConfig, depth_experiment, depth_sweep
from bnlab.widgets import DepthDashboard

bnlab.notebook.setup()
sweep = depth_sweep(cached_only=True)   # sweep[activation][setting][depth] -> runs over 3 seeds

# %% [markdown]
# ## Accuracy against depth
#
# Each point is the test accuracy after 600 updates, averaged over three seeds; the band spans the seeds.
# The dotted line is chance (0.1, ten classes).
#
# **What to look for.** Where each "no norm" line falls to chance; whether the BN line falls at all; where the
# "He init" line sits compared with both.

# %%
plots.plot_depth_sweep(sweep);

# %%
# NBVAL_CHECK_OUTPUT
def acc(activation, setting, depth):
    return sweep[activation][setting][depth].scalar("final_accuracy")

print("no norm, sigmoid: trains at depth 2:", acc("sigmoid", "no norm", 2) > 0.8,
      "| stuck near chance at depth 5:", acc("sigmoid", "no norm", 5) < 0.2)
print("no norm, ReLU:    trains at depth 5:", acc("relu", "no norm", 5) > 0.8,
      "| stuck near chance at depth 10:", acc("relu", "no norm", 10) < 0.2)
for activation in ("sigmoid", "tanh", "relu"):
    print(f"BN, {activation:7s} depth 20 test accuracy above 0.85:", acc(activation, "BN", 20) > 0.85)
print("He init, no norm, ReLU depth 10 above 0.85:", acc("relu", "no norm, He init", 10) > 0.85)

# %% [markdown]
# This is the reference result: without normalization, sigmoid nets stop learning from about depth 5 and
# ReLU nets from about depth 10 under torch's default init, while batch norm trains depth 20 with every
# activation. **He init rescues the plain ReLU net** — so the honest claim is Ioffe & Szegedy's own, that with
# BN "we can be less careful about initialization", not "deep nets need batch norm".
#
# ## Why the deep plain net is stuck
#
# Torch's default init draws weights uniformly with variance $\frac{1}{3\,\mathrm{fan\_in}}$. For a ReLU
# layer the second moment of the input-dependent part of the pre-activation is multiplied by about
# $\mathrm{fan\_in}\cdot\mathrm{Var}[w]/2 = 1/6$ per layer, so after ten layers it is $6^{-10} \approx
# 10^{-8}$ of its size at the input: what is left are the biases, the same for every image. The gradient
# shrinks the same way on its way back. He init uses $\mathrm{Var}[w] = 2/\mathrm{fan\_in}$, gain 1 per
# layer. Batch norm re-standardizes every layer whatever the weights' scale. The figure shows the default
# setting of the dashboard below: depth 10, ReLU, default init, no normalization, against the same net with BN.

# %%
default = depth_experiment(DepthConfig(depth=10, activation="relu", norm="none"), cached_only=True)
with_bn = depth_experiment(DepthConfig(depth=10, activation="relu", norm="batch"), cached_only=True)
plots.plot_depth_runs(default, "Depth 10, ReLU, default init, no normalization",
                      compare={"same with BN": with_bn}, label="no norm");

# %% [markdown]
# **What to notice.** At initialization (gray; measured with batch statistics, as the first training steps see
# them) the 15th-85th percentile band of the pre-activations narrows layer after layer to a thin band set by
# the biases. The gradient norms (right, log scale) are a few $10^{-4}$ in the middle layers, and after 600
# updates (orange) nothing has changed — the net never left its starting point. With a sigmoid it is far
# worse: its slope is at most $1/4$, so the gradient reaching layer 1 of a depth-10 sigmoid net is about
# $10^{-8}$ of the output layer's.

# %%
# NBVAL_CHECK_OUTPUT
def spread(runs, key):
    """Width of the 15th-85th percentile band of each hidden layer's pre-activations, seed mean."""
    p = runs.mean(key)
    return p[:, 2] - p[:, 0]

for label, runs in (("no norm", default), ("BN", with_bn)):
    band = spread(runs, "percentiles_init")
    grads = runs.mean("grad_norms_init")
    print(f"{label:8s} smallest hidden-layer gradient at init below 1e-3: {grads[:-1].min() < 1e-3}; "
          f"every layer's band between 1.5 and 2.5: {bool(np.all((band > 1.5) & (band < 2.5)))}")
sigmoid = depth_experiment(DepthConfig(depth=10, activation="sigmoid", norm="none"), cached_only=True)
grads = sigmoid.mean("grad_norms_init")
print("sigmoid, no norm: layer-1 gradient / output-layer gradient below 1e-6:", grads[0] / grads[-1] < 1e-6)

# %% [markdown]
# With BN the percentile band has the same width in every layer and the gradients reach layer 1 at a
# comparable size: every layer learns from the first step.
#
# ## Your turn: the dashboard
#
# Move the depth slider and change activation, norm and init. Settings of the grid (depth 2, 5, 10, 15, 20;
# default or He init) answer instantly from the shipped results. Anything else — depth 7, a Gaussian init
# with the standard deviation you choose — says "not precomputed"; press **Train live** and it trains three
# seeds right here (a few seconds each, with a progress bar), then remembers them in your user cache.
#
# Things to try:
# - sigmoid, no norm: find the last depth that still learns; then switch on BN.
# - ReLU, no norm, depth 15: default init, then He init, then Gaussian init with std 0.01 and 0.3.
# - LayerNorm at depth 20 with each activation: does it do what BN does?

# %%
dashboard = DepthDashboard()
dashboard

# %% [markdown]
# ## What the papers claim, and what we reproduce
#
# | claim | source | here |
# |---|---|---|
# | BN lets deep saturating (sigmoid) nets train | Ioffe & Szegedy 2015, §3.3, §4.1 | **reproduced**: sigmoid depth 20 trains with BN, depth 5 does not without |
# | "we can be less careful about initialization" | Ioffe & Szegedy 2015, §1 | **reproduced**: BN trains depth 20 under torch's default init |
# | careful init alone trains deep ReLU nets | He et al. 2015 | **reproduced**: He init, no norm, depth 10 trains; at depth 20 it is fragile (see the figure) |
# | LayerNorm as a batch-independent alternative | Ba et al. 2016 (proposed for RNNs) | **partly**: it rescues some deep settings but not all; it was not designed for deep MLPs with 600 SGD steps |
#
# Caveats: 600 updates on 4,000 digits is a short run; "stuck" means "not learning within this budget".
# Longer training or a tuned learning rate moves the borders, not the picture.
#
# ## Summary
#
# - Under torch's default init, plain MLPs lose their signal with depth: sigmoid nets stop learning from
#   about depth 5, ReLU nets from about depth 10.
# - Batch norm keeps every layer's pre-activations standardized, so depth 20 trains with any activation.
# - He init ($\mathrm{Var}[w] = 2/\mathrm{fan\_in}$) fixes the ReLU net's scale without BN: BN makes
#   initialization matter less; it is not the only way to train deep nets.
#
# ## Questions
#
# 1. Using the gain per layer ($\approx 1/6$ for default init with ReLU), estimate the size of the depth-15
#    net's last pre-activations. Check against the dashboard's percentile panel.
# 2. Why does a sigmoid net fail at a smaller depth than a ReLU net under the same init? (Hint: the slope of
#    the sigmoid at 0 is $1/4$.)
# 3. BN has a learnable $\gamma$ that could shrink the signal again. Why does training not drive $\gamma$
#    towards the vanishing regime?
# 4. Find a Gaussian init std for which the plain ReLU net at depth 10 *diverges* instead of stalling.
#
# Next: [Lecture 8 — batch size](08_batch_size.ipynb).
