# %% [markdown]
# # Lecture 9 — Experiment: learning rate
#
# **Learning goals.** After this lecture you can
# 1. locate the largest stable learning rate of a network on a log grid, state it as an interval, and compare
#    two such borders by a ratio with its bracket;
# 2. use the loss after one step from initialization as a cheap probe of that border, and say how far it
#    predicts it for a plain and a batch-normalized net;
# 3. derive from batch norm's scale invariance that a unit's gradient is orthogonal to its weights, that plain
#    SGD can only grow a unit's weight norm, and that the unit's effective learning rate is
#    $\eta/\lVert w\rVert^2$; read all three off measured runs, and say what a control with the norms held
#    fixed shows about the claim that this growth is what lets BN train at large rates;
# 4. tell the two ways training fails when the step is too large (the plain net's loss blows up within a few
#    updates; the BN net's last hidden layer dies and the loss stalls at $\ln 10$), and explain the second;
# 5. say what weight decay does to the weight norms and effective learning rates of a BN net, and what these
#    runs cannot tell about why it helps.
#
# **Prerequisites.** Lecture 4 (the two invariants of the backward; its section on the Jacobian already derives
# the weight invariance used here) and lecture 7 (the plain deep ReLU net with He init, and how a border is read
# off every seed).
#
# **The setting.** The 4,000/1,000 MNIST subset; an MLP of 10 hidden layers of 100 ReLU units with He init
# (lecture 7: the plain net then trains at depth 10), with or without batch norm before each ReLU (no bias before
# a BN, which would cancel it); plain SGD, no momentum, no weight decay, batch 64, 600 updates; three seeds per
# setting (each seed draws the weights and the minibatch order). **Varied:** the learning rate $\eta$ over the
# grid $10^{k/4}$, thirteen rates from 0.01 to 10 (four per decade, so each rate is $1.78\times$ the one before),
# and BN or not. **Held fixed:** everything else. A run *trains* when it does not diverge (its training loss
# stays finite and below 1,000) and ends above 0.5 test accuracy; a rate is *stable* when every seed trains.
# Every run of the sweeps ships with the course. The notebook computes only short things itself (the one-step
# probe below, about 3 s; twenty updates of twelve runs replayed, about 1 s) and trains one control of 600
# updates (three seeds, about 6 s). In every figure the plain net is red and the BN net blue.

# %%
import numpy as np

import bnlab.notebook
from bnlab.experiments import (
    GRID_LEARNING_RATES,
    OneStepConfig,
    learning_rate_sweep,
    one_step_sweep,
    weight_decay_sweep,
)
from bnlab.lessons.learning_rate import (
    border_ratio,
    dead_below_last,
    divergence_updates,
    effective_lr_at_end,
    first_updates,
    fixed_norm_runs,
    gradient_scale_ratios,
    gradient_weight_cosines,
    largest_normalized,
    last_layer_dead,
    layer_effective_lr,
    layer_norms,
    learning_rate_border,
    median_unit_norm,
    norm_drift,
    norm_growth,
    one_step_crossing,
    one_step_separation,
    weight_decay_effective_lr,
)
from bnlab.plots.learning_rate import (
    plot_dead_units,
    plot_effective_lr,
    plot_lr_sweep,
    plot_one_step_ratio,
    plot_weight_decay,
)
from bnlab.report import bracketed, each_within, within
from bnlab.widgets import LearningRateDashboard, WeightDecayDashboard

bnlab.notebook.setup()
sweep = learning_rate_sweep(cached_only=True)   # {"no BN": {lr: runs}, "BN": {lr: runs}}, 3 seeds per rate
plain, bn = sweep["no BN"], sweep["BN"]
borders = {label: learning_rate_border(by_lr) for label, by_lr in sweep.items()}  # (last stable, next rate)

# %% [markdown]
# ## The largest stable learning rate
#
# **What to look for.** Left: where each net's accuracy drops to chance (an x is a seed that diverged, drawn at
# chance), and the dotted verticals at each net's largest stable rate. Middle and right: one rate, $\eta = 3.16$,
# BN's largest stable one: the plain net's three seeds are gone within a few updates; the BN net's loss falls,
# and its *effective* learning rate (right, explained below) drops within the first 50 updates.

# %%
plot_lr_sweep(sweep, selected=3.162, max_stable={label: border[0] for label, border in borders.items()});

# %%
# NBVAL_CHECK_OUTPUT
for label, by_lr in sweep.items():
    last, following = borders[label]
    after = by_lr[following]
    outcome = after.outcome() if after.num_diverged() else each_within(after.final_accuracies(), high=0.5, digits=3)
    print(f"{label:5s}: every seed trains up to lr {last:.3g}; at {following:.3g}: {outcome}")
ratio, lowest, highest = border_ratio(plain, bn)
print(f"largest stable rate, BN over no BN: {ratio:.3g} on the grid; the true borders' ratio lies in "
      f"({lowest:.3g}, {highest:.3g})")
at = divergence_updates(plain)
print(f"no BN: {at.size} runs diverged (every seed of every rate from {borders['no BN'][1]:.3g} on), at update "
      f"{at.min():.0f} to {at.max():.0f} (latest: {bracketed(at.max(), high=5, digits=1)})")

# %% [markdown]
# Each border is an interval, not a number: the plain net's lies in $[0.178, 0.316)$ and BN's in
# $[3.16, 5.62)$, because the grid has nothing in between. The ratio of the grid rates is therefore only the
# grid's; the true ratio can be anything from $3.16/0.316$ to $5.62/0.178$, the bracket printed with it. "BN
# tolerates a learning rate ten to thirty times larger" is what these runs can say; locating either border more
# finely takes more rates (the dashboard below trains any rate between the grid points).
#
# The two nets fail differently. The plain net *diverges*: its loss passes 1,000 or overflows within two to
# four updates, at every rate from 0.316 up. The BN net never diverges at any rate; at 5.62 and 10 it simply
# stops learning (the next cells explain why).
#
# At the other end, $\eta = 0.01$, the BN net is the *slower* one:

# %%
# NBVAL_CHECK_OUTPUT
tiny = 0.01
print(f"lr {tiny}, test accuracy after 600 updates:")
print(f"  BN    {each_within(bn[tiny].final_accuracies(), high=0.88, digits=3)}")
print(f"  no BN {each_within(plain[tiny].final_accuracies(), low=0.88, digits=3)}")

# %% [markdown]
# Why BN is slower here, and what lets it survive rates ten to thirty times larger, are the next sections' subject;
# we first look at a cheaper signal of the border.
#
# ## One step from initialization
#
# Take the sweep's very first update: the same weights and the same first minibatch of 64 as each seed's run.
# Compute the minibatch loss, take one SGD step of size $\eta$ on it, and compute the loss on the same
# minibatch again. Their ratio is below 1 when the step helped. For a smooth loss whose curvature along the
# step is at most $\lambda$ (with $g$ the gradient),
#
# $$ L(\theta - \eta g) \le L(\theta) - \eta\lVert g\rVert^2 + \tfrac{\lambda}{2}\eta^2\lVert g\rVert^2 ,$$
#
# so a step shorter than $2/\lambda$ cannot make the loss worse; a ratio above 1 says that $\eta$ is beyond
# what the local curvature allows. Bjorck et al. (2018, Sec. 3) use this measurement to show that the
# unnormalized net's loss explodes after a single large step while the BN net's does not. The computation is
# one forward and backward per rate and seed (about 3 s for both nets, all thirteen rates, three seeds).
#
# **What to look for.** Where each line crosses 1 (dotted), and where that is relative to the shaded interval
# holding the same net's stability border.

# %%
ratios = one_step_sweep({"no BN": OneStepConfig(norm="none", init="he"),
                         "BN": OneStepConfig(norm="batch", init="he")}, learning_rates=GRID_LEARNING_RATES)
plot_one_step_ratio(ratios, borders=borders);

# %%
# NBVAL_CHECK_OUTPUT
for label in ("no BN", "BN"):
    below, above = one_step_crossing(ratios[label])
    trained, failed = one_step_separation(ratios[label], sweep[label])
    print(f"{label:5s}: loss after / before at lr {below:.3g}: {each_within(ratios[label][below], high=1)}; "
          f"at {above:.3g}: {each_within(ratios[label][above], low=1)}")
    print(f"       largest ratio at a rate that trains {trained:.3g}, smallest at a rate that fails {failed:.3g}: "
          f"factor {bracketed(failed / trained, low=1, digits=2)}")

# %% [markdown]
# What to notice:
#
# - **The plain net.** The ratio passes 1 between 0.1 and 0.178, one grid step below its stability border:
#   0.178 still trains (with a ratio just above 1), and at 0.316, where the first step already multiplies the
#   loss by 2.9 to 6.2, every seed diverges at update 3 or 4. Nothing in the plain net shrinks the steps that
#   follow a bad one.
# - **The BN net.** Up to $\eta = 1$ one step never makes the loss worse (the ratio stays between 0.77 and
#   0.98), which fits Santurkar et al.'s (2018, Sec. 3.1) finding that the loss changes less along a gradient
#   step with BN than without. We measured one step on one minibatch, not their smoothness constants. But the
#   ratio passes 1 between 1 and 1.78, *two* grid steps below BN's border: at 1.78 and 3.16 the first step makes
#   the loss worse (by up to 2.0x at 3.16) and every seed trains anyway.
# - **For both nets**, the smallest ratio at a rate that fails is above the largest at a rate that trains, but
#   for BN the gap is narrow. The probe at initialization cannot see what happens in the next updates, and the
#   BN net changes fast: its weights grow and its hidden units' steps shrink (next section; a control there
#   shows that this is not what keeps it training at 3.16).
#
# ## Why: scale invariance and the effective learning rate
#
# Take one hidden unit of the BN net: its pre-activations over a minibatch are $z_n = w\cdot u_n$ ($w$ its
# weight vector, $u_n$ the layer's input for example $n$), and BN normalizes them over the minibatch. Scaling
# $w$ by $a > 0$ scales $z$, its mean and its standard deviation by $a$, so the normalized value, and with it
# the loss, do not change (up to $\epsilon$; Ioffe & Szegedy 2015, Sec. 3.3):
#
# $$ L(a w) = L(w) \quad\text{for every } a > 0 . $$
#
# Differentiating in $w$ gives $a\,\nabla L(aw) = \nabla L(w)$, and differentiating in $a$ at $a = 1$ gives
# $\langle w, \nabla L(w)\rangle = 0$:
#
# $$ \nabla L(a w) = \frac{1}{a}\,\nabla L(w), \qquad \langle w, \nabla L(w)\rangle = 0 . $$
#
# Lecture 4 (section "The Jacobian") showed the second from the backward, and it takes both of that lecture's
# invariants. The gradient is $\nabla L(w) = \sum_n (\partial L/\partial z_n)\,u_n$, so
# $\langle w, \nabla L(w)\rangle = \sum_n z_n\,\partial L/\partial z_n$; writing $z_n = s\hat x_n + \mu$ ($\mu$ and
# $s$ the minibatch mean and standard deviation of $z$),
#
# $$ \langle w, \nabla L(w)\rangle = \mu\sum_n \frac{\partial L}{\partial z_n}
#    + s\sum_n \hat x_n\,\frac{\partial L}{\partial z_n} , $$
#
# where the first sum is exactly 0 (the first invariant) and the second is 0 up to a term of order $\epsilon$
# (the second). Three consequences for a plain SGD step $w' = w - \eta g$, $g = \nabla L(w)$:
#
# 1. **The weight norm can only grow.** By Pythagoras, $\lVert w'\rVert^2 = \lVert w\rVert^2 + \eta^2\lVert g\rVert^2$.
# 2. **What the step changes is the direction**, by an angle of about $\eta\lVert g\rVert/\lVert w\rVert$. Write
#    $\tilde g$ for the gradient at the unit vector $w/\lVert w\rVert$; then $g = \tilde g/\lVert w\rVert$ and the
#    angle is $\eta\lVert\tilde g\rVert/\lVert w\rVert^2$: the unit moves as if its learning rate were
#    $\eta_{\text{eff}} = \eta/\lVert w\rVert^2$, the **effective learning rate** (van Laarhoven 2017).
# 3. **A large $\eta$ tunes itself down.** With $g = \tilde g/\lVert w\rVert$, consequence 1 reads
#    $\lVert w'\rVert^2 = \lVert w\rVert^2 + \eta^2\lVert\tilde g\rVert^2/\lVert w\rVert^2$. Squaring,
#    $\lVert w'\rVert^4 \ge \lVert w\rVert^4 + 2\eta^2\lVert\tilde g\rVert^2$, and after $T$ steps
#
#    $$ \eta_{\text{eff}} = \frac{\eta}{\lVert w_T\rVert^2}
#       \le \frac{\eta}{\sqrt{\lVert w_0\rVert^4 + 2\eta^2\sum_{t<T}\lVert\tilde g_t\rVert^2}}
#       \le \frac{1}{\sqrt{2\sum_{t<T}\lVert\tilde g_t\rVert^2}} , $$
#
#    a bound in which $\eta$ no longer appears explicitly; it still depends on $\eta$ through the gradients
#    $\tilde g_t$, which are taken along a trajectory that $\eta$ chose. A step too large for the current norm
#    makes the norm grow, which shrinks the next steps; a tiny $\eta$ barely moves the norm, and the effective
#    rate stays $\eta/\lVert w_0\rVert^2$. This is Arora, Li & Lyu's (2019) "auto rate-tuning". It protects
#    only the scale-invariant weights: BN's $\gamma$ and $\beta$ and the output layer take steps of the full
#    $\eta$.
#
# None of this holds without BN. The two identities, measured on one minibatch at initialization (1,000 hidden
# units, three seeds; units with a zero gradient left out), with the plain net as the control: the cosine of
# the angle between each unit's weights and its gradient, and how much each unit's gradient changes when its
# layer's weights are doubled (one layer at a time, computed in float64; $1/2$ if the gradient shrinks as
# $1/\lVert w\rVert$):

# %%
# NBVAL_CHECK_OUTPUT
cosines = {label: [gradient_weight_cosines(norm, seed) for seed in (0, 1, 2)]
           for label, norm in (("BN", "batch"), ("no BN", "none"))}
print(f"BN:    largest |cos(w, grad)| over all units and seeds {within(max(c.max() for c in cosines['BN']), 1e-4)}")
medians = [np.median(c) for c in cosines["no BN"]]
print(f"no BN: median |cos(w, grad)| per seed {each_within(medians, low=0.01, digits=3)}")
ratios_2w = {label: [gradient_scale_ratios(norm, seed) for seed in (0, 1, 2)]
             for label, norm in (("BN", "batch"), ("no BN", "none"))}
print("||grad|| with the layer's weights doubled / before, median per seed:")
print(f"  BN:    {each_within([np.median(r) for r in ratios_2w['BN']], 0.49, 0.51, digits=4)}; units within "
      f"1e-4 of 1/2: {each_within([np.sum(np.abs(r - 0.5) < 1e-4) for r in ratios_2w['BN']], low=850, digits=0)} "
      f"of 1000")
print(f"  no BN: {each_within([np.median(r) for r in ratios_2w['no BN']], 1.0, 1.5)}")

# %% [markdown]
# The BN cosines are $\epsilon$-sized, as lecture 4's formula says; the plain net's are not small. Doubling a
# layer halves its units' gradients with BN; without BN it changes what the net computes, and the gradients
# mostly grow. In one layer of one BN seed most units are off, by up to 1%: doubling the layer changes
# $\epsilon$'s small share in the normalization, and that pushes one ReLU input, which sat about $10^{-7}$ from
# zero, across the kink. The identity holds up to $\epsilon$, and a ReLU can turn a tiny change into a
# visible one.
#
# **What to look for.** The BN runs at five rates, one shade per rate; layer 1 (784 inputs) dashed, the mean of
# layers 2–10 solid. Left and middle: how far each unit's weight norm grows from He init's $\sqrt 2$, and the
# effective rate that implies. Right: the effective rate after 600 updates against $\eta$ for all thirteen rates,
# with the dotted line $\eta/2$, what it would be if no norm grew.

# %%
plot_effective_lr(bn, shown=(0.01, 0.1, 1.0, 3.162, 10.0));

# %%
# NBVAL_CHECK_OUTPUT
print(f"median unit norm at init (He: sqrt 2 = 1.414): {bracketed(median_unit_norm(bn[tiny], record=0), 1.38, 1.45)}")
print(f"lr {tiny}, after 600 updates, layers 1-10: {each_within(layer_norms(bn[tiny]), 1.38, 1.45)}")
print(f"lr {tiny}, layer 1's effective rate after 600 updates: "
      f"{bracketed(effective_lr_at_end({tiny: bn[tiny]})[tiny], 0.004, 0.006)}")
double = 0.01778                                 # the grid rate closest to twice 0.01
deeper = effective_lr_at_end({double: bn[double]}, layers=slice(1, None))[double]
print(f"BN at lr {double:.3g}: effective rate of layers 2-10 after 600 updates {bracketed(deeper, 0.008, 0.0095, 2)}; "
      f"test accuracy {each_within(bn[double].final_accuracies(), low=0.88, digits=3)}")
border = borders["BN"][0]
early, late = layer_norms(bn[border], record=1), layer_norms(bn[border])
print(f"lr {border:.3g}, after  50 updates: layer 1 {bracketed(early[0], 4, 6)}; layers 2-10 "
      f"{each_within(early[1:], 1.5, 2.5)}")
print(f"lr {border:.3g}, after 600 updates: layer 1 {bracketed(late[0], 4, 6)}; layers 2-10 "
      f"{each_within(late[1:], 1.5, 3)}")
print(f"lr {border:.3g}: layer 1's effective rate fell in the first 50 updates by a factor "
      f"{bracketed(norm_growth(bn[border]), 8, 16)}")
print(f"lr {border:.3g}, effective rate after 50 updates, layers 2-10: "
      f"{each_within(layer_effective_lr(bn[border], border, record=1)[1:], 0.5, 1.3)}")
start = layer_effective_lr(bn[1.778], 1.778, record=0)
print(f"lr 1.78, effective rate at init, layers 1-10: {each_within(start, 0.85, 0.95)}")
print(f"lr 10, layer 1 after 50 updates: {bracketed(layer_norms(bn[10.0], record=1)[0], 12, 17)}")
large = {lr: runs for lr, runs in bn.items() if 0.5 < lr < 4}
ends = effective_lr_at_end(large)
print(f"layer 1's effective rate after 600 updates, lr {min(ends):.3g} to {max(ends):.3g}: "
      + ", ".join(f"{ends[lr]:.2f}" for lr in sorted(ends))
      + f"; largest over smallest {bracketed(max(ends.values()) / min(ends.values()), high=2, digits=2)}")

# %% [markdown]
# What to notice:
#
# - **$\eta = 0.01$: BN is slow, and its norms are the likely reason.** Each update adds
#   $\eta^2\lVert g\rVert^2 \approx 10^{-4}\lVert g\rVert^2$ to $\lVert w\rVert^2$, so every layer's norm stays
#   within 1.40–1.43, and a hidden unit turns as if its rate were about $0.01/2 = 0.005$ for all 600 updates.
#   If that halving is what holds BN back, BN at about twice the rate should catch up with the plain net at
#   0.01. The grid's nearest rate, 0.0178 (effective about 0.009), does: BN ends at 0.89–0.91 there, the plain
#   net's range at 0.01 (printed in the first section). This is consistent with the halving but does not
#   isolate it: raising $\eta$ also enlarges the steps of $\gamma$, $\beta$ and the output layer, which are not
#   scale-invariant (question 2 asks for the control that would isolate it). The plain net serves here only as
#   an accuracy to catch up with: its units are not scale-invariant, so "effective rate" means nothing for it.
# - **$\eta = 3.16$: the norms grow, but that does not explain why it trains.** Layer 1 grows from 1.41 to 4.81
#   within 50 updates, so its effective rate falls about twelvefold. The deeper layers grow less (2.27 falling
#   to 1.60 from layer 2 to 10), and their effective rates after 50 updates are 0.6–1.2: all above what
#   $\eta = 1$ starts with (0.5), six of the nine above the 0.89 with which $\eta = 1.78$ starts, where one
#   step already makes the loss worse. The control below tests the growth directly.
# - **Auto rate-tuning, measured.** Right panel: at small $\eta$ the effective rates lie on $\eta/2$. From about
#   $\eta = 0.3$ on, layer 1's (dashed) bends away and then stays between 0.11 and 0.17 while $\eta$ grows
#   5.6-fold from 0.56 to 3.16: consistent with the bound above, which caps the effective rate by a quantity in
#   which $\eta$ does not appear explicitly. Between $\eta = 1$ and 3.16 it even falls, from 0.17 to 0.11; the
#   bound allows that but does not predict it. Layers 2–10 grow less, and their effective rates still rise
#   with $\eta$ up to BN's border. (At 5.62 and 10, shaded, the net has stopped learning: next section. At 10
#   layer 1's norm jumps to about 15 within 50 updates and then stays.)
#
# **The control: norms held fixed.** Train the BN net at $\eta = 3.16$ again, same seeds, weights and
# minibatches, but before every forward rescale each hidden unit's weight vector to its norm at initialization.
# For a BN unit this changes nothing the net computes; it only keeps every hidden unit's effective rate at
# $3.16/\lVert w_0\rVert^2 \approx 1.6$ for all 600 updates, where the shipped runs let it fall. If the growth
# is what lets BN train at 3.16, this run should fail.

# %%
# NBVAL_CHECK_OUTPUT
held = fixed_norm_runs(border)   # three seeds of 600 updates, trained now (about 6 s)
print(f"lr {border:.3g}, norms held fixed:  test accuracy {each_within(held.final_accuracies(), low=0.5, digits=3)}; "
      f"last hidden layer dead {each_within(last_layer_dead(held), 0.4, 0.85)}")
print(f"lr {border:.3g}, shipped (norms grow): test accuracy "
      f"{each_within(bn[border].final_accuracies(), low=0.5, digits=3)}")
print(f"control: largest relative change of a layer's median unit norm from init, any record: "
      f"{within(norm_drift(held), 1e-5)}")

# %% [markdown]
# Every seed still trains with the norms held fixed, less well: each seed's accuracy is lower, by 0.07 to 0.19,
# and more of its last hidden layer dies (the shipped runs' dead fractions are printed in the next section).
# So at this depth and in 600 updates the growth of the norms helps, but it is not what lets BN train at a rate
# where the plain net diverges. What these runs suggest instead: with BN a step changes what the net computes
# only through the *directions* of the hidden units' weight vectors and through $\gamma$, $\beta$ and the
# output layer, and each layer's normalized output has mean 0 and variance 1 over the minibatch whatever the
# step did. A bad step makes the loss worse (the one-step ratio of up to 2.0 at 3.16), but it cannot make the
# activations grow from layer to layer, one way a plain net's loss can blow up (as it did from 0.316 on). BN's
# border is then set by what normalization does not protect, $\gamma$ and $\beta$.
#
# ## How BN fails past its border: a dead last layer
#
# At $\eta = 5.62$ and 10 the BN net does not diverge; its training loss settles near $\ln 10 = 2.30$, the loss
# of a net that predicts every class with probability $1/10$. A step on the scale-invariant weights can
# only turn them; BN's shift $\beta$ and scale $\gamma$ take steps of the full $\eta$ on what the layer outputs.
#
# A unit of the last hidden layer outputs $\mathrm{relu}(\gamma\hat x_n + \beta)$, where the normalized input
# $\hat x_n$ has mean 0 and variance 1 over the minibatch, whatever the layers below do. Normalized values of
# $m$ examples can never exceed $\sqrt{m-1}$ in size (equality when all but one are equal), so if
#
# $$ \beta + \lvert\gamma\rvert\,\sqrt{m-1} \le 0 , \qquad \sqrt{63} \approx 7.9 \text{ here}, $$
#
# the unit's ReLU input is $\le 0$ for every example of every minibatch: it outputs 0, its gradient (for
# $w$, $\gamma$ and $\beta$) is exactly 0, and nothing will ever change it again. The bound is far from typical:
# if a unit's pre-activations were normally distributed, the largest of 64 normalized values would be about 2.4
# (printed below), so a unit with $\beta$ below about $-3\lvert\gamma\rvert$ would be dead on almost every
# minibatch. When the *whole* last hidden layer is dead, the output layer sees the same input
# (zeros) for every image; it can then only learn the class frequencies, which for ten balanced classes gives
# the loss $\ln 10$ and the accuracy of a constant guess, 0.1.
#
# The first 20 updates of the shipped runs, replayed (same seeds, same minibatches; about 1 s), show it
# happen; the last panel reads the end of the shipped runs.
#
# **What to look for.** Left: the fraction of the last hidden layer's units whose ReLU input is $\le 0$ for the
# whole minibatch of each update. Middle: the median $\beta$ of that layer. Right: each seed after 600 updates.

# %%
replayed = {lr: first_updates(lr, updates=20) for lr in (1.778, 3.162, 5.623, 10.0)}
plot_dead_units(list(replayed.values()), {lr: bn[lr] for lr in replayed});

# %%
# NBVAL_CHECK_OUTPUT
typical, low, high = largest_normalized(m=64)
print(f"largest of 64 normalized normal values: mean {bracketed(typical, 2.2, 2.5)}, 90% of minibatches between "
      f"{low:.2f} and {high:.2f}; bound sqrt(63) = {np.sqrt(63):.2f}")
calm, huge = replayed[1.778], replayed[10.0]
print("last hidden layer after 20 updates (per seed)")
print(f"  lr 1.78: dead on the minibatch {each_within(calm.dead[:, -1], high=0.05)}; "
      f"median beta {each_within(calm.beta[:, -1], -0.5, 0.0)}")
print(f"  lr 10:   dead on the minibatch {each_within(huge.dead[:, -1], low=0.7)}; "
      f"median beta {each_within(huge.beta[:, -1], high=-1.0)}")
print(f"           dead for any minibatch (beta + |gamma| sqrt 63 <= 0) {each_within(huge.bound_dead[:, -1], low=0.1)}")
print("shipped runs after 600 updates: fraction of the last hidden layer dead on all 1,000 test images")
brackets = {1.778: (None, 0.05), 3.162: (0.3, 0.6), 5.623: (0.95, None), 10.0: (0.95, None)}
for lr, (low, high) in brackets.items():
    print(f"  lr {lr:5.3g}: {each_within(last_layer_dead(bn[lr]), low, high)}")
print(f"training loss over the last 50 updates (ln 10 = {np.log(10):.3f}): lr 5.62 "
      f"{each_within(bn[5.623].values('train_loss')[:, -1], 1.5, 2.5)}; lr 10 "
      f"{each_within(bn[10.0].values('train_loss')[:, -1], 2.2, 2.5)}")
print(f"test accuracy at lr 10: {each_within(bn[10.0].final_accuracies(), high=0.15, digits=3)}")
print(f"lr 10, the most-dead layer below the last, per seed: {each_within(dead_below_last(bn[10.0]), 0.2, 0.6)}")

# %% [markdown]
# What to notice:
#
# - At $\eta = 10$ the first two updates move the median $\beta$ from 0 to between $-0.9$ and $-2.2$; on the
#   third update about half of the last layer is dead on its minibatch, from the fourth on three quarters or
#   more. At 1.78 $\beta$ moves by a quarter at most in 20 updates and no unit dies.
# - A unit that a step pushes the other way keeps its gradient. A unit dead *for certain* (the bound above)
#   never gets a gradient again, so that fraction can only grow; after 20 updates at $\eta = 10$ it is a fifth
#   to a third of the layer. The others are dead on most minibatches (left panel) and so learn on few. After
#   600 updates 98–100% of the last layer is dead at 5.62 and 10, 38–56% at 3.16 (which still trains, to
#   0.85–0.93), none at 1.78.
# - With (nearly) nothing passed on, the loss stays at 1.8–2.4: at 10 a little above $\ln 10$ in every seed, at
#   5.62 lower in the two seeds that kept 2% of the layer alive.
#
# The other layers lose units too at these rates (at $\eta = 10$ the worst of them, per seed, a quarter to 57%
# of its units), but once the last layer is dead, nothing below it matters. Why the last layer goes first
# these runs do not say (question 5).
#
# ## Weight decay under batch norm
#
# SGD's `weight_decay` $\lambda$ adds $\lambda w$ to every gradient: $w' = (1-\eta\lambda)\,w - \eta g$. With
# $g \perp w$ for a BN unit,
#
# $$ \lVert w'\rVert^2 = (1-\eta\lambda)^2\,\lVert w\rVert^2 + \eta^2\lVert g\rVert^2 : $$
#
# decay shrinks the norm, the gradient grows it. For a scale-invariant unit a smaller norm changes nothing in
# the function the net computes; it only raises the effective rate $\eta/\lVert w\rVert^2$ (van Laarhoven
# 2017; Zhang et al. 2019). These runs: 3 hidden layers of 100 ReLU units with BN, torch's default init (a
# unit's norm starts at $1/\sqrt 3 = 0.577$), $\eta = 0.1$, batch 64, 3,000 updates, three seeds, four decays.
#
# **What to look for.** The median unit's norm (mean of layers 2 and 3; layer 1, with its 784 inputs, moves
# the same way), the effective rate it implies, and the test accuracy, one shade per decay.

# %%
decay = weight_decay_sweep(cached_only=True)   # {weight_decay: runs}
plot_weight_decay(decay, selected=0.005);

# %%
# NBVAL_CHECK_OUTPUT
print(f"median unit norm at init, layers 2-3: {bracketed(median_unit_norm(decay[0.0], record=0), 0.55, 0.6)}")
norm_brackets = {0.0: (0.55, 0.65), 5e-4: (0.45, 0.55), 2e-3: (0.28, 0.38), 5e-3: (0.14, 0.22)}   # brackets
for wd, (low, high) in norm_brackets.items():
    print(f"after 3,000 updates, decay {wd:<6g}: {bracketed(median_unit_norm(decay[wd]), low, high, digits=2)}")
none, strong = (weight_decay_effective_lr(decay[wd]) for wd in (0.0, 0.005))
print(f"effective rate at the end: decay 0 {none:.2f}, decay 0.005 {strong:.2f}; "
      f"ratio {bracketed(strong / none, 8, 16)}")
print(f"test accuracy: decay 0     {each_within(decay[0.0].final_accuracies(), 0.93, 0.97, digits=3)}")
print(f"               decay 0.005 {each_within(decay[0.005].final_accuracies(), 0.93, 0.97, digits=3)}")

# %% [markdown]
# What to notice:
#
# - Without decay the norm barely grows at $\eta = 0.1$ (0.58 to 0.59): the gradient's push is small. Every
#   decay pulls it down, and at 0.005 it is still falling after 3,000 updates: no equilibrium yet.
# - The effective rate rises accordingly, twelvefold at the end between decay 0 and 0.005, and still rising.
# - The test accuracy does not follow: the seeds at decay 0.005 spread over the same range as those at 0.
#
# What these runs do **not** show. It is often said that under BN, weight decay works as a learning-rate
# schedule rather than as a regularizer (Li & Arora 2020 prove that, for a net whose parameters are all
# scale-invariant, SGD with decay and a fixed $\eta$ is equivalent to SGD without decay and an $\eta$ that grows
# exponentially). Testing that
# needs a control these runs lack: the same effective-rate trajectory produced without decay (a rising $\eta$,
# no $\lambda$), compared with decay itself. And SGD's `weight_decay` also decays the output layer, which is not
# scale-invariant (there it does regularize, in the classical sense), and BN's $\gamma$ and $\beta$, which
# changes what the net computes. With accuracy flat within seed spread, the data here say only: decay shrinks
# the hidden weights and raises their effective rate; it did not change test accuracy in 3,000 updates.
#
# ## Your turn: the dashboards
#
# The learning-rate dashboard has four controls. **learning rate** is a log slider with eight positions per
# decade: every other one is a grid rate (cached, instant); the ones between are "not precomputed" and
# **Train live** trains them (three seeds, about 5–15 s per net at depth 10); a rate you have trained joins the
# sweep's points. **nets** shows both, or one. **depth** and **init** (He or torch's default) change the net;
# only depth 10 with He init is cached, so at any other setting every rate is a live run. **Pin** keeps the
# current setting's accuracy curves drawn in black under the next (the pinned plain net dashed with squares,
# the pinned BN net dotted with circles); **Reset** returns to the lecture's default. The status line gives,
# for each net shown, each seed's outcome at the selected rate, for BN also the fraction of its last hidden
# layer that is dead in each seed, and, once at least three rates are shown, the largest stable one among them.
#
# Things to try:
# - Narrow the plain net's border: train the position between 0.178 and 0.316 (0.237). Before you run it,
#   read the one-step figure at that rate: will all three seeds train?
# - Do the same for BN between 3.16 and 5.62 (4.22): does every seed train, and how much of the last hidden
#   layer dies in each (the status line)? Compare with 3.16 and 5.62 in the section on the dead last layer.
# - Depth 3, both nets: does the plain net's border move, and BN's? Pin depth 10 first to compare. Nothing is
#   cached at depth 3, so each rate you try trains live (a few seconds for both nets). Bisect rather than
#   scan: start at 0.1 and 3.16, then halve the interval in log scale. Bracketing both borders to one slider
#   step still takes about a dozen runs.
# - torch's default init at depth 10 (live too, 5–15 s per rate and net): lecture 7 found the plain ReLU net
#   stuck near chance from depth 8 at $\eta = 0.1$. Is there any rate at which it trains? For BN the init's
#   scale does not change the function, but it changes the norms: a unit starts at $\lVert w\rVert = 0.577$
#   instead of 1.41, so every effective rate starts six times larger. If the effective rate set BN's border, the
#   border would move down about sixfold; if $\gamma$ and $\beta$ set it (the control above and the next
#   section), it would move much less, since their gradients do not depend on the weights' scale. Predict,
#   then look.

# %%
lr_dashboard = LearningRateDashboard()
lr_dashboard

# %% [markdown]
# The weight-decay dashboard: 0, 5e-4, 2e-3 and 5e-3 are cached; 1e-4, 1e-3 and 1e-2 train live (3,000 updates
# per seed, so allow half a minute). Try 1e-2: does the norm reach an equilibrium, where decay and gradient
# balance, within 3,000 updates, and does the accuracy move?

# %%
wd_dashboard = WeightDecayDashboard()
wd_dashboard

# %% [markdown]
# ## What the papers claim, and what we reproduce
#
# | claim | source | here |
# |---|---|---|
# | BN allows much higher learning rates (Inception: BN-x5, BN-x30) | Ioffe & Szegedy 2015, Sec. 3.3, 4.2 | **reproduced**: the ratio of largest stable rates printed above, with its grid bracket. The paper's ImageNet speed-ups came with other recipe changes (no dropout, less L2, faster decay): never attribute them to BN alone |
# | without BN, one large step from initialization makes the loss explode; with BN it does not | Bjorck et al. 2018, Sec. 3 | **reproduced**: at 0.316 one step multiplies the plain net's loss by 2.9–6.2 and every seed diverges; BN's ratio stays below 1 up to $\eta = 1$. The one-step ratio passes 1 one grid step below the plain net's border, two below BN's |
# | BN makes the loss change less along a gradient step (smoother landscape) | Santurkar et al. 2018, Sec. 3.1 | **partly**: consistent with the one-step ratios; their smoothness measures were not computed |
# | BN makes each unit scale-invariant; its gradient is orthogonal to its weights and shrinks as $1/\lVert w\rVert$ | Ioffe & Szegedy 2015, Sec. 3.3; van Laarhoven 2017 | **reproduced**: $\lvert\cos(w, g)\rvert$ below $10^{-5}$ with BN, median 0.04–0.05 without; doubling a layer's weights halves its units' gradients with BN (median ratio 0.5000 in every seed), not without (median 1.09–1.37) |
# | scale-invariant weights tune their own effective rate $\eta/\lVert w\rVert^2$ | Arora, Li & Lyu 2019 | **reproduced for layer 1** (effective rate 0.11–0.17 while $\eta$ spans 0.56–3.16, consistent with the bound); **partly** for layers 2–10 (still rising with $\eta$). **Not** what lets BN train at $\eta = 3.16$ here: with the norms held fixed every seed still trains, less well |
# | a BN unit's effective rate $\eta/\lVert w\rVert^2 = \eta/2$ makes BN slower than the plain net at small $\eta$ | this lecture, from van Laarhoven 2017 | **partly**: at about twice the rate (0.0178) BN matches the plain net at 0.01; that control also enlarges the steps of $\gamma$, $\beta$ and the output layer, so it does not isolate the effective rate |
# | weight decay under BN raises the effective learning rate | van Laarhoven 2017; Zhang et al. 2019 | **reproduced**: twelvefold at the end with decay 0.005 |
# | under BN, weight decay acts as a learning-rate schedule rather than a regularizer | Li & Arora 2020; Zhang et al. 2019 | **not tested**: no control separates the two, and test accuracy is flat across decays |
#
# Caveats: 600 updates (3,000 for weight decay) on 4,000 digits, three seeds, one architecture. The borders
# are grid intervals; a longer run or momentum would move them.
#
# ## Summary
#
# - On a log grid the largest stable learning rate is an interval. For the depth-10 ReLU net it is
#   $[0.178, 0.316)$ without BN and $[3.16, 5.62)$ with BN: BN tolerates a rate ten to thirty times larger
#   (the bracket of the ratio above).
# - The plain net fails by diverging within two to four updates; the loss after one step from initialization
#   already signals it (above 1 from 0.178, 2.9 or more from 0.316).
# - BN makes each hidden unit's output independent of its weight scale. Then the gradient is orthogonal to
#   $w$, SGD can only grow $\lVert w\rVert$, and the unit's effective learning rate is $\eta/\lVert w\rVert^2$.
#   A large $\eta$ grows the norms (layer 1: from 1.41 to 4.81 in 50 updates at 3.16), which shrinks the steps;
#   a tiny $\eta$ leaves them at 1.41, and BN trains more slowly than the plain net until its rate is about
#   doubled.
# - The growth is not what lets BN train at 3.16: with every unit's norm held at its initial value, every seed
#   still trains there, less well. What normalization protects, these runs suggest, is the forward: a step can
#   turn the weight vectors but cannot make the layers' outputs grow from layer to layer.
# - What normalization does not protect, BN's $\gamma$ and $\beta$, sets BN's own border: past it the last
#   hidden layer dies and the loss stalls at about $\ln 10$.
# - Weight decay under BN shrinks the hidden weights and raises their effective rate; in these runs it did not
#   change test accuracy, and they cannot say whether it helps as a schedule or as a regularizer.
#
# ## Questions
#
# 1. Derive $\nabla L(aw) = \nabla L(w)/a$ and $\langle w, \nabla L(w)\rangle = 0$ from $L(aw) = L(w)$. Where
#    does $\epsilon$ spoil them, and by how much (lecture 4)?
# 2. With $\langle w, g\rangle = 0$, how much does one SGD step grow $\lVert w\rVert^2$? At $\eta = 0.01$ and
#    $\lVert g\rVert \approx 1$, how many updates would it take to double $\lVert w\rVert^2$ from 2? Design the
#    control that isolates the effective rate at $\eta = 0.01$: what happens to the net's function, to the
#    steps of $\gamma$, $\beta$ and the output layer, and to the hidden units' effective rate if every hidden
#    unit's initial weights are divided by $\sqrt 2$? (`fixed_norm_runs` in `bnlab/lessons/learning_rate.py`
#    shows how to change a run's weights before and during training.)
# 3. The output layer has no BN after it. Is it scale-invariant? What limits its step at $\eta = 10$, and what
#    does weight decay do to it?
# 4. At $\eta = 10$ the BN net's training loss ends at 2.37–2.39, slightly above $\ln 10$, although the output
#    layer only has to learn ten numbers. Why might a step of 10 on those ten numbers not settle at $\ln 10$?
# 5. Show that $m$ numbers with mean 0 and mean square 1 can have none larger than $\sqrt{m-1}$. Why does that
#    make a unit with $\beta + \lvert\gamma\rvert\sqrt{m-1} \le 0$ dead forever, whatever the layers below learn?
#    Units die mostly in the *last* hidden layer: propose a reason, and a measurement (one step, one minibatch)
#    that would test it.
# 6. The border is located on a grid of four rates per decade. How many live runs (dashboard) would locate the
#    plain net's border within 10%? How many seeds before you trust a factor of 2 between two borders?
#
# Next: [Lecture 10 — the paper's figure 1, reproduced](10_figure1.ipynb).
