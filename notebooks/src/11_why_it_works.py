# %% [markdown]
# # Lecture 11 — Why does batch norm work?
#
# **Learning goals.** After this lecture you can
# 1. design an experiment that moves the layers' input distributions on purpose (noisy BN, Santurkar et al.
#    2018), measure how far they move, and say what the result does and does not tell about internal covariate
#    shift;
# 2. measure internal covariate shift *through gradients*, as Santurkar et al. define it, and compare it with
#    and without BN;
# 3. probe the loss landscape along the gradient (loss range, gradient change) and say at which step sizes BN
#    makes it smoother, and why a ReLU net has no smoothness constant at tiny steps;
# 4. reproduce Bjorck et al.'s (2018) loss after one step at initialization at depth 10 and 30, and measure the
#    mechanism they propose: activations that grow from layer to layer after a large step;
# 5. measure rank collapse at initialization (Daneshmand et al. 2020) as a function of depth, and find out which
#    half of batch norm, centring or scaling, prevents it;
# 6. for each claim, name the control that makes it a measurement rather than a story.
#
# **Prerequisites.** [Lecture 1](01_the_problem.ipynb) (internal covariate shift as Ioffe & Szegedy defined it,
# and why it is disputed), [lecture 4](04_closed_form.ipynb) (the Jacobian of BN and its scale invariance),
# [lecture 7](07_depth.ipynb) (deep plain nets, He init, the similarity of examples and LayerNorm at depth 15),
# [lecture 9](09_learning_rate.ipynb) (the largest stable learning rate, the loss after one step, the effective
# learning rate).
#
# **The setting.** Sections 1–3 train one family of nets: the 4,000/1,000 MNIST subset; an MLP of 10 hidden
# layers of 100 ReLU units with He init, with or without BN before each ReLU (no bias before a BN); plain SGD,
# learning rate $\eta = 0.1$, batch 64, **300** updates (half of lectures 7–9's budget, to keep this notebook
# under a minute); three seeds (each draws the weights, the minibatch order and the noise). He init is the
# fair control here: under torch's default init the plain net does not train at all at this depth (lecture 7),
# and a net that does not move is trivially "stable" and "smooth". **Varied:** BN or not, and noise after the
# normalization (none, mild, strong). **Held fixed:** everything else. Sections 4 and 5 train nothing: they
# take one step, or one forward pass, from initialization. In every figure the plain net is red and the BN net
# blue.

# %%
import numpy as np

import bnlab.notebook
from bnlab.experiments import OneStepConfig
from bnlab.lessons.why import (
    NORMALIZATIONS,
    WhyConfig,
    add_step_noise,
    collapse_by_depth,
    distribution_shift,
    final_train_loss,
    gradient_ics,
    ics_at,
    ics_summary,
    landscape_summary,
    local_smoothness,
    noise_mean_shift,
    one_step_probes,
    run_nets,
    sampling_shift,
)
from bnlab.notebook import show_source
from bnlab.plots.why import (
    NORMALIZE_LABELS,
    plot_collapse,
    plot_ics,
    plot_landscape,
    plot_noisy_bn,
    plot_one_step,
)
from bnlab.report import bracketed, each_within

bnlab.notebook.setup()
MILD = {"noise_shift": 0.5, "noise_scale": 1.5, "probe_every": None}    # shift in [-0.5, 0.5], factor in [2/3, 3/2]
STRONG = {"noise_shift": 1.0, "noise_scale": 2.0, "probe_every": None}  # shift in [-1, 1], factor in [1/2, 2]
nets = run_nets({                      # six nets x three seeds, 300 updates each: about 15 s on two idle cores
    "no BN": WhyConfig(norm="none"), "BN": WhyConfig(norm="batch"),
    "no BN + mild noise": WhyConfig(norm="none", **MILD), "BN + mild noise": WhyConfig(norm="batch", **MILD),
    "no BN + noise": WhyConfig(norm="none", **STRONG), "BN + noise": WhyConfig(norm="batch", **STRONG)})

# %% [markdown]
# ## 1. Noisy BN: make the distributions move, and see whether BN still helps
#
# Ioffe & Szegedy's hypothesis (lecture 1) is that BN helps because it keeps each layer's input distribution
# from moving while the layers below learn. Santurkar et al. (2018, Sec. 2.1) turned the hypothesis into an
# experiment: put noise right **after** each BN layer, noise that changes at every step, so that the
# distributions move *more* than in a net without BN. If stable distributions were what BN buys, the noisy BN
# net should lose the benefit.
#
# Our noise: at every SGD step and for every hidden unit, draw a shift $b$ and a factor $c$,
#
# $$ y' = c\,y + b, \qquad b \sim \mathcal U(-a, a), \qquad c = s^{u},\; u \sim \mathcal U(-1, 1), $$
#
# and pass $y'$ to the ReLU instead of $y$ (the same $b$, $c$ for every example of the step, new ones at the
# next step; off in `eval()`). Mild noise is $a = 0.5$, $s = 1.5$; strong noise $a = 1$, $s = 2$. The
# **control** is the same noise on the plain net, at the same place (the input of each ReLU). Unlike Santurkar
# et al. we draw one shift and one factor per unit and step, not a different one per example: the noise moves
# the distribution a whole minibatch sees, which is what the hypothesis is about. The code is a forward
# pre-hook on each ReLU:

# %%
show_source(add_step_noise)

# %% [markdown]
# How far does a distribution move? For each hidden unit, take the mean $\mu_t$ and standard deviation
# $\sigma_t$ of its ReLU input over step $t$'s minibatch (what the layer above sees while SGD trains it), and
# measure $|\mu_t - \mu_{t-1}|/\sigma_{t-1}$: how far the mean moved since the previous step, in standard
# deviations. Averaged over units and layers, that is one number per step. Two reference values: with BN and
# no noise the ReLU input has mean $\beta$ and standard deviation $|\gamma|$ on every minibatch (lecture 1),
# so only the slow steps of $\gamma$ and $\beta$ move it. If nothing but the minibatch changed, the means of
# two minibatches of 64 normal values differ by $\mathcal N(0, 2\sigma^2/64)$, so
# $\mathbb E|\mu_t - \mu_{t-1}|/\sigma = \sqrt{4/(64\pi)} = 0.141$. And the noise alone, at
# $\gamma = 1,\ \beta = 0$, gives $\mathbb E|b_t - b_{t-1}| \cdot \mathbb E[1/c] = \frac{2a}{3}\cdot
# \frac{s - 1/s}{2\ln s}$.
#
# **What to look for.** Top left: the training loss (noise included, as SGD sees it); top right: the test
# accuracy of the same nets with the noise off. Solid: no noise; dashed: mild; dotted: strong. Bottom left: how
# far the distributions move per step; bottom right: one unit of the middle layer over the last 20 steps.

# %%
plot_noisy_bn(nets);

# %%
# NBVAL_CHECK_OUTPUT
loss_brackets = {"no BN": (None, 0.3), "BN": (None, 0.3), "no BN + mild noise": (0.7, None),
                 "BN + mild noise": (0.3, 0.5), "BN + noise": (0.6, 1.0)}
accuracy_brackets = {"no BN": (0.88, None), "BN": (0.9, None), "no BN + mild noise": (None, 0.8),
                     "BN + mild noise": (0.88, None), "BN + noise": (0.65, 0.8)}
print("after 300 updates, per seed:")
for label, (low, high) in loss_brackets.items():
    print(f"  {label:19s} training loss {each_within(final_train_loss(nets[label]), low, high)}; test accuracy "
          f"{each_within(nets[label].final_accuracies(), *accuracy_brackets[label], digits=3)}")
print(f"  {'no BN + noise':19s} {nets['no BN + noise'].outcome()}; updates "
      f"{each_within(nets['no BN + noise'].diverged_at(), high=10, digits=0)}")

# %%
# NBVAL_CHECK_OUTPUT
moved = {label: distribution_shift(runs)[0] for label, runs in nets.items()}
print(f"mean move per step, |mu_t - mu_t-1| / sigma_t-1, per seed (minibatch sampling alone: "
      f"{sampling_shift(64):.3f}):")
print(f"  BN                 {each_within(moved['BN'], high=0.01, digits=3)}")
print(f"  no BN              {each_within(moved['no BN'], 0.18, 0.35, digits=3)}")
for label, noise in (("BN + mild noise", MILD), ("BN + noise", STRONG)):
    expected = noise_mean_shift(noise["noise_shift"], noise["noise_scale"])
    print(f"  {label:18s} {each_within(moved[label], 0.9 * expected, 1.1 * expected, digits=3)} "
          f"(the noise alone: {expected:.3f})")
print(f"  no BN + mild noise {each_within(moved['no BN + mild noise'], low=0.6, digits=3)}")
for label in ("BN + mild noise", "BN + noise"):
    print(f"{label}: moves {bracketed(moved[label].mean() / moved['no BN'].mean(), 1.1, 4, digits=2)} times as far "
          f"per step as the plain net's (seed means)")

# %% [markdown]
# What to notice:
#
# - **The noise does what it should.** Without noise the BN net's ReLU inputs hardly move (0.001 standard
#   deviations per step); the plain net's move 0.24–0.26, more than sampling alone (0.141), because its
#   weights change the scale and centre of every layer. With noise the BN net's move exactly as much as the
#   noise alone predicts: 0.34 (mild) and 0.72 (strong), 1.4 and 2.9 times the plain net's.
# - **The noisy BN net still trains, and the same noise breaks the plain net.** With mild noise BN ends at a
#   test accuracy of 0.90–0.93, about the plain net's 0.91 without any noise; the plain net with the same noise
#   drops to 0.61–0.72. With strong noise BN still reaches 0.72–0.75, while the plain net diverges at update 3
#   in every seed.
# - **But the noise is not free.** BN with mild noise ends at twice the training loss of BN without it (0.36
#   against 0.19), with strong noise at four times. In 300 updates, "noisy BN trains about as well as BN"
#   (Santurkar et al.) holds for the mild noise in test accuracy, not in training loss, and not for the strong
#   noise.
#
# So distributions that stay put are not *necessary* for BN's benefit: a BN net whose layers see
# distributions jumping by 0.7 standard deviations every step trains, where the plain net with stable-ish
# distributions (0.25) is broken by the same noise. Why the plain net breaks is worth a second look: the noise
# multiplies each layer's signal by up to $s$, and without normalization those factors **compound** over ten
# layers ($2^{10} \approx 1000$ at the extreme). BN undoes each layer's factor at the next layer. What BN
# protects against here is compounding through depth, not a moving distribution at one layer; sections 4 and
# 5 meet compounding again.
#
# This is not yet a verdict on internal covariate shift, whose definition is about the *updates of the layers
# below*, not about injected noise. The next section measures it that way.
#
# ## 2. Internal covariate shift, measured through gradients
#
# A layer "feels" the layers below through its gradient: if their update changes what the layer should do,
# its gradient changes. Santurkar et al. (2018, Definition 2.1) measure exactly that. Take the parameters
# $W_1, \dots, W_k$ of the layers, one minibatch $(x, y)$, and let $W_i'$ be layer $i$ after its SGD step on
# that minibatch. For layer $k$,
#
# $$ G = \nabla_{W_k} L(W_1, \dots, W_{k-1}, W_k, \dots; x, y), \qquad
#    G' = \nabla_{W_k} L(W_1', \dots, W_{k-1}', W_k, \dots; x, y), $$
#
# the gradient before and after **only the layers below** took their step (their weights, and BN's $\gamma$
# and $\beta$), with layer $k$ and the layers above unchanged. No covariate shift would mean $G' = G$. We report
# $\lVert G - G'\rVert / \lVert G\rVert$ (how much of the gradient changed) and $\cos(G, G')$ (1: the same
# direction), for the weight layers 2 to 11 (layer 1 has nothing below it; layer 11 is the output layer), at
# updates 0, 75, 150, 225 and 300 of the runs above, on a fixed probe minibatch of 64 training digits and with
# the training rate $\eta = 0.1$. The control is the plain net. The measurement, as the library computes it:

# %%
show_source(gradient_ics)

# %% [markdown]
# **What to look for.** Whether the blue lines sit below the red ones.

# %%
plot_ics(nets);

# %%
# NBVAL_CHECK_OUTPUT
ics = {label: ics_summary(nets[label]) for label in ("no BN", "BN")}   # medians over layers and updates 75-300
for label in ("no BN", "BN"):
    print(f"{label:5s}: ||G - G'|| / ||G|| per seed {each_within(ics[label]['relative'], 0.7, 1.3)}; "
          f"cos(G, G') {each_within(ics[label]['cosine'], -0.5, 0.7)}")
ratio = ics["BN"]["relative"].mean() / ics["no BN"]["relative"].mean()
print(f"BN / no BN, relative gradient change (seed means): {bracketed(ratio, 0.7, 1.3, digits=2)}")
start = {label: ics_at(nets[label], 0) for label in ("no BN", "BN")}
print(f"at initialization, ||G - G'|| / ||G||: no BN {each_within(start['no BN']['relative'], 0.9, 1.2)}; "
      f"BN {each_within(start['BN']['relative'], 1.2, 1.6)}")

# %% [markdown]
# What to notice:
#
# - **Internal covariate shift, measured this way, is large in both nets.** After the layers below take one
#   SGD step, a layer's gradient has changed by about its own size (median 0.87–1.11 of $\lVert G\rVert$), and
#   its direction is only loosely kept (cosine between 0 and 0.55). At depth 10 and $\eta = 0.1$, every layer
#   is chasing a target that the layers below move by a whole gradient at every step.
# - **BN does not remove it.** BN's relative change is about 10% smaller than the plain net's and its cosine a
#   little higher, but both nets are in the same regime, far from $G' = G$; the right panel shows it in every
#   layer. At initialization BN's is even *larger* (1.33–1.41 of $\lVert G\rVert$ against 1.01–1.07).
#   Santurkar et al. found, on VGG and deep linear nets, that BN does not reduce this measure and can increase
#   it; on this MLP it increases it at the start and reduces it slightly later. Either way, a 10% change of a
#   quantity this large does not look like the reason BN trains faster.
#
# Sections 1 and 2 together: BN does not work *by keeping distributions still*. Santurkar et al.'s
# alternative is that BN makes the optimization problem better behaved: a smoother loss along the direction
# SGD moves in.
#
# ## 3. The loss landscape along the gradient
#
# At a point $\theta$ of training, with $g$ the gradient on the probe minibatch, move along $-g$ by step sizes
# $\eta \in \{0.0125, 0.025, 0.05, 0.1, 0.2, 0.4\}$ (an eighth to four times the training rate) and measure on
# the same minibatch (Santurkar et al. 2018, Sec. 3.1):
#
# - the **loss range**: $\max - \min$ of $L(\theta - \eta g)$ over the steps and $\eta = 0$: how much the loss
#   can change along the step SGD is about to take;
# - the **gradient change** $\lVert \nabla L(\theta - \eta g) - g\rVert$: how well the gradient here predicts
#   the gradient there. Divided by the distance moved, $\eta\lVert g\rVert$, it is a smoothness constant $\beta$
#   measured along $-g$: a loss is $\beta$-smooth when its gradient never changes by more than $\beta$ times
#   the distance moved.
#
# One caution first. For a loss with continuous second derivatives, the gradient change per unit distance tends
# to a constant as $\eta \to 0$ (the Hessian applied to $g/\lVert g\rVert$). A ReLU's slope jumps from 0 to 1
# at 0, so a ReLU net's gradient jumps whenever a pre-activation crosses 0: a tiny step can change it by a
# finite amount. A measurement on the untrained nets, with tanh nets (smooth) as the control, in float64:

# %%
# NBVAL_CHECK_OUTPUT
smooth = {(act, norm): [[local_smoothness(act, norm, seed, eta) for seed in (0, 1, 2)] for eta in (1e-5, 1e-3)]
          for act in ("tanh", "relu") for norm in ("none", "batch")}
print("gradient change per unit distance, ||grad(theta - eta g) - g|| / (eta ||g||), at initialization, per seed")
for (act, norm), (tiny, small) in smooth.items():
    drift = np.array(tiny) / np.array(small)
    bracket = (0.9, 1.1) if act == "tanh" else (2, None)
    print(f"  {act} {'BN   ' if norm == 'batch' else 'no BN'}: eta 1e-5: {', '.join(f'{v:.3g}' for v in tiny)}; "
          f"eta 1e-3: {', '.join(f'{v:.3g}' for v in small)}; ratio {each_within(drift, *bracket)}")
tanh_ratio = np.mean(smooth[("tanh", "batch")][0]) / np.mean(smooth[("tanh", "none")][0])
print(f"tanh, BN over no BN at eta 1e-5 (seed means): {bracketed(tanh_ratio, 1.5, 3, digits=2)}")

# %% [markdown]
# The tanh nets behave like smooth functions: the constant is the same at $\eta = 10^{-5}$ and $10^{-3}$ to within
# 7%. The ReLU nets do not: a hundred times smaller step gives a 3 to 16 times larger constant, because the
# gradient jumps.
# And where the constant is well defined (tanh), BN's is about **twice** the plain net's at initialization,
# not smaller. A smoothness constant of a ReLU net only means something at a stated scale; we use the scale of
# the steps SGD takes, $0.0125 \le \eta \le 0.4$.
#
# **What to look for.** Left and middle: the loss range and the largest gradient change at each probe of
# training, a line per seed (log scales). Right: the gradient change relative to $\lVert g\rVert$ against the
# step size (median over the probes at updates 75–300).

# %%
plot_landscape(nets);

# %%
# NBVAL_CHECK_OUTPUT
land = {label: landscape_summary(nets[label]) for label in ("no BN", "BN")}   # medians over updates 75-300
for key, name, brackets in (("loss_range", "loss range along -g", {"no BN": (0.6, None), "BN": (None, 0.3)}),
                            ("grad_change", "largest gradient change", {"no BN": (6, None), "BN": (None, 4)}),
                            ("beta", "change per unit distance at eta 0.1", {"no BN": (8, 15), "BN": (8, 15)})):
    ratio = land["no BN"][key].mean() / land["BN"][key].mean()
    print(f"{name:36s} no BN {each_within(land['no BN'][key], *brackets['no BN'])}; "
          f"BN {each_within(land['BN'][key], *brackets['BN'])}")
    print(f"{'':36s} no BN / BN (seed means) "
          f"{bracketed(ratio, *{'loss_range': (4, 20), 'grad_change': (2.5, 8), 'beta': (0.8, 1.5)}[key], digits=2)}")
print(f"largest gradient change / ||g||: no BN {each_within(land['no BN']['relative_change'], low=3)}; "
      f"BN {each_within(land['BN']['relative_change'], high=1.5)}")

# %% [markdown]
# What to notice:
#
# - **Along the steps SGD takes, the BN net's loss is far better behaved.** Over $\eta$ up to 0.4 its loss
#   changes by 0.10–0.17, the plain net's by 0.9–1.5 (about 9 times more); its gradient changes by at most
#   2.2–2.8, the plain net's by 9–13 (about 4 times more). That is Santurkar et al.'s finding, on this MLP.
# - **The difference is at the larger steps.** Up to the training rate 0.1 the two nets' gradients change
#   alike (right panel; the constant at $\eta = 0.1$ is 9.5–12.5 in both). Beyond it, the plain net's gradient
#   keeps changing, to 4.2–4.5 times its own size at $\eta = 0.4$; the BN net's never changes by much more
#   than its own size (1.1–1.2). With BN, a step twice or four times too large lands where the gradient still
#   points roughly the same way; without BN it lands on a different landscape.
# - This fits lecture 9: BN's largest stable learning rate is ten to thirty times the plain net's. It does not
#   explain it on its own: a smooth landscape at the *current* point says nothing about the next updates, and
#   at tiny steps (above) BN is not smoother at all.
#
# ## 4. The loss after one step at initialization
#
# [Lecture 9](09_learning_rate.ipynb) measured one SGD step from initialization for the depth-10 net: the loss
# after the step over the loss before, on the same minibatch (Bjorck et al. 2018, Sec. 3). Here we add depth 30
# and the measurement of Bjorck et al.'s explanation: without BN, a large step changes every layer's weights at
# once, each layer amplifies what the layer below passes up, and the activations grow from layer to layer until
# the loss explodes. So next to the loss we record, for every hidden layer, the root-mean-square of its output on
# the minibatch after the step over before it. **Controls:** BN (which renormalizes every layer) and, for the
# plain net, the initialization: $\mathcal N(0, 0.15^2)$ in every layer (a little above He's
# $\sqrt{2/100} = 0.141$ for the hidden layers, three times it for layer 1) and torch's default init (whose
# signal vanishes with depth, lecture 7).
#
# **What to look for.** Left: where each line leaves 1 (dotted). Right: depth 30 at $\eta = 0.316$, each
# layer's growth, a line per seed.

# %%
probes = one_step_probes({                                          # one forward and backward each, about 2 s
    "no BN, depth 10": OneStepConfig(depth=10), "BN, depth 10": OneStepConfig(depth=10, norm="batch"),
    "no BN, depth 30": OneStepConfig(depth=30), "BN, depth 30": OneStepConfig(depth=30, norm="batch"),
    "no BN, depth 10, init N(0, 0.15²)": OneStepConfig(depth=10, init="gaussian", init_std=0.15),
    "no BN, depth 10, default init": OneStepConfig(depth=10, init="default")},
    lrs=(0.01, 0.0316, 0.1, 0.316, 1.0))
plot_one_step(probes);

# %%
# NBVAL_CHECK_OUTPUT
def ratio_at(label, lr):
    return probes[label].ratio[probes[label].lrs.index(lr)]

print("loss after one step / loss before, per seed (He init unless said):")
print(f"  no BN, depth 10: lr 0.1 {each_within(ratio_at('no BN, depth 10', 0.1), high=1)}; "
      f"lr 0.316 {each_within(ratio_at('no BN, depth 10', 0.316), low=1)}; "
      f"lr 1: {', '.join(f'{v:.3g}' for v in ratio_at('no BN, depth 10', 1.0))} (each > 10)")
print(f"  no BN, depth 30: lr 0.01 {each_within(ratio_at('no BN, depth 30', 0.01), high=1.01)}; "
      f"lr 0.316: {', '.join(f'{v:.3g}' for v in ratio_at('no BN, depth 30', 0.316))}; "
      f"lr 1: {', '.join(f'{v:.2g}' for v in ratio_at('no BN, depth 30', 1.0))}")
def span(label, low=None, high=None, digits=2):
    """The smallest and largest ratio over every rate and seed of a setting, each with its bracket."""
    ratios = probes[label].ratio
    lowest = bracketed(ratios.min(), low=low, digits=digits) if low is not None else f"{ratios.min():.{digits}g}"
    return f"from {lowest} to {bracketed(ratios.max(), high=high, digits=digits)} over {ratios.size} rates x seeds"

print(f"  BN,    depth 10: {span('BN, depth 10', high=1.0)}")
print(f"  BN,    depth 30: {span('BN, depth 30', low=0.85, high=1.1)}")
gaussian = "no BN, depth 10, init N(0, 0.15²)"
print(f"  {gaussian}: lr 0.1 {each_within(ratio_at(gaussian, 0.1), low=10, digits=1)}; lr 1: "
      f"{', '.join(f'{v:.2g}' for v in ratio_at(gaussian, 1.0))}")
print(f"  no BN, depth 10, default init: {span('no BN, depth 10, default init', low=0.98, high=1.0, digits=3)}")
row = probes["no BN, depth 30"].lrs.index(0.316)
plain_growth, bn_growth = probes["no BN, depth 30"].growth[row], probes["BN, depth 30"].growth[row]
print("depth 30, lr 0.316, output RMS after / before the step, per seed:")
print(f"  no BN: layer 1 {each_within(plain_growth[:, 0], 1, 2)}; layer 30 "
      f"{', '.join(f'{v:.3g}' for v in plain_growth[:, -1])} (each > 5)")
print(f"  BN:    layer 30 {each_within(bn_growth[:, -1], 0.9, 1.1, digits=3)}; largest over the 30 layers "
      f"{each_within(bn_growth.max(axis=1), high=2)}")

# %% [markdown]
# What to notice:
#
# - **Without BN the loss explodes after one large step, and more so the deeper the net.** At depth 10 one step
#   of 0.316 multiplies the loss by 2.9–6.2 and a step of 1 by 68 to 3,500; at depth 30 a step of 0.316 by 2.7
#   to 3,600 and a step of 1 by up to $10^{10}$. With BN the loss goes *down* (ratio below 1) at every rate up
#   to 1 at depth 10, and stays within 0.89–1.04 at depth 30.
# - **The mechanism, measured.** At depth 30 and $\eta = 0.316$ the plain net's layer 1 changes its output by a
#   factor 1.15–1.5, and the factors compound: the last hidden layer's output is 11 to 2,000 times larger after
#   the step. With BN every layer's output is renormalized on the minibatch, so the growth cannot compound: the
#   last layer's RMS changes by at most 1.5%; only the first layers, whose $\gamma$, $\beta$ take large steps,
#   change by up to about 1.8 (right panel).
# - **The controls.** The plain net is very sensitive to its init: $\mathcal N(0, 0.15^2)$, slightly larger than
#   He's, explodes already at $\eta = 0.1$ (ratio 15–41, where He init gives 0.52–0.97). Torch's default init
#   gives a ratio of 0.99–1.00 at every rate, but not because the step is safe: its signal and gradient vanish with
#   depth (lecture 7), so the step changes nothing. A ratio near 1 means "safe" only if the ratio also goes
#   below 1 at some rate, as BN's does (0.77–0.78 at $\eta = 0.01$).
#
# Bjorck et al.'s reading, that BN's main benefit is the larger learning rates it allows, is what lecture 9
# measured over 600 updates; this section shows why the plain net cannot take them.
#
# ## 5. Rank collapse at depth
#
# [Lecture 7](07_depth.ipynb) measured, at depth 15, how alike a layer makes the test digits look (the mean
# cosine similarity of their representations): about $1/\pi$ with BN, above 0.9 with LayerNorm and with the plain
# He-init net. It also showed, with a learning-rate control, that this starting similarity is not on its own why
# LayerNorm failed there. Here we measure it directly as a function of depth, to 50 layers at initialization, and
# ask **which half of BN** keeps the examples apart. Between each linear layer and its ReLU we put:
# nothing; **centring only** ($z - \mu_\mathcal B$); **scaling only** ($z/\sqrt{\sigma^2_\mathcal B + \epsilon}$,
# no centring); both (BN at initialization, $\gamma = 1$, $\beta = 0$); or LayerNorm (each example over its own
# units). Same He-init weights in every case; the 1,000 test digits form the batch.
#
# Similarity can miss a collapse: vectors can have cosines near 0 and still lie in a few directions. So we also
# measure the **effective rank** of a layer's representation $H$ (1,000 × 100; Roy & Vetterli 2007): with
# singular values $s_i$ and $p_i = s_i/\sum_j s_j$,
#
# $$ \operatorname{erank}(H) = \exp\Big(-\sum_i p_i \ln p_i\Big), $$
#
# 1 when all examples lie on one line, 100 when all directions are equally used. Daneshmand et al. (2020)
# prove that BN keeps the rank of a deep *linear* net's representations of order $\sqrt{\text{width}}$ (10 here),
# where without BN it collapses; so linear nets are the second setting.
#
# **What to look for.** Which colours fall with depth, and in the right panel, which settings stay above the
# dotted $\sqrt{100}$.

# %%
relu = {NORMALIZE_LABELS[n]: collapse_by_depth(n, "relu", depth=50) for n in NORMALIZATIONS}    # about 2 s
linear = {NORMALIZE_LABELS[n]: collapse_by_depth(n, "linear", depth=50) for n in ("none", "center", "scale", "batch")}
plot_collapse(relu, linear);

# %%
# NBVAL_CHECK_OUTPUT
def at(collapses, label, layer):
    return collapses[label].at(layer)

print("ReLU nets, layer 50, per seed: similarity of examples | effective rank")
for label, sim_bracket, rank_bracket in (("no norm", (0.95, None), (None, 6)), ("LayerNorm", (0.95, None), (None, 8)),
                                         ("centring only", (0.7, 0.9), (None, 25)),
                                         ("scaling only", (0.65, 0.8), (35, 55)), ("BN", (0.3, 0.4), (50, None))):
    similarity, rank = at(relu, label, 50)
    print(f"  {label:13s} {each_within(similarity, *sim_bracket, digits=3)} | {each_within(rank, *rank_bracket, digits=1)}")
similarity, _ = at(relu, "centring only", 10)
print(f"  centring only, layer 10: similarity {each_within(similarity, 0.3, 0.35, digits=3)} (1/pi = {1 / np.pi:.3f})")
print("linear nets, layer 50, effective rank per seed (sqrt(width) = 10):")
for label, bracket in (("no norm", (None, 10)), ("centring only", (None, 10)), ("scaling only", (10, None)),
                       ("BN", (10, None))):
    print(f"  {label:13s} {each_within(at(linear, label, 50)[1], *bracket, digits=1)}")
scaled = at(linear, "scaling only", 50)[1].mean() / at(linear, "BN", 50)[1].mean()
print(f"linear, scaling only / BN (seed means): {bracketed(scaled, 0.9, 1.1, digits=3)}")

# %% [markdown]
# What to notice:
#
# - **Without normalization, and with LayerNorm, the ReLU nets collapse.** By layer 50 every pair of digits
#   has cosine similarity 0.98–1.00 and the effective rank is 2–5 of 100: the top layers see nearly one vector
#   for every image. LayerNorm normalizes each example on its own and does not prevent it (lecture 7 saw the
#   start of this at depth 15).
# - **BN keeps them apart**: similarity 0.35 at layer 50 (it starts at $1/\pi \approx 0.32$, lecture 7's
#   question 3) and an effective rank of 67–70.
# - **Which half?** In the ReLU nets, **centring** keeps the similarity at $1/\pi$ for the first layers, but
#   without scaling the rank decays after about layer 20 (7–17 at layer 50); **scaling** alone holds the rank
#   near 44 but lets the similarity sit at 0.71–0.73 (the ReLU's common positive part is never removed). Only
#   both together stay high on both measures. In the linear nets, where there is no ReLU to add a common part,
#   **scaling alone does all of it**: its rank equals BN's (16–18, above $\sqrt{100}$), and centring alone is
#   no better than nothing (6–7). Daneshmand et al.'s theorem is about this scaling, per feature over the batch;
#   the effective rank we measure sits above their order $\sqrt{\text{width}}$.
#
# These are measurements at initialization. How much a collapsed start matters for training depends on the
# step size and the budget; lecture 7's LayerNorm control is the example to keep in mind.
#
# ## What the papers claim, and what we reproduce
#
# | claim | source | here |
# |---|---|---|
# | BN with noise that moves the distributions every step still trains about as well as BN, better than no BN | Santurkar et al. 2018, Sec. 2.1 | **partly**: with mild noise BN reaches the plain net's test accuracy (0.90–0.93) while the same noise drops the plain net to 0.61–0.72; strong noise: BN 0.72–0.75, the plain net diverges. But noise doubles (mild) or quadruples (strong) BN's training loss at 300 updates |
# | BN does not reduce internal covariate shift measured through gradients | Santurkar et al. 2018, Sec. 2.2 | **reproduced in kind**: in both nets the layers below change a layer's gradient by about its own size; BN's change is about 10% smaller |
# | BN makes the loss and its gradient change less along the gradient | Santurkar et al. 2018, Sec. 3.1 | **reproduced at the scale of SGD steps**: loss range about 9× and gradient change about 4× smaller; the difference comes from steps above the training rate; at tiny steps BN is not smoother (tanh: about twice the constant) and a ReLU net has no constant |
# | without BN one large step from initialization makes the loss explode, more so with depth; activations grow layer by layer | Bjorck et al. 2018, Sec. 3 | **reproduced**: up to $10^{10}$ at depth 30 and $\eta = 1$; last-layer output 11–2,000× larger after one step of 0.316; with BN about 1 |
# | BN avoids rank collapse in deep random nets | Daneshmand et al. 2020 | **reproduced**: effective rank at layer 50 about 68 with BN against 2–5 without or with LayerNorm (ReLU); linear nets 17 against 6; in linear nets the scaling half does it |
# | (bn-facts) noisy BN trains (loss 0.1–0.3) while the plain net is stuck at 2.30 | course reference | **different setting**: that plain net (default init) does not train even without noise. Against the He-init plain net, noisy BN ends at 0.36 (mild) and 0.75–0.82 (strong) |
# | (bn-facts) landscape: loss range 36×, gradient change 6.6× smaller with BN (depth 6) | course reference | **smaller factors here** (depth 10, $\eta \le 0.4$): about 9× and 4× |
# | (bn-facts) one step, no BN: 19.6 at $\eta = 0.1$, $2\cdot 10^7$ at 1 (depth 10), $10^{11}$ at 0.01 (depth 30) | course reference | **depends on the init**: with He init 0.52–0.97, 70–3,500 and 0.73–1.00; the first is close to what $\mathcal N(0, 0.15^2)$ gives (15–41) |
#
# Caveats: one architecture (a 10-layer MLP of width 100, 30 and 50 layers at initialization), 300 updates,
# three seeds, and a noise of our own design. The runs cannot rank the explanations against each other: each
# measurement shows one property that BN has and its control lacks.
#
# ## Summary
#
# - **Stable distributions are not necessary.** Noise after BN that moves every layer's input by up to 0.7
#   standard deviations per step slows BN but does not break it; the same noise breaks the plain net, because
#   without normalization the noise compounds through the layers.
# - **Internal covariate shift through gradients** is large with and without BN: the layers below change a
#   layer's gradient by about its own size at every step. BN reduces it by about 10%.
# - **Smoothness, at a stated scale.** Along the steps SGD takes, BN's loss changes about 9 times less and its
#   gradient about 4 times less, because beyond the training rate the plain net's gradient keeps changing while
#   BN's does not. At tiny steps a ReLU net's gradient jumps, and a smooth (tanh) BN net is not smoother.
# - **One step from initialization.** Without BN a large step makes the activations grow layer by layer, and
#   the loss explodes, by up to $10^{10}$ at depth 30; with BN every layer is renormalized and the loss does
#   not grow. A ratio near 1 is only reassuring if smaller steps bring it below 1 (torch's default init: 1.00
#   because nothing moves).
# - **Rank collapse.** Deep plain and LayerNorm ReLU nets map all digits to nearly one direction at
#   initialization; BN keeps the effective rank near 70 at layer 50. In linear nets BN's scaling half alone
#   keeps it.
#
# ## Questions
#
# 1. Derive $\mathbb E|b_t - b_{t-1}| = 2a/3$ for independent $b_t, b_{t-1} \sim \mathcal U(-a, a)$ and
#    $\mathbb E[s^{-u}] = (s - 1/s)/(2\ln s)$ for $u \sim \mathcal U(-1, 1)$. Why does the measured move of the
#    noisy BN net match the noise alone so well, although $\gamma$ and $\beta$ are learned?
# 2. Our noise is the same for every example of a step. Santurkar et al. also perturb each example separately.
#    Which of the two changes the minibatch statistics that the *next* BN layer computes, and which would you
#    expect to hurt BN more? Change `add_step_noise` (in `bnlab/lessons/why.py`) and test your guess.
# 3. In section 2, the change of layer $k$'s gradient mixes two causes: the layers below changed what layer $k$
#    sees, and they changed how the loss depends on layer $k$'s output (through the shared minibatch
#    statistics, for BN). Design a measurement that separates them.
# 4. The landscape probe moves *all* parameters along $-g$. With BN, the hidden weights are scale-invariant
#    (lectures 4 and 9), so part of each probe step changes nothing. Which part, and how would you correct the
#    distance moved for it?
# 5. In section 4, why does the BN net's layer 1 change its output after one step while layer 30 does not?
#    (Hint: which parameters of a BN layer are not renormalized away?)
# 6. For a linear net, scaling alone kept the rank and centring alone did not. For a ReLU net both mattered.
#    Explain with what a ReLU does to a zero-mean input's mean.
#
# Next: lecture 12 (planned) — batch norm in practice.
