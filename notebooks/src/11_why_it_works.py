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
# 4. make Bjorck et al.'s (2018) measurement, the loss after one step at initialization, on an MLP of depth 10
#    and 30 (they used ResNets on CIFAR-10), and measure the mechanism they propose: activations that grow from
#    layer to layer after a large step;
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
# near a minute); three seeds (each draws the weights, the minibatch order and the noise). He init is the
# fair control here: under torch's default init the plain net does not train at all at this depth (lecture 7),
# and a net that does not move is trivially "stable" and "smooth". **Varied:** BN or not, and noise after the
# normalization (none, mild, strong); one control net trains nothing (frozen weights). **Held fixed:**
# everything else. Sections 4 and 5 train nothing: they take one step, or one forward pass, from
# initialization. In every figure the plain net is red and the BN net blue.

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
    initial_logit_rms,
    landscape_summary,
    local_smoothness,
    noise_growth,
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
nets = run_nets({                      # seven nets x three seeds, 300 updates each: about 40 s on two busy cores
    "no BN": WhyConfig(norm="none"), "BN": WhyConfig(norm="batch"),
    "no BN + mild noise": WhyConfig(norm="none", **MILD), "BN + mild noise": WhyConfig(norm="batch", **MILD),
    "no BN + noise": WhyConfig(norm="none", **STRONG), "BN + noise": WhyConfig(norm="batch", **STRONG),
    "no BN, frozen": WhyConfig(norm="none", frozen=True, probe_every=None)})   # the control of the movement

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
# $$ y' = c\,y + b, \qquad b \sim \mathcal U(-a, a), \qquad c = r^{u},\; u \sim \mathcal U(-1, 1), $$
#
# and pass $y'$ to the ReLU instead of $y$ (the same $b$, $c$ for every example of the step, new ones at the
# next step; off in `eval()`). Mild noise is $a = 0.5$, $r = 1.5$; strong noise $a = 1$, $r = 2$. The
# **control** is the same noise on the plain net, at the same place (the input of each ReLU). Unlike Santurkar
# et al. we draw one shift and one factor per unit and step, not a different one per example: the noise moves
# the distribution a whole minibatch sees, which is what the hypothesis is about. The code is a forward
# pre-hook on each ReLU:

# %%
show_source(add_step_noise)

# %% [markdown]
# How far does a distribution move? For each hidden unit, take the mean $\mu_t$ and standard deviation
# $\sigma_t$ of its ReLU input over a batch at step $t$, and measure $|\mu_t - \mu_{t-1}|/\sigma_{t-1}$: how far
# the mean moved since the previous step, in standard deviations; averaged over units and layers, one number
# per step. Which batch? On each step's **own minibatch** (what SGD's layer sees) two causes mix: the weights
# changed, *and* the minibatch is new. So we measure on a **fixed probe batch** (64 training digits), passed
# through the net right after each step's forward, with the same weights and the same noise, in training
# mode (each BN normalizes with the probe batch's statistics, as in lecture 10): there only the weights and
# the noise move the distribution. **Control** for the minibatch measure: the plain net with **frozen**
# weights (every gradient zeroed) on the same minibatch order, which moves by sampling alone.
#
# Two things to know before reading the numbers. In training mode, a BN layer's output has mean $\beta$ and
# standard deviation $|\gamma|$ over *any* batch it normalizes (lecture 2), so without noise only the slow
# steps of $\gamma$ and $\beta$ can move it: that small number is what BN does by construction, not a finding.
# With noise, at $\gamma = 1,\ \beta = 0$, the noise alone moves it by
# $\mathbb E|b_t - b_{t-1}| \cdot \mathbb E[1/c] = \frac{2a}{3}\cdot \frac{r - 1/r}{2\ln r}$.
#
# **What to look for.** Top left: the training loss (noise included, as SGD sees it); top right: the test
# accuracy of the same nets with the noise off (and BN's running statistics as training left them). Solid: no
# noise; dashed: mild; dotted: strong. Bottom left: how far the distributions move per step on the probe
# batch; bottom right: one unit of the middle layer over the last 20 steps.

# %%
plot_noisy_bn(nets);

# %%
# NBVAL_CHECK_OUTPUT
loss_brackets = {"no BN": (None, 0.3), "BN": (None, 0.3), "no BN + mild noise": (0.7, None),
                 "BN + mild noise": (0.3, 0.5), "BN + noise": (0.6, 1.0)}
accuracy_brackets = {"no BN": (0.88, None), "BN": (0.9, None), "no BN + mild noise": (None, 0.8),
                     "BN + mild noise": (0.88, None), "BN + noise": (0.65, 0.8)}
print("after 300 updates, per seed (training loss: noise on; test accuracy: noise off, running statistics "
      "of training):")
for label, (low, high) in loss_brackets.items():
    print(f"  {label:19s} training loss {each_within(final_train_loss(nets[label]), low, high)}; test accuracy "
          f"{each_within(nets[label].final_accuracies(), *accuracy_brackets[label], digits=3)}")
print(f"  {'no BN + noise':19s} {nets['no BN + noise'].outcome()}; updates "
      f"{each_within(nets['no BN + noise'].diverged_at(), high=10, digits=0)}")
print("noise off, BN's statistics recomputed on the clean training digits (precise BN, lecture 12):")
clean_brackets = {"no BN": ((0.88, None), (None, 0.25)), "BN": ((0.9, None), (None, 0.1)),
                  "BN + mild noise": ((0.9, None), (None, 0.2)), "BN + noise": ((0.83, 0.9), (0.3, 0.5))}
for label, (accuracy, loss) in clean_brackets.items():
    print(f"  {label:15s} test accuracy {each_within(nets[label].values('precise_accuracy'), *accuracy, digits=3)}; "
          f"training loss, all 4,000 digits {each_within(nets[label].values('clean_train_loss'), *loss)}")
print(f"  BN + noise, training loss with the running statistics of training instead: "
      f"{each_within(nets['BN + noise'].values('clean_train_loss_ema'), 0.5, 1.0)}")

# %%
# NBVAL_CHECK_OUTPUT
moved = {label: distribution_shift(runs)[0] for label, runs in nets.items()}                       # probe batch
per_minibatch = {label: distribution_shift(nets[label], where="minibatch")[0] for label in ("no BN", "no BN, frozen", "BN")}
print("mean move per step on the fixed probe batch, |mu_t - mu_t-1| / sigma_t-1, per seed:")
print(f"  BN                 {each_within(moved['BN'], high=0.01, digits=4)}")
print(f"  no BN              {each_within(moved['no BN'], 0.12, 0.25, digits=3)}")
for label, noise in (("BN + mild noise", MILD), ("BN + noise", STRONG)):
    expected = noise_mean_shift(noise["noise_shift"], noise["noise_scale"])
    print(f"  {label:18s} {each_within(moved[label], 0.9 * expected, 1.1 * expected, digits=3)} "
          f"(the noise alone: {expected:.3f})")
print(f"  no BN + mild noise {each_within(moved['no BN + mild noise'], low=0.6, digits=3)}")
print("the same on each step's own minibatch:")
print(f"  no BN              {each_within(per_minibatch['no BN'], 0.18, 0.35, digits=3)}")
print(f"  no BN, frozen      {each_within(per_minibatch['no BN, frozen'], 0.12, 0.17, digits=3)} (sampling alone; "
      f"two minibatches of 64 normal values: {sampling_shift(64):.3f})")
print(f"  BN                 {each_within(per_minibatch['BN'], high=0.01, digits=4)}")
for label, (low, high) in (("BN + mild noise", (1.5, 2.5)), ("BN + noise", (3, 5))):
    print(f"{label}: moves {bracketed(moved[label].mean() / moved['no BN'].mean(), low, high, digits=2)} times as "
          f"far per step on the probe batch as the plain net (seed means)")

# %% [markdown]
# What to notice:
#
# - **The noise does what it should.** Without noise the BN net's ReLU inputs hardly move (0.0008 standard
#   deviations per step, on the probe batch as on the minibatches: by construction, see above). The plain
#   net's move 0.17–0.19 on the probe batch, from its weights alone; on its own minibatches 0.24–0.26, of which
#   sampling alone, measured on the frozen net, gives 0.14. With noise the BN net's inputs move as much as the
#   noise alone predicts: 0.34 (mild) and 0.72 (strong), about 2 and 4 times the plain net's.
# - **With mild noise BN still trains, and the same noise breaks the plain net.** BN with mild noise ends at a
#   test accuracy of 0.90–0.93 (0.92–0.93 with recomputed statistics), about BN's own 0.92–0.94 and the plain
#   net's 0.91 without any noise; the plain net with the same noise drops to 0.61–0.72. But its training loss
#   as SGD sees it, noise on, is twice BN's (0.36 against 0.19); with the noise off it is 0.13–0.15, between
#   BN's 0.07–0.08 and the plain net's 0.15–0.19.
# - **Strong noise costs BN a lot, and part of the cost is in the statistics.** Its test accuracy is 0.72–0.75
#   with the running statistics of training; those were averaged over *noisy* activations, but `eval()` turns
#   the noise off, so they do not fit the clean net. Recomputed on clean data, the accuracy is 0.85–0.88 and the
#   clean training loss 0.37–0.41 (0.62–0.82 with the stale statistics). That is still below the clean plain
#   net (0.91) and BN (0.92–0.94): strong noise slows BN down. The plain net with the same noise diverges at
#   update 3 in every seed.
#
# So, **for mild noise**, distributions that stay put are not *necessary* for BN's benefit: a BN net whose
# layers see distributions jumping by 0.34 standard deviations every step, twice as far as the plain net's,
# ends about as accurate as BN without noise. With strong noise (0.72 per step) BN still trains where the plain net
# breaks, but it pays for it: a dose-response, not a clean "no effect". Why does the same noise break the plain
# net? A guess is that the noise multiplies each layer's signal by up to $r$ and, without normalization, those
# factors **compound** over ten layers, where BN undoes each layer's factor at the next one. That is a claim
# about the forward pass, so we measure it: the size of the logits at initialization with the strong noise over
# without it, with the noise in every layer and, as the control, in one layer only (20 noise draws per seed,
# the probe batch, training mode):

# %%
# NBVAL_CHECK_OUTPUT
settings = (("none", None, "every layer", (3, 7)), ("none", [1], "layer 1 only", (1.05, 1.4)),
            ("batch", None, "every layer", (1.1, 1.5)), ("batch", [1], "layer 1 only", (0.9, 1.1)),
            ("batch", [10], "layer 10 only", (1.1, 1.5)))
growth = [np.array([noise_growth(norm, layers, seed=seed).mean() for seed in (0, 1, 2)])
          for norm, layers, _, _ in settings]                                                  # about 1 s
print("logits RMS with the strong noise / without it, at initialization, per seed (mean over 20 draws):")
for (norm, _, where, bracket), values in zip(settings, growth):
    print(f"  {'BN   ' if norm == 'batch' else 'no BN'}, noise in {where:13s} {each_within(values, *bracket)}")

# %% [markdown]
# In the plain net one noisy layer changes the logits' size by a factor 1.1–1.3; ten noisy layers by 4–5, about
# the product of ten such factors: the noise **compounds** through depth. In the BN net, noise in layer 1 alone
# leaves the logits' size unchanged (0.95–1.01: the next BN removes it), and noise in every layer changes it by
# the same 1.2–1.3 as noise in the last layer alone: only the last layer's noise reaches the output. What BN
# protects against here is compounding through depth, not a moving distribution at one layer; sections 4 and 5
# meet compounding again.
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
print(f"BN / no BN, relative gradient change (seed means): {bracketed(ratio, 0.7, 1.3, digits=2)}: a bracket "
      f"that holds 1")
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
# - **BN does not remove it.** After initialization the two nets' per-seed medians overlap (BN 0.87–0.96, the
#   plain net 0.95–1.11), and so nearly do their cosines (BN 0.34–0.55, the plain net −0.01–0.39): with three seeds no difference between them is resolved
#   (the ratio's bracket holds 1). Both are in the same regime, far from $G' = G$; the right panel shows it in
#   every layer. The clear difference is at initialization, and it goes the other way: BN's is *larger* there
#   (1.33–1.41 of $\lVert G\rVert$ against 1.01–1.07). That fits Yang et al.'s (2019) mean-field theory of BN:
#   at initialization a deep BN net's gradients grow from layer to layer towards the input, so a step of the
#   layers below moves more. Santurkar et al. found, on VGG and deep linear nets, that BN does not reduce this
#   measure and can increase it; on this MLP it increases it at the start and is not distinguishable from the
#   plain net later. Either way, it does not look like the reason BN trains faster.
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
#   the gradient there. Divided by the distance moved, $\eta\lVert g\rVert$, it is a smoothness constant $K$
#   measured along $-g$: a loss is $K$-smooth when its gradient never changes by more than $K$ times the
#   distance moved (often written $\beta$; we keep $\beta$ for BN's shift).
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
# not smaller: at initialization BN's gradients grow with depth (Yang et al. 2019), and so does their change. A smoothness constant of a ReLU net only means something at a stated scale; we use the scale of
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
# plain net, the initialization: $\mathcal N(0, 0.15^2)$ in every layer and torch's default init (whose
# signal vanishes with depth, lecture 7). The Gaussian control is not "slightly larger than He": it is 1.06
# times He's $\sqrt{2/100} = 0.141$ in the hidden layers but three times He's $\sqrt{2/784} = 0.0505$ in layer
# 1, and since a ReLU net without biases is positively homogeneous, its logits start $2.97 \cdot 1.06^{10}
# \approx 5.4$ times larger than He's (printed below).
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

def each_above(values, low):
    """Large ratios, two significant digits each, each with its bracket."""
    return ", ".join(bracketed(v, low=low, digits=2) for v in values)

print("loss after one step / loss before, per seed (He init unless said):")
print(f"  no BN, depth 10: lr 0.1 {each_within(ratio_at('no BN, depth 10', 0.1), high=1)}; "
      f"lr 0.316 {each_within(ratio_at('no BN, depth 10', 0.316), low=1)}; "
      f"lr 1 {each_above(ratio_at('no BN, depth 10', 1.0), 10)}")
print(f"  no BN, depth 30: lr 0.01 {each_within(ratio_at('no BN, depth 30', 0.01), high=1.01)}; "
      f"lr 0.316 {each_above(ratio_at('no BN, depth 30', 0.316), 1)}; "
      f"lr 1 {each_above(ratio_at('no BN, depth 30', 1.0), 10)}")
def span(label, low=None, high=None, digits=3):
    """The smallest and largest ratio over every rate and seed of a setting, each with its bracket."""
    ratios = probes[label].ratio
    return (f"from {bracketed(ratios.min(), low=low, high=high, digits=digits)} to "
            f"{bracketed(ratios.max(), low=low, high=high, digits=digits)} over {ratios.size} rates x seeds")

print(f"  BN,    depth 10: {span('BN, depth 10', high=1.0)}")
print(f"  BN,    depth 30: {span('BN, depth 30', low=0.85, high=1.1)}")
gaussian = "no BN, depth 10, init N(0, 0.15²)"
print(f"  {gaussian}: lr 0.1 {each_within(ratio_at(gaussian, 0.1), low=10, digits=1)}; "
      f"lr 1 {each_above(ratio_at(gaussian, 1.0), 10)}")
print(f"  no BN, depth 10, default init: {span('no BN, depth 10, default init', low=0.98, high=1.0)}")
logits = np.array([initial_logit_rms(OneStepConfig(depth=10, init="gaussian", init_std=0.15, seed=seed))
                   / initial_logit_rms(OneStepConfig(depth=10, seed=seed)) for seed in (0, 1, 2)])
print(f"initial logits RMS, N(0, 0.15²) / He, per seed: {each_within(logits, 5, 6)}")
row = probes["no BN, depth 30"].lrs.index(0.316)
plain_growth, bn_growth = probes["no BN, depth 30"].growth[row], probes["BN, depth 30"].growth[row]
print("depth 30, lr 0.316, output RMS after / before the step, per seed:")
print(f"  no BN: layer 1 {each_within(plain_growth[:, 0], 1, 2)}; layer 30 "
      f"{each_above(plain_growth[:, -1], 5)}")
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
#   change by up to about 1.8 (right panel). Why the first layers' steps are the large ones: at initialization a
#   deep BN net's gradients grow from the output towards the input (Yang et al. 2019), so layer 1's $\gamma$ and
#   $\beta$ get the largest gradients.
# - **The controls.** The plain net is very sensitive to its init: $\mathcal N(0, 0.15^2)$, whose logits start
#   5.4 times He's, explodes already at $\eta = 0.1$ (ratio 15–41, where He init gives 0.52–0.97). Torch's default init
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
# nothing; **centring only** ($z - \mu_\mathcal B$); **scaling by the std**, $z/\sqrt{\sigma^2_\mathcal B + \epsilon}$
# without centring (BN's scaling as BN computes it, applied to an uncentred $z$); **scaling by the RMS**,
# $z/\sqrt{\overline{z^2}_\mathcal B + \epsilon}$ (the uncentred root-mean-square over the batch: Daneshmand et
# al.'s BN, $\operatorname{diag}(HH^\top)^{-1/2}H$ for $H$ of shape width × batch); both halves (BN at
# initialization, $\gamma = 1$, $\beta = 0$); or LayerNorm (each example over its own units). Same He-init
# weights in every case; the 1,000 test digits form the batch.
#
# Similarity can miss a collapse: vectors can have cosines near 0 and still lie in a few directions. So we also
# measure the **effective rank** of a layer's representation $H$ (1,000 × 100; Roy & Vetterli 2007): with
# singular values $s_i$ and $p_i = s_i/\sum_j s_j$,
#
# $$ \operatorname{erank}(H) = \exp\Big(-\sum_i p_i \ln p_i\Big), $$
#
# 1 when all examples lie on one line, 100 when all directions are equally used. Daneshmand et al. (2020)
# prove that their BN (the RMS scaling) keeps the rank of a deep *linear* net's representations **at least of
# order** $\sqrt{\text{width}}$, where without BN it collapses; so linear nets are the second setting. Their
# bound is on their own rank measure, not on the effective rank, so the dotted $\sqrt{100} = 10$ in the right
# panel is for orientation only, not their bound.
#
# **What to look for.** Which colours fall with depth, and in the right panel, which settings stay well above
# the others.

# %%
relu = {NORMALIZE_LABELS[n]: collapse_by_depth(n, "relu", depth=50) for n in NORMALIZATIONS}    # about 2 s
linear = {NORMALIZE_LABELS[n]: collapse_by_depth(n, "linear", depth=50)
          for n in ("none", "center", "scale", "rms", "batch")}
plot_collapse(relu, linear);

# %%
# NBVAL_CHECK_OUTPUT
def at(collapses, label, layer):
    return collapses[label].at(layer)

print("ReLU nets, layer 50, per seed: similarity of examples | effective rank")
for label, sim_bracket, rank_bracket in (("no norm", (0.95, None), (None, 6)), ("LayerNorm", (0.95, None), (None, 8)),
                                         ("centring only", (0.7, 0.9), (None, 25)),
                                         ("scaling by std", (0.65, 0.8), (35, 50)),
                                         ("scaling by RMS", (0.45, 0.62), (50, 65)), ("BN", (0.3, 0.4), (60, None))):
    similarity, rank = at(relu, label, 50)
    print(f"  {label:14s} {each_within(similarity, *sim_bracket, digits=3)} | {each_within(rank, *rank_bracket, digits=1)}")
similarity, _ = at(relu, "centring only", 10)
print(f"  centring only, layer 10: similarity {each_within(similarity, 0.3, 0.35, digits=3)} (1/pi = {1 / np.pi:.3f})")
print("linear nets, layer 50, effective rank per seed:")
for label, bracket in (("no norm", (None, 10)), ("centring only", (None, 10)), ("scaling by std", (10, None)),
                       ("scaling by RMS", (10, None)), ("BN", (10, None))):
    print(f"  {label:14s} {each_within(at(linear, label, 50)[1], *bracket, digits=1)}")
for label in ("scaling by std", "scaling by RMS"):
    scaled = at(linear, label, 50)[1].mean() / at(linear, "BN", 50)[1].mean()
    print(f"linear, {label} / BN (seed means): {bracketed(scaled, 0.9, 1.1, digits=3)}")

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
#   without scaling the rank decays after about layer 20 (7–17 at layer 50). **Scaling** alone holds the rank
#   up but lets the similarity sit high (the ReLU's common positive part is never removed), and how much
#   depends on how one scales: by the std (BN's way, on an uncentred input) rank 44 and similarity 0.71–0.73;
#   by the RMS (Daneshmand et al.'s way) rank 56–59 and similarity 0.52–0.55. Only both halves together stay
#   high on both measures. In the linear nets, where there is no ReLU to add a common part, **scaling alone
#   does all of it**, either way: its rank equals BN's (16–18), and centring alone is no better than nothing
#   (6–7). That is the setting of Daneshmand et al.'s theorem; our effective ranks are of the order their
#   bound names, but the bound itself is on another rank measure.
#
# These are measurements at initialization. How much a collapsed start matters for training depends on the
# step size and the budget; lecture 7's LayerNorm control is the example to keep in mind.
#
# ## What the papers claim, and what we reproduce
#
# | claim | source | here |
# |---|---|---|
# | BN with noise that moves the distributions every step still trains about as well as BN, better than no BN | Santurkar et al. 2018, Sec. 2.1 | **for mild noise**: BN reaches about its own and the plain net's test accuracy (0.90–0.93; 0.92–0.93 with recomputed statistics) while the same noise drops the plain net to 0.61–0.72. **Strong noise costs BN**: 0.72–0.75 with the running statistics of training, 0.85–0.88 with statistics recomputed on clean data, below the clean plain net's 0.91; the plain net diverges. Noise on, the training loss doubles (mild) or quadruples (strong) at 300 updates |
# | BN does not reduce internal covariate shift measured through gradients | Santurkar et al. 2018, Sec. 2.2 | **reproduced in kind**: in both nets the layers below change a layer's gradient by about its own size; after initialization no difference between them is resolved with 3 seeds; at initialization BN's is larger (1.33–1.41 against 1.01–1.07) |
# | BN makes the loss and its gradient change less along the gradient | Santurkar et al. 2018, Sec. 3.1 | **reproduced at the scale of SGD steps**: loss range about 9× and gradient change about 4× smaller; the difference comes from steps above the training rate; at tiny steps BN is not smoother (tanh: about twice the constant) and a ReLU net has no constant |
# | without BN one large step from initialization makes the loss explode, more so with depth; activations grow layer by layer | Bjorck et al. 2018, Sec. 3 | **reproduced**: up to $10^{10}$ at depth 30 and $\eta = 1$; last-layer output 11–2,000× larger after one step of 0.316; with BN about 1 |
# | BN (their BN: scaling by the uncentred RMS) keeps the rank of deep linear nets' representations at least of order $\sqrt{\text{width}}$ | Daneshmand et al. 2020 | **reproduced in kind** (effective rank, not their rank measure): at layer 50 about 68 with BN against 2–5 without or with LayerNorm (ReLU); linear nets 17 against 6, and the scaling half alone (by RMS or std) does it |
# | noisy BN trains (training loss 0.1–0.3) while the plain net is stuck at 2.30 | values measured with torch's default init, a setting this lecture does not use | **different setting**: that plain net (default init) does not train even without noise. Against the He-init plain net, noisy BN ends at 0.36 (mild) and 0.75–0.82 (strong) noise on, 0.13–0.15 and 0.37–0.41 noise off with recomputed statistics |
# | landscape: loss range 36×, gradient change 6.6× smaller with BN | values measured at depth 6 | **smaller factors here** (depth 10, $\eta \le 0.4$): about 9× and 4× |
# | one step, no BN: loss ratio 19.6 at $\eta = 0.1$, $2\cdot 10^7$ at 1 (depth 10), $10^{11}$ at 0.01 (depth 30) | values measured with another init | **depends on the init**: with He init 0.52–0.97, 68–3,500 and 0.73–1.00; the first is close to what $\mathcal N(0, 0.15^2)$ gives (15–41) |
#
# Caveats: one architecture (a 10-layer MLP of width 100, 30 and 50 layers at initialization), 300 updates,
# three seeds, and a noise of our own design. The runs cannot rank the explanations against each other: each
# measurement shows one property that BN has and its control lacks.
#
# ## Summary
#
# - **Stable distributions are not necessary, for mild noise.** Noise after BN that moves every layer's input by
#   0.34 standard deviations per step (twice the plain net's move) leaves BN's test accuracy where it was; the
#   same noise breaks the plain net, because without normalization the noise compounds through the layers
#   (logits 4–5 times larger at initialization, 1.1–1.3 with one noisy layer). Strong noise (0.72 per step)
#   does cost BN: 0.85–0.88 test accuracy even with its statistics recomputed on clean data, and 0.72–0.75 with
#   the running statistics of noisy training, which no longer fit the clean net.
# - **Internal covariate shift through gradients** is large with and without BN: the layers below change a
#   layer's gradient by about its own size at every step. After initialization, three seeds resolve no
#   difference between the two nets; at initialization BN's is larger.
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
#    $\mathbb E[r^{-u}] = (r - 1/r)/(2\ln r)$ for $u \sim \mathcal U(-1, 1)$. Why does the measured move of the
#    noisy BN net match the noise alone so well, although $\gamma$ and $\beta$ are learned?
# 2. Our noise is the same for every example of a step. Santurkar et al. also perturb each example separately.
#    Which of the two changes the minibatch statistics that the *next* BN layer computes, and which would you
#    expect to hurt BN more? Test your guess in this notebook: write your own forward pre-hook that draws one
#    $(b, c)$ per example, register it on each `model.hidden_layers[i].activation` of a net from
#    `bnlab.models.build_mlp`, and train it with `bnlab.train.train`.
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
# Next: [Lecture 12 — batch norm in practice](12_in_practice.ipynb).
