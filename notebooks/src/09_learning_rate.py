# %% [markdown]
# # Lecture 9 — Experiment: learning rate
#
# **Learning goals.** After this lecture you can
# 1. find the largest stable learning rate of a network by a log-scale sweep, and compare it with and without
#    batch norm;
# 2. explain, from the loss after a single step at initialization, why the plain deep net blows up;
# 3. derive that a batch-normalized layer is scale-invariant in its weights, so its effective learning rate is
#    $\eta/\lVert W\rVert^2$;
# 4. explain why weight decay, under BN, acts as a *larger* effective learning rate rather than as regularization.
#
# **Prerequisites.** Lecture 7 (the depth experiment), lecture 4 (the closed-form backward and its invariants).
#
# **The setting.** A depth-10 ReLU MLP of width 100 with He init (so that it trains without BN at all), SGD
# with batch 64 for 600 updates, three seeds, learning rates $10^{k/4}$ from 0.01 to 10. A run "trains" when it
# does not diverge and ends above 0.5 test accuracy; the largest stable learning rate is the largest grid value
# at which all three seeds train.

# %%
import bnlab.notebook
import bnlab.plots as plots
from bnlab.experiments import (
    OneStepConfig,
    learning_rate_sweep,
    max_stable_learning_rate,
    one_step_sweep,
    weight_decay_sweep,
)
from bnlab.widgets import LearningRateDashboard, WeightDecayDashboard

bnlab.notebook.setup()
sweep = learning_rate_sweep(cached_only=True)   # {"no BN": {lr: runs}, "BN": {lr: runs}}
max_stable = {label: max_stable_learning_rate(runs) for label, runs in sweep.items()}

# %% [markdown]
# ## The largest stable learning rate
#
# **What to look for.** Where each line drops to chance (x: a seed diverged), the two dotted verticals, and the
# training-loss curves on the right at the default learning rate 0.1.

# %%
plots.plot_lr_sweep(sweep, selected=0.1, max_stable=max_stable);

# %%
# NBVAL_CHECK_OUTPUT
print(f"largest stable learning rate without BN: {max_stable['no BN']:.2g}")
print(f"largest stable learning rate with BN:    {max_stable['BN']:.2g}")
print("BN's is at least 5x larger:", max_stable["BN"] >= 5 * max_stable["no BN"])
tiny = 0.01
print("at lr 0.01 BN learns more slowly:",
      sweep["BN"][tiny].scalar("final_accuracy") < sweep["no BN"][tiny].scalar("final_accuracy"))

# %% [markdown]
# Without BN training diverges from about $\eta = 0.3$ on (0.32 is the first grid value where every seed
# blows up, so the largest stable one is 0.18); with BN it trains up to about $3$ — **more than ten times
# larger**, as in the reference measurements (0.3 vs 3). Note the other end too: at $\eta = 0.01$ the BN net is
# *slower*. Both ends have one explanation, coming below: what BN changes is the effective step size.
#
# ## One step from initialization
#
# Take one minibatch, compute the loss, take one SGD step on that same minibatch, and compute the loss again.
# A ratio above 1 means the step made things worse — the gradient was not a useful direction at that step
# size (Bjorck et al. 2018). We show two inits of the plain net: He, and a plain Gaussian with std 0.15 in
# every layer (about He's scale for the hidden layers, three times it for the 784-input first layer).

# %%
settings = {
    "no BN, He init": OneStepConfig(norm="none", init="he"),
    "no BN, Gaussian std 0.15": OneStepConfig(norm="none", init="gaussian", init_std=0.15),
    "BN, He init": OneStepConfig(norm="batch", init="he"),
    "BN, Gaussian std 0.15": OneStepConfig(norm="batch", init="gaussian", init_std=0.15),
}
ratios = one_step_sweep(settings, learning_rates=(0.01, 0.03, 0.1, 0.3, 1.0, 3.0))
plots.plot_one_step_ratio(ratios);

# %%
# NBVAL_CHECK_OUTPUT
worst = {label: max(max(r) for lr, r in by_lr.items() if lr <= 1.0) for label, by_lr in ratios.items()}
print("no BN, Gaussian 0.15: a step of lr 1 multiplies the loss by more than 1000:",
      min(ratios["no BN, Gaussian std 0.15"][1.0]) > 1e3)
print("no BN, He init:       a step of lr 1 makes the loss worse:", min(ratios["no BN, He init"][1.0]) > 1)
print("BN, both inits:       every step up to lr 1 keeps the loss below 1.5x:",
      worst["BN, He init"] < 1.5 and worst["BN, Gaussian std 0.15"] < 1.5)

# %% [markdown]
# Without BN, the loss after one step explodes at large learning rates — by orders of magnitude with the
# Gaussian init; with BN it stays near 1 at every learning rate up to 1. The size of the blow-up depends
# strongly on the init (He's is much milder than the reference's $2\cdot 10^7$ at $\eta = 1$, which we get
# only with the plain Gaussian init): the stable claim is the contrast, not a number.
#
# ## Why: scale invariance and the effective learning rate
#
# A layer $u \mapsto \mathrm{BN}(Wu)$ does not care about the scale of $W$: for any $a > 0$,
# $\mathrm{BN}(aWu) = \mathrm{BN}(Wu)$, because the mean and standard deviation scale with $a$ too.
# Differentiating $L(aW) = L(W)$ gives two facts:
#
# $$\nabla L(aW) = \tfrac{1}{a}\,\nabla L(W), \qquad \langle W, \nabla L(W)\rangle = 0 .$$
#
# So the gradient is orthogonal to $W$ (an SGD step can only *grow* $\lVert W\rVert$), and the step changes the
# *direction* of $W$ by about $\eta\,\lVert\nabla L\rVert/\lVert W\rVert \propto \eta/\lVert W\rVert^2$. That
# is the **effective learning rate**. Too large an $\eta$ grows $\lVert W\rVert$ until the effective step is
# small again — BN stabilizes itself, which is why it tolerates $\eta = 3$. A tiny $\eta$ stays tiny, which is
# why BN is slower at $\eta = 0.01$. Weight decay pulls $\lVert W\rVert$ down and so *raises* the effective
# learning rate.

# %%
decay = weight_decay_sweep(cached_only=True)   # {weight_decay: runs}, 3x100 ReLU + BN, 3,000 updates
plots.plot_weight_decay(decay, selected=0.005);

# %%
# NBVAL_CHECK_OUTPUT
def hidden_norm(runs, record):
    return runs.mean("weight_norm")[record].mean()

def effective_lr(runs):
    return runs.mean("effective_lr")[-1].mean()

print("without weight decay ||W|| grows during training:", hidden_norm(decay[0.0], -1) > hidden_norm(decay[0.0], 0))
print("with weight decay 5e-3 ||W|| ends below its start:", hidden_norm(decay[0.005], -1) < hidden_norm(decay[0.005], 0))
print("effective lr at the end, weight decay 5e-3 over none, more than 5x:",
      effective_lr(decay[0.005]) / effective_lr(decay[0.0]) > 5)

# %% [markdown]
# ## Your turn: the dashboards
#
# The learning-rate slider is log-scale; its grid positions ($10^{k/4}$) are precomputed. Find the learning
# rate where each net stops training, and watch the loss curves on the right.

# %%
lr_dashboard = LearningRateDashboard()
lr_dashboard

# %% [markdown]
# The weight-decay slider: 0, 5e-4, 2e-3 and 5e-3 are precomputed; the others train live (3,000 updates per
# seed, so allow half a minute).

# %%
wd_dashboard = WeightDecayDashboard()
wd_dashboard

# %% [markdown]
# ## What the papers claim, and what we reproduce
#
# | claim | source | here |
# |---|---|---|
# | BN allows much higher learning rates (BN-x5, BN-x30 on Inception) | Ioffe & Szegedy 2015, §4.2 | **reproduced**: 10-20× larger stable $\eta$ on a depth-10 MLP (reference: 0.3 vs 3). The paper's ImageNet speed-ups came with other recipe changes (no dropout, less L2, faster decay): never attribute them to BN alone |
# | without BN, large-$\eta$ steps blow up the loss at initialization; with BN they do not | Bjorck et al. 2018 | **reproduced in kind**; the size depends on init (ours: up to ~$10^3$ with He, ~$10^9$ with Gaussian 0.15, vs the reference's $2\cdot10^7$) |
# | BN makes layers scale-invariant; weight decay then raises the effective learning rate $\eta/\lVert W\rVert^2$ | van Laarhoven 2017; Zhang et al. 2019 | **reproduced**: $\lVert W\rVert$ grows without decay and shrinks with it (5.8 → 2.2 at 5e-3); the effective rate ends about 10× larger (reference: ~13×) |
#
# ## Summary
#
# - A log-scale sweep finds the largest stable learning rate; BN raises it about tenfold here.
# - Under BN a layer's output ignores the scale of its weights; the gradient shrinks as $1/\lVert W\rVert$ and
#   is orthogonal to $W$, so the effective learning rate is $\eta/\lVert W\rVert^2$.
# - That self-correction explains both BN's tolerance of large $\eta$ and its slowness at tiny $\eta$; weight
#   decay under BN mostly acts as a learning-rate schedule.
#
# ## Questions
#
# 1. Show that $\langle W, \nabla L(W)\rangle = 0$ follows from $L(aW) = L(W)$ (differentiate in $a$ at $a = 1$).
# 2. With $\langle W, \nabla L\rangle = 0$, show that an SGD step without weight decay can only increase
#    $\lVert W\rVert$. By how much, to second order in $\eta$?
# 3. The output layer has no BN after it. Is it scale-invariant? What does weight decay do there?
# 4. The largest stable learning rate is found on a grid four points per decade. How would you locate it more
#    precisely, and how many seeds would you need before trusting a factor of 2?
#
# Next: lecture 10 (planned) — the paper's figure 1, reproduced.
