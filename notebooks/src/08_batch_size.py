# %% [markdown]
# # Lecture 8 — Experiment: batch size, and the batch that normalizes
#
# **Learning goals.** After this lecture you can
# 1. separate the two batch sizes hidden in "batch size": the **SGD batch** $B$ (examples per update) and the
#    **normalization batch** $g$ (examples whose statistics one batch-norm call shares), and vary one with
#    the other held fixed (ghost batch norm);
# 2. read off the data where BN stops working as $g$ shrinks, while LayerNorm and GroupNorm do not move;
# 3. tell a **training failure** from a **test-time mismatch**, with the training loss and two ways of testing;
# 4. derive what a normalization batch of two does to the gradient (its Jacobian) and measure what follows in
#    the network: a gradient made of rare spikes, and weights that blow up until the layer hardly moves;
# 5. explain why forgetting `eval()` hurts most when the test batches are small;
# 6. say what comparing SGD batches "at equal updates" and "at equal epochs" each test, and what this
#    lecture's grid can and cannot say about Hoffer et al. (2017).
#
# **Prerequisites.** [Lecture 2](02_forward_pass.ipynb) (batch statistics; a batch of two gives $\pm 1$),
# [lecture 4](04_closed_form.ipynb) (the Jacobian of batch norm and its eigenvalues),
# [lecture 5](05_inference.ipynb) (running statistics and `eval()`), [lecture 7](07_depth.ipynb) (how the
# experiment figures show seeds).
#
# **The setting.** The 4,000/1,000 MNIST subset; a 3×100 ReLU MLP with the normalization before each ReLU;
# plain SGD (no momentum, no weight decay) with learning rate $\eta = 0.1$ at **every** batch size, 600
# updates; three seeds (each draws the weights and the minibatch order). **Varied:** the normalization batch
# $g \in \{2, 4, \dots, B\}$ (the figures, the dashboard's too, call it **NBS**, normalization batch size:
# NBS 2 is $g = 2$), the SGD batch $B \in \{16, 64, 128, 256\}$, and the normalization (BN, LayerNorm,
# GroupNorm). **Held fixed:** everything else, including $\eta$ and the number of updates (so a larger $B$ sees
# more data). Every accuracy and loss below comes from runs that ship with the course; section 2 trains one
# seed of two settings again (about 7 s) to record what the shipped runs do not keep (weight and gradient
# norms).
#
# **Ghost batch norm** (Hoffer et al. 2017) cuts each SGD batch into $B/g$ consecutive normalization batches
# of $g$ examples and normalizes each with its own mean and (biased) variance:
#
# $$\hat x_i = \frac{x_i - \mu_{G(i)}}{\sqrt{\sigma^2_{G(i)} + \epsilon}}, \qquad
# \mu_G = \frac{1}{g}\sum_{j \in G} x_j, \qquad \sigma^2_G = \frac1g \sum_{j\in G}(x_j - \mu_G)^2 ,$$
#
# one feature at a time, where $G(i)$ is the normalization batch holding example $i$; with $g = B$ it is
# ordinary batch norm. The gradient is still that of the whole SGD batch. **LayerNorm** normalizes each example
# over its own 100 units, **GroupNorm** over groups of units of one example: here 25 groups of 4 units. Neither
# looks at another example, so neither has a normalization batch.
#
# **Two ways to test a BN network.** With population statistics (`eval()`, lecture 5), the right way; and with
# each test batch's own statistics (training mode, as a network that forgot `eval()`), in test batches of $g$.

# %%
import numpy as np

import bnlab.notebook
from bnlab.experiments import BatchSizeConfig, nbs_by_sgd_batch, norm_batch_size_sweep, sgd_batch_size_sweep
from bnlab.lessons.batch_size import (accuracy_after_examples, bn_jacobian, final_train_loss,
                                      first_update_norm, gap_to_other_sgd_batches, gradient_at_init,
                                      late_loss_peak, own_statistics_accuracy, pair_gain, pooled_range,
                                      relative_steps, retrain)
from bnlab.plots.batch_size import (plot_batch_size_sweep, plot_equal_examples, plot_nbs_by_sgd_batch,
                                    plot_norm_batch_size, plot_pair_gradients)
from bnlab.report import bracketed, each_within, within
from bnlab.widgets import BatchSizeDashboard

bnlab.notebook.setup()
bn, others = norm_batch_size_sweep(batch_size=128, cached_only=True)  # {g: runs}, {"LayerNorm": runs, ...}
by_batch = nbs_by_sgd_batch(cached_only=True)                         # {B: {g: runs}}

# %% [markdown]
# ## 1. The normalization batch, with the SGD batch fixed at 128
#
# **What to look for.** Left: BN tested with population statistics (solid) and with each test batch's own
# statistics (dashed), against $g$; LayerNorm and GroupNorm as flat lines (one per seed: they have no $g$).
# Middle: the training loss at the end of training, measured in training mode, that is on the network SGD
# actually optimized. Right: the training loss during training at $g = 2$ (solid) and, as the control, at
# $g = 128$ (dashed, ordinary BN); the thin green and purple lines are LayerNorm's and GroupNorm's seeds, a
# second control that has no $g$. In the middle panel, look at where the loss starts to rise: before or with
# the accuracy?

# %%
plot_norm_batch_size(bn, others, batch_size=128, selected=2, test_statistics="both");

# %%
# NBVAL_CHECK_OUTPUT
population, own = bn[2].final_accuracies(), bn[2].values("batch_stats_accuracy")
print(f"g = 2, population statistics (eval()):     {each_within(population, 0.4, 0.7, digits=3)}")
print(f"g = 2, each test batch's own statistics:   {each_within(own, high=0.45, digits=3)}")
print(f"g = 2, population minus own, per seed:     {each_within(population - own, low=0.1, digits=3)}")
whole_batch = bn[128].final_accuracies() - bn[128].values("batch_stats_accuracy")
print(f"g = 128, population minus own, per seed:   {each_within(whole_batch, -0.02, 0.02, digits=3)}")
print(f"g = 4:                                     {each_within(bn[4].final_accuracies(), 0.9, 0.95, digits=3)}")
low, high = pooled_range(bn[g] for g in bn if g >= 8)
print(f"g = 8 to 128 (15 runs):                    {low:.3f} to {high:.3f}; lowest {bracketed(low, 0.94)}")
print(f"LayerNorm:                                 {each_within(others['LayerNorm'].final_accuracies(), 0.93, digits=3)}")
print(f"GroupNorm (25 groups of 4 units):          {each_within(others['GroupNorm'].final_accuracies(), 0.93, digits=3)}")
print(f"training loss at the end, g = 2:           {each_within(final_train_loss(bn[2]), low=1.5)}; "
      f"a constant guess scores ln 10 = {np.log(10):.2f}")
print(f"training loss at the end, g = 128:         {each_within(final_train_loss(bn[128]), high=0.02, digits=4)}")

# %% [markdown]
# What to notice:
#
# - BN is at LayerNorm's and GroupNorm's level from $g = 8$ on, a little below at $g = 4$, and collapses at
#   $g = 2$, to about half the digits right. LayerNorm and GroupNorm never look across examples: nothing about
#   them depends on $g$.
# - **The collapse is a training failure.** At $g = 2$ the loss SGD minimized ends at 1.86–1.93, not far below
#   the 2.30 of a constant guess, against 0.005–0.006 at $g = 128$; it stops improving after about 150
#   updates (right panel). The network never fit its training data in the mode it was trained in.
# - **It is not a test-time mismatch.** If the population statistics were the problem (running averages that
#   describe a network never run with them), testing the network in the mode it was trained in, each test pair
#   normalized by its own statistics, would do better. It does worse in every seed (0.31–0.35 against
#   0.51–0.63). At $g = 128$ the two ways of testing agree (the dashed line meets the solid one).
#
# ### The training loss rises long before the accuracy falls
#
# The middle panel does not stay flat until $g = 2$: at $g = 8$ the training loss is already far above
# $g = 128$'s, with the same test accuracy. And in the right panel one GroupNorm seed has a late spike.

# %%
# NBVAL_CHECK_OUTPUT
loss_8, loss_128 = final_train_loss(bn[8]), final_train_loss(bn[128])
print(f"training loss at the end, g = 8:  {each_within(loss_8, 0.1, 0.25)}; "
      f"g = 8 / g = 128, seed means {bracketed(loss_8.mean() / loss_128.mean(), 10, 100, digits=2)}")
own_8 = bn[8].values("batch_stats_accuracy")
print(f"g = 8, test accuracy with each test batch's own statistics: {each_within(own_8, 0.85, 0.9, digits=3)}; "
      f"with population statistics {each_within(bn[8].final_accuracies(), 0.94, digits=3)}")
late_ln, late_gn = late_loss_peak(others["LayerNorm"], 300), late_loss_peak(others["GroupNorm"], 300)
print(f"largest training loss after update 300: LayerNorm {each_within(late_ln, high=0.05)}; "
      f"GroupNorm {each_within(late_gn, high=0.3)}")
print(f"GroupNorm, training loss at the end: {each_within(final_train_loss(others['GroupNorm']), high=0.1, digits=3)}")

# %% [markdown]
# - **The training loss includes the noise of the statistics.** It is measured in training mode, where each
#   example is normalized together with $g - 1$ others drawn at random; at $g = 8$ that is a noisier network
#   than the one `eval()` tests, and its loss ends at 0.16, about 30 times $g = 128$'s. The dashed curve of the
#   left panel measures the same noise on the test digits: the $g = 8$ networks, tested in batches of 8 with
#   their own statistics, get 0.87–0.89 instead of 0.95. Population statistics remove that noise at test time,
#   so the test accuracy stays level down to $g = 8$. At $g = 2$ they do not help enough: the network itself
#   is bad, about half the digits right even with population statistics.
# - **LayerNorm and GroupNorm** come down steadily (right panel), except one GroupNorm seed: its loss spikes to
#   0.24 near update 550 and is back at 0.08 at the end, with the lowest of GroupNorm's three test accuracies
#   (0.936). One unstable stretch of SGD at $\eta = 0.1$ that the seed recovers from; three seeds cannot say how
#   often that happens.
#
# What goes wrong at $g = 2$ happens during training. The next section looks at what a pair does to the
# gradient.
#
# ## 2. What a normalization batch of two does to the gradient
#
# Take one feature and one normalization batch of $m$ examples, $s = \sqrt{\sigma^2 + \epsilon}$. Lecture 4
# derived the Jacobian of the normalization and its eigenvalues:
#
# $$\frac{\partial \hat x}{\partial x} = \frac1s\Big(I - \tfrac1m \mathbf 1\mathbf 1^\top
#   - \tfrac1m \hat x\hat x^\top\Big) : \qquad
#   0 \text{ along } \mathbf 1, \qquad \frac{\epsilon}{s^3} \text{ along } \hat x, \qquad
#   \frac1s \text{ on the other } m - 2 \text{ directions.}$$
#
# The gradient reaching the layer below passes through this matrix. At $m = 2$ there are no "other
# directions": only the $\epsilon$-sized eigenvalue is left. With the gap $u = x_1 - x_2$ between the two
# examples, $\sigma^2 = u^2/4$, the outputs are $\hat x = \pm\, u/\sqrt{u^2 + 4\epsilon}$ (that is $\pm 1$ up
# to $\epsilon$, lecture 2), and the one gain left is
#
# $$\frac{\epsilon}{s^3} = \frac{8\,\epsilon}{(u^2 + 4\epsilon)^{3/2}} \approx
# \begin{cases} 1/\sqrt{\epsilon} \approx 316 & |u| \ll 2\sqrt\epsilon \quad\text{(a near tie)},\\[2pt]
#               8\,\epsilon/|u|^3 & |u| \gg 2\sqrt\epsilon .\end{cases}$$
#
# A pair's output is a step function of the gap, smoothed over a width of $2\sqrt\epsilon \approx 0.006$:
# it passes back almost nothing from a pair that is clearly ordered, and up to $1/\sqrt\epsilon \approx 316$
# from a pair that nearly ties, whatever the scale of its inputs. The statistics of a pair are as noisy as
# statistics can be: the mean is the midpoint of two values and the standard deviation half their distance.
#
# A check of the formula against torch's autograd, at a typical gap of this network (0.45, measured below), at
# a near tie, and for larger $m$ (where $m - 2$ singular values equal $1/s$):

# %%
# NBVAL_CHECK_OUTPUT
for gap in (0.45, 0.002):
    singular = np.linalg.svd(bn_jacobian(np.array([0.0, gap])), compute_uv=False)
    print(f"m = 2, gap {gap:<5}: largest singular value {singular[0]:.3g}, formula 8 eps/(u^2+4 eps)^1.5 "
          f"{pair_gain(gap):.3g} (rel. difference {within(singular[0] / pair_gain(gap) - 1, 1e-8, floor=1e-10)}); "
          f"the other {within(singular[1], 1e-8, floor=1e-10)}")
rng = np.random.default_rng(0)
for m in (3, 4, 8):
    x = rng.standard_normal(m)
    singular = np.linalg.svd(bn_jacobian(x), compute_uv=False) * np.sqrt(x.var() + 1e-5)
    print(f"m = {m}: singular values equal to 1/s: {np.sum(np.abs(singular - 1) < 1e-9)} (m - 2 = {m - 2})")

# %% [markdown]
# ### What that does to the network
#
# Batch norm also makes the layer under it scale-invariant (lecture 4's last section, lecture 9):
# $\mathrm{BN}(aWx) = \mathrm{BN}(Wx)$, so the gradient is orthogonal to $W$ up to $\epsilon$, and one SGD step
# can only grow the weights:
#
# $$\lVert W - \eta \nabla_W L\rVert^2 = \lVert W\rVert^2 + \eta^2 \lVert \nabla_W L\rVert^2 .$$
#
# "Up to $\epsilon$" needs a second look here, because the near ties where the gradient lives are exactly where
# $\epsilon$ is not small against $\sigma^2$. Take one unit with weight row $w$ and one pair: the loss depends on
# the pair only through the gap $u = z_1 - z_2 = \langle w, x_1 - x_2\rangle$, so the pair's gradient is
#
# $$\nabla_w L = \frac{\partial L}{\partial u}\,(x_1 - x_2), \qquad
#   \langle w, \nabla_w L\rangle = \frac{\partial L}{\partial u}\, u ,$$
#
# and its cosine with $w$ is $u / (\lVert w\rVert\,\lVert x_1 - x_2\rVert)$. The pairs that send large gradients
# are those with $u$ near 0, and the same small $u$ makes their gradient nearly orthogonal to $w$. So the
# picture holds at $g = 2$ too; the cosine is measured below.
#
# A large weight norm in turn shrinks every later step's effect on the layer's direction, roughly as
# $\eta/\lVert W\rVert^2$ (the *effective learning rate*, lecture 9).
#
# Below, the untrained network of seed 0 computes its gradient on its first training batch, at
# $g = 2, 4, 16$ and 128; and seed 0 is trained again at $g = 2$ and 128, recording the weight norms (the same
# runs as the shipped ones, update for update).
#
# **What to look for.** Left: at $g = 2$, each dot is one example and unit of layer 1, placed by the gap to its
# partner and the gradient it receives; the gray band is where 90% of the entries lie at $g = 128$. Middle:
# how much of the squared gradient the largest entries carry (a curve near the top left: a gradient made of a
# few spikes). Right: the norm of layer 1's weights during training.

# %%
at_init = {g: gradient_at_init(BatchSizeConfig(norm_batch_size=g)) for g in (2, 4, 16, 128)}
trained = {g: retrain(BatchSizeConfig(norm_batch_size=g)) for g in (2, 128)}   # {g: (result, model)}, ~7 s
plot_pair_gradients(at_init, {g: result for g, (result, _) in trained.items()});

# %%
# NBVAL_CHECK_OUTPUT
pair, whole = at_init[2], at_init[128]
print(f"layer 1 at init, gradient norm: g = 2 {pair.weight_grad[0]:.0f}, g = 4 {at_init[4].weight_grad[0]:.1f}, "
      f"g = 128 {whole.weight_grad[0]:.2f}; ratio g = 2 / g = 128 "
      f"{bracketed(pair.weight_grad[0] / whole.weight_grad[0], 30)}")
median_pair, median_whole = np.median(np.abs(pair.pre_norm_grad)), np.median(np.abs(whole.pre_norm_grad))
print(f"median |dL/dz| over entries: g = 2 {median_pair:.1e}, g = 128 {median_whole:.1e}; ratio "
      f"{bracketed(median_pair / median_whole, high=0.05, digits=2)}")
print(f"share of the squared gradient in the largest 1% of entries: g = 2 {bracketed(pair.top_share(), 0.9)}, "
      f"g = 128 {bracketed(whole.top_share(), high=0.3)}")
print(f"... in the largest 0.1%: g = 4 {bracketed(at_init[4].top_share(0.001), 0.3)}, "
      f"g = 128 {bracketed(whole.top_share(0.001), high=0.1)}")
print(f"g = 2, median gap to the partner: of those 1% {pair.top_gap():.4f} = "
      f"{bracketed(pair.top_gap() / np.sqrt(1e-5), 0.5, 5, digits=2)} sqrt(eps); of all entries "
      f"{pair.typical_gap():.2f}, {bracketed(pair.typical_gap() / pair.top_gap(), 30, digits=2)} times more")
result = trained[2][0]
predicted = first_update_norm(pair.weight_norm[0], pair.weight_grad[0], pair.lr)
print(f"cosine between W1 and its gradient at init: g = 2 {within(pair.weight_cosine[0], 1e-3, floor=1e-6)}, "
      f"g = 128 {within(whole.weight_cosine[0], 1e-3, floor=1e-6)}")
print(f"g = 2, ||W1|| after update 1: {result.weight_norms[1, 0]:.2f}; sqrt(||W1||^2 + (lr ||grad||)^2) = "
      f"{predicted:.2f} (rel. difference {within(result.weight_norms[1, 0] / predicted - 1, 1e-3, floor=1e-4)})")
for g, (run, _) in trained.items():
    growth = run.weight_norms[-1, 0] / run.weight_norms[0, 0]
    checked = bracketed(growth, 30) if g == 2 else bracketed(growth, high=1.2)
    print(f"g = {g:3d}, ||W1|| at update 600 / at init: {checked}; effective learning rate shrunk by {growth ** 2:.3g}")
moves = {g: float(np.median(relative_steps(run, pair.lr, after=100))) for g, (run, _) in trained.items()}
print(f"one step's size relative to ||W1||, lr ||grad|| / ||W1||, median of the records at updates 200-600: "
      f"g = 2 {moves[2]:.1e}, g = 128 {moves[128]:.1e}; ratio {bracketed(moves[2] / moves[128], high=0.05, digits=1)}")
shipped = max(abs(run.test_accuracy[-1] - bn[g].final_accuracies()[0]) for g, (run, _) in trained.items())
print(f"retrained seed 0 vs the shipped seed 0, final test accuracy: max |difference| {within(shipped, 1e-12)}")

# %% [markdown]
# What to notice:
#
# - **The gradient is made of spikes.** At $g = 2$ a few entries near a tie receive gradients of order 1
#   and more, while the median entry gets about a hundredth of what it gets at $g = 128$, below the gray band.
#   One percent of the entries, with gaps of about $2\sqrt\epsilon$, carry nearly all of layer 1's squared
#   gradient; at $g = 128$ its largest one percent carries about a sixth. The gradient norm itself is over a
#   hundred times larger than at $g = 128$, and its direction is set by whichever pairs happened to nearly tie
#   in the batch.
# - **The weights blow up.** The first update alone is a step of $\eta\lVert\nabla\rVert \approx 39$ on a
#   weight matrix of norm 5.8, orthogonal to it (cosine below $10^{-4}$, as the pair argument above says), and
#   the norm jumps as Pythagoras says. Later spikes (around update 100–200) push layer 1 to more than a hundred
#   times its initial norm; at $g = 128$ it hardly changes.
# - **Then the layer hardly moves.** From update 200 on, a step changes layer 1 by a few $10^{-5}$ of its size
#   (median over the records; single records range widely, the gradient being spiky), against about
#   $10^{-2}$ at $g = 128$, where the loss is already down to 0.006. That is consistent with an effective
#   learning rate $\eta/\lVert W\rVert^2$ down by a factor of about ten thousand.
# - So at $g = 2$ two things go wrong at once. The hidden layers are trained by a signal that is zero almost
#   everywhere and huge at rare near ties, and these spikes inflate the weights until the layers hardly move.
#   And what a layer passes on in training says only which of two examples was larger, against a partner that
#   changes from batch to batch. The training loss stays at 1.9. **These runs do not tell which of the two
#   stops training**; question 4 asks for the control that would.
# - $g = 4$ is in between (middle panel): at $m = 4$ two directions pass back the normal gain $1/s$, but
#   about half of the squared gradient still comes from the largest 0.1% of the entries (a dozen of them),
#   most likely from batches of 4 whose values nearly coincide, where $s$ is small and the gain $1/s$ large.
#
# ## 3. Forgetting `eval()` is worst when the test batches are small
#
# A network trained with $g = 128$ (seed 0, trained above) is tested in training mode, in test batches of $t$
# examples, each normalized by its own statistics, against the right answer with `eval()`:

# %%
# NBVAL_CHECK_OUTPUT
result, model = trained[128]
forgot = own_statistics_accuracy(model, (2, 4, 8, 16, 32, 128, 1000))
print(f"eval() (population statistics): {result.test_accuracy[-1]:.3f}")
print("training mode, test batches of t: " + ", ".join(f"t={t}: {a:.3f}" for t, a in forgot.items()))
print(f"at t = 2 {bracketed(forgot[2], high=0.5)}; at t = 1000, |difference from eval()| "
      f"{bracketed(abs(forgot[1000] - result.test_accuracy[-1]), high=0.01, digits=2)}")

# %% [markdown]
# The same network, the same test digits: only the company each digit is normalized with changes. In batches
# of 1,000 the batch statistics are close to the population's and nothing is lost; in pairs every unit becomes
# a comparison with one random other digit, which this network never saw in training, and fewer than half of
# the digits are classified right. (A test batch of one cannot be normalized at all in training mode.) The left
# panel of section 1 shows the matched case, where each network is tested in batches of its own $g$.
#
# ## 4. Does the SGD batch matter?
#
# The collapse at $g = 2$ could be a property of the SGD batch of 128. The shipped grid has the normalization
# batch sweep at every SGD batch: same 600 updates, same $\eta$.
#
# **What to look for.** Whether the lines (one shade of blue per SGD batch, light = small) fall at $g = 2$ for
# every $B$, and whether the training loss there is high for every $B$.

# %%
plot_nbs_by_sgd_batch(by_batch);

# %%
# NBVAL_CHECK_OUTPUT
for batch_size, runs in by_batch.items():
    accuracy = each_within(runs[2].final_accuracies(), high=0.7, digits=3)
    print(f"SGD batch {batch_size:3d}, g = 2: test accuracy {accuracy}; "
          f"training loss {each_within(final_train_loss(runs[2]), low=1.5)}")
lowest_g4 = min(runs[4].final_accuracies().min() for runs in by_batch.values())
print(f"g = 4 at every SGD batch: lowest seed {bracketed(lowest_g4, 0.85)}")
behind = gap_to_other_sgd_batches(by_batch, 16)
print(f"SGD batch 16 minus the lowest other SGD batch, seed means, at g = {', '.join(map(str, behind))}: "
      f"{each_within(list(behind.values()), high=0.0, digits=3)}")

# %% [markdown]
# The collapse at $g = 2$ is there at every SGD batch, with a training loss near 2 each time; $g = 4$ trains
# at every SGD batch. It is the normalization batch, not the SGD batch, that breaks BN. The SGD batch still
# moves the numbers: the smallest, 16, is behind every other SGD batch at every $g$, by about 0.01 at $g = 16$
# and more the smaller $g$ is, 0.05 at $g = 2$ (seed means, against the next lowest), where its seeds reach
# 0.39–0.48 against 0.51–0.63 at $B = 128$. In 600 updates it sees the least data (next section).
#
# ## 5. The SGD batch: equal updates or equal epochs
#
# Comparing SGD batch sizes needs a decision about what to hold fixed. **Equal updates** (the shipped grid:
# 600 each) gives a batch of 256 sixteen times the data of a batch of 16. **Equal epochs** (equal examples
# seen) gives the large batch fewer updates. Hoffer et al. (2017) argue that the "generalization gap" of large
# batches comes from making fewer updates, not from the batch size itself (train longer and it closes), and
# propose ghost batch norm (a small $g$ inside a large $B$), used with a learning rate scaled by $\sqrt{B}$, to
# shrink the gap *without* more updates, that is at equal epochs.
#
# The grid cannot run new settings here, but it can answer at equal epochs too: with a constant learning rate
# and no momentum, the network at update $s$ of a 600-update run *is* the network of an $s$-update run, and the
# test accuracy is recorded every 50 updates. So a batch of 64 after 200 updates, 128 after 100 and 256 after 50
# have all seen 12,800 examples (3.2 epochs of the 4,000 training digits), and 64 after 600, 256 after 150 have
# seen 38,400 (9.6 epochs).
#
# **What to look for.** First, the final accuracy at equal updates against $B$ for all methods (solid blue: BN
# with $g = B$; dashed: BN with $g = 16$). Then BN during training, against updates (left) and against
# examples seen (right): at equal examples, read vertically along the dotted lines; the dashed curve is ghost
# BN with $g = 16$ inside $B = 256$.

# %%
plot_batch_size_sweep(sgd_batch_size_sweep(cached_only=True));

# %%
plain = {b: runs[b] for b, runs in by_batch.items()}       # BN with g = B
ghost = {256: by_batch[256][16]}                           # BN with g = 16 inside B = 256
plot_equal_examples(plain, ghost, ghost_nbs=16);

# %%
# NBVAL_CHECK_OUTPUT
small, large, ghosted = plain[16].final_accuracies(), plain[256].final_accuracies(), ghost[256].final_accuracies()
print("equal updates (600):")
print(f"  B = 16 (g = 16): {each_within(small, 0.9, digits=3)}   B = 256 (g = 256): {each_within(large, 0.9, digits=3)}")
print(f"  B = 256 minus B = 16, seed means: {bracketed(large.mean() - small.mean(), 0.0, digits=2)}")
print(f"  B = 256 with g = 16 (ghost): {each_within(ghosted, 0.9, digits=3)}; ghost minus g = 256: "
      f"{bracketed(ghosted.mean() - large.mean(), -0.01, 0.01, digits=1)}")
for examples, gap_bracket in ((12_800, (0.01, 0.03)), (38_400, (0.0, 0.015))):
    moderate = accuracy_after_examples(plain[64], 64, examples)
    big = accuracy_after_examples(plain[256], 256, examples)
    ghosted_big = accuracy_after_examples(ghost[256], 256, examples)
    print(f"equal examples, {examples:,} ({examples / 4000:.1f} epochs):")
    print(f"  B = 64 ({examples // 64} updates): {each_within(moderate, 0.9, digits=3)}   "
          f"B = 256 ({examples // 256} updates): {each_within(big, 0.9, digits=3)}")
    print(f"  B = 64 minus B = 256, seed means: {bracketed(moderate.mean() - big.mean(), *gap_bracket, digits=2)}")
    print(f"  B = 256 with g = 16 (ghost): {each_within(ghosted_big, 0.9, digits=3)}; ghost minus g = 256: "
          f"{bracketed(ghosted_big.mean() - big.mean(), high=0.005, digits=1)}")

# %% [markdown]
# What to notice:
#
# - **At equal updates there is no large-batch gap** here: $B = 256$ ends about 0.01 *above* $B = 16$, which
#   has seen a sixteenth of the data. In the first figure BN is flat from $B = 64$ on, and LayerNorm and
#   GroupNorm lose most at $B = 16$.
# - **At equal epochs the large batch is behind**, by about 0.02 after 3.2 epochs (50 updates against 200) and
#   by less than 0.01 after 9.6 (150 against 600). The gap shrinks as training goes on, which fits Hoffer et
#   al.'s reading that it is a shortage of updates.
# - **Ghost batch norm does not close it here.** With $g = 16$ inside $B = 256$ the accuracy is no better
#   than with $g = 256$, at equal updates or at equal epochs; if anything a little worse early on. That is not a
#   test of Hoffer et al.'s claim in their setting: they train for many epochs (MNIST, CIFAR and ImageNet
#   models), with the learning rate scaled by $\sqrt{B}$ and ghost batch norm as one part of a recipe. Here
#   $\eta$ is the same at every $B$ and the runs are short. What the data show is narrower: in this MLP, at
#   these budgets, a smaller normalization batch does not make a large SGD batch learn faster.
#
# ## Your turn: the dashboard
#
# The sliders choose the normalization batch and the SGD batch; the toggle chooses how BN is tested. Every
# combination of the sliders is precomputed (a normalization batch larger than the SGD batch is impossible, and
# the dashboard says so instead of drawing). The figure is the one of section 1, at the chosen SGD batch.
#
# Things to try, predicting first:
#
# 1. Move the normalization batch to 2, then flip **BN at test time** to *batch*. The blue curve switches to
#    the accuracy of each test batch's own statistics (*both* draws the two together); where does it meet the
#    population curve?
# 2. With $g = 2$, move the SGD batch from 16 to 256. Does the training loss at $g = 2$ (middle panel) ever come
#    down?
# 3. **Pin** the SGD batch 128 setting, then move to 16: the pinned curve stays in black (tested with the
#    statistics its legend entry names). At which $g$ do the two differ most?

# %%
dashboard = BatchSizeDashboard()
dashboard

# %% [markdown]
# ## What the papers claim, and what we reproduce
#
# | claim | source | here |
# |---|---|---|
# | BN's error grows sharply when the batch per device is small (ResNet-50 on ImageNet: 23.6% at 32 images per GPU, 34.7% at 2), while GroupNorm stays at about 24.1% | Wu & He 2018, fig. 1 (the paper's numbers) | **partly**: the same shape on an MLP (BN 0.51–0.63 at $g = 2$, at least 0.947 from $g = 8$; LayerNorm and GroupNorm flat at 0.936–0.957). Our GroupNorm normalizes 25 groups of 4 units of one example (4 numbers per group); theirs normalizes groups of channels over all spatial positions of a conv layer, thousands of numbers. Model, data and budget differ |
# | with a batch of two, BN's outputs are $\pm 1$ | lecture 2; a consequence of Ioffe & Szegedy 2015, Alg. 1 | **reproduced exactly**, and its backward: the Jacobian keeps only the $\epsilon$-sized gain $8\epsilon/(u^2+4\epsilon)^{3/2}$ |
# | BN fails at a normalization batch of 2 whatever the SGD batch (measured here with ghost batch norm, Hoffer et al. 2017, as the tool that sets the two apart) | course reference (bn-facts: NBS 2 fails at every SGD batch from 16 to 256) | **reproduced**: at a fixed SGD batch, $g$ alone moves BN from about half the digits to 0.95; $g = 2$ fails at every SGD batch from 16 to 256 (0.39–0.63), with a training loss near 2 |
# | the large-batch gap comes from fewer updates, not from the batch size | Hoffer et al. 2017 | **partly**: no gap at equal updates; at equal epochs the large batch is behind by about 0.02 after 3.2 epochs, less than 0.01 after 9.6. Short runs, one learning rate, no convergence |
# | ghost batch norm reduces the large-batch gap without more updates | Hoffer et al. 2017 | **not reproduced in this setting** (not a test of theirs): $g = 16$ inside $B = 256$ is no better than $g = 256$ at equal epochs; their recipe also scales $\eta$ by $\sqrt{B}$ and trains for many epochs |
# | NBS 2 ($g = 2$) collapses because training fails, not because of the test-time statistics | course reference (bn-facts) | **reproduced**: training loss 1.86–1.93 vs about 0.006 at $g = 128$; population statistics beat the pair's own in every seed. Measured along the way (one seed): a spiky gradient, layer-1 weights over 100 times their initial norm, then steps of a few $10^{-5}$ of the layer's size; which of these and the $\pm 1$ features stops training is not separated |
# | forgetting `eval()` costs most at small test batches | course reference (bn-facts: 0.84 / 0.40 at test batches of 8 / 2) | **reproduced**: 0.80 at 8, 0.40 at 2, no loss at 1,000 (one seed, $g = 128$) |
#
# ## Summary
#
# - "Batch size" hides two knobs: the SGD batch (examples per update) and the normalization batch (examples
#   sharing statistics). Ghost batch norm sets them apart.
# - BN needs a normalization batch of a few examples: here it matches LayerNorm and GroupNorm from 8 on, is a
#   little behind at 4 and collapses at 2, at every SGD batch. LayerNorm and GroupNorm do not look across
#   examples and do not care.
# - The collapse at 2 is a training failure: the training loss stays near 2, and testing the way it was trained
#   is worse than with population statistics. (The training loss is measured with noisy batch statistics: it
#   rises well before the test accuracy falls, 30 times $g = 128$'s already at $g = 8$.)
# - What is exact is the pair itself: its outputs are $\pm 1$ and its Jacobian keeps only an $\epsilon$-sized
#   direction, so the gradient below is zero except at near ties, where it is huge. What follows is measured
#   in one seed: under scale invariance the spikes grow layer 1's weights more than a hundredfold, after which
#   it hardly moves. Whether that or the $\pm 1$ features (a comparison with a random partner) is what stops
#   training, these runs do not tell.
# - Forgetting `eval()` makes a prediction depend on its batch-mates: harmless in batches of 1,000, fewer than
#   half of the digits right in pairs.
# - Comparing SGD batches, say what is held fixed: at equal updates a large batch is not worse here; at equal
#   epochs it is behind by a margin that shrinks with training. Ghost batch norm did not change that here.
#
# ## Questions
#
# 1. With $g = 2$, what are the possible values of $\hat x$ for one feature? What does the layer still tell the
#    next one, and what does that depend on besides the example itself?
# 2. Why does a normalization batch of 3 not have the problem of section 2 to the same degree? Count the
#    directions the Jacobian passes back at $m = 3$.
# 3. Population statistics beat the pair's own statistics at $g = 2$, although the network was trained on
#    pairs. Compare a unit's training-mode output, the sign of $x - x_{\text{partner}}$, with its `eval()`
#    output, built on $x - \mathrm{E}[x]$: which one is a noisier view of the same comparison?
# 4. Section 2 found two effects at $g = 2$ that its runs do not separate: spikes that inflate the weights until
#    the layer hardly moves, and features that only compare two examples. Would raising $\epsilon$ to 0.1
#    separate them? With section 2's formulas, compute the gain at a tie, $1/\sqrt\epsilon$, and a pair's
#    output $u/\sqrt{u^2 + 4\epsilon}$ at the typical gap measured there: which of the two effects does the
#    larger $\epsilon$ change? Then consider rescaling each hidden layer's weights back to their initial norm
#    after every update. With BN after the layer, what does that do to the function the network computes, and
#    which effect does it remove? What result of such a run would say the weight growth was the cause?
# 5. GroupNorm with groups of **2 units** would normalize pairs of numbers too. What would its outputs and its
#    gradient look like? Would it depend on the batch?
# 6. The running variance stores the unbiased estimate, with the factor $m/(m-1)$. How large is that factor at
#    $g = 2$?
# 7. You train with 8 GPUs × 4 images each, and BN statistics per GPU. Which normalization batch does BN see,
#    which SGD batch does the optimizer see, and what would you change first?
#
# Next: [Lecture 9 — learning rate](09_learning_rate.ipynb), where the effective learning rate
# $\eta/\lVert W\rVert^2$ of section 2 is measured properly.
