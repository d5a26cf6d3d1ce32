# %% [markdown]
# # Lecture 12 — Batch norm in practice: the slips that cost accuracy, measured
#
# **Learning goals.** After this lecture you can
# 1. predict what forgetting `eval()` does when the test digits come **sorted by class**, and what a validation
#    pass in training mode leaves behind in the running statistics, even under `torch.no_grad()`;
# 2. explain the batch-of-one error, where it comes from in a data loader, why a **short last batch of two** is
#    worse than the error, and apply the fixes;
# 3. say when the running averages (EMA) are good enough and when to recompute precise statistics, using the
#    initial value's share $(1-w)^t$ and measuring how much of the gap bias correction closes;
# 4. freeze batch norm for fine-tuning in small batches, and tell what `requires_grad_(False)` and `eval()`
#    each freeze, and what a training loop's `model.train()` undoes;
# 5. measure where BN goes relative to the activation (ReLU, sigmoid), what dropout before BN does to the
#    variance at test time, why a bias before BN is dead weight, what BN after the output layer does to the
#    logits, and what folding BN buys at inference.
#
# **Prerequisites.** [Lecture 2](02_forward_pass.ipynb) (the bias before BN; a batch of two gives $\pm 1$),
# [lecture 5](05_inference.ipynb) (running statistics, momentum, bias correction, precise BN, folding),
# [lecture 6](06_pytorch_layer.ipynb) (PyTorch's flags and freezing conventions),
# [lecture 8](08_batch_size.ipynb) (forgetting `eval()` with shuffled test batches; a pair's gradient).
# This lecture does not repeat them: it starts where they stop.
#
# **The setting.** The 4,000/1,000 MNIST subset. One network serves most sections: 3 hidden layers of 100 ReLU
# units, batch norm before each ReLU (no bias before it), PyTorch's default init, plain SGD with batch 60 and
# learning rate 0.1 for 600 updates, every batch norm layer at PyTorch's default momentum 0.1. It is trained
# once (seed 0) and shared; while it trains, forward hooks record the batch statistics each batch norm layer is
# fed, and the weights are kept at updates 10, 30, 100, 300 and 600. Each section says what it varies and what
# it holds fixed; where a comparison is between networks, each is trained with three seeds (each seed draws the
# weights and the minibatch order) and every seed is shown. The whole notebook trains 30 networks of 600
# updates (independent seeds two at a time, one torch thread each) and continues the shared one for two epochs
# six times: about 40 s of CPU time.

# %%
import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import bnlab.notebook
from bnlab.data import load_mnist_subset
from bnlab.experiments._runs import map_seeds
from bnlab.lessons.practice import (
    DROPOUT_PLACES,
    TREATMENTS,
    batchnorm_changes,
    batchnorm_state,
    cross_entropy_floor,
    cross_entropy_floor_mixed,
    dropout_study,
    ema_grid,
    final_layer_bn_study,
    fine_tune,
    folding_speed,
    forgot_eval_table,
    lint_batchnorm,
    one_by_one_logits,
    one_epoch,
    one_step_accuracy,
    placement_runs,
    redundant_bias_study,
    short_batch_epochs,
    train_shared,
    training_mode_error,
)
from bnlab.plots.practice import (
    plot_dropout,
    plot_ema_grid,
    plot_final_layer,
    plot_fine_tuning,
    plot_forgot_eval,
    plot_one_step,
    plot_placement,
)
from bnlab.report import bracketed, each_within, within
from bnlab.widgets.practice import ForgotEvalDashboard

bnlab.notebook.setup()
digits = load_mnist_subset()
run = train_shared(digits)                 # the shared network, seed 0 (about 1.5 s)
net = run.model
print(f"the shared network: test accuracy {run.accuracy:.3f} in eval mode after {run.steps} updates")

# %% [markdown]
# ## 1. Forgetting `eval()`: sorted test digits and polluted statistics
#
# [Lecture 8](08_batch_size.ipynb) tested a network in training mode in **shuffled** test batches: harmless in
# batches of 1,000, fewer than half the digits right in pairs. Two things it did not try are common in real
# code. Test sets are often stored **sorted by class** (a folder per class, read without shuffling). And a
# validation loop that forgets `eval()` runs the network in training mode, which **updates the running
# statistics**, with or without `torch.no_grad()`: the network that is saved afterwards is a different one.
#
# Why sorting is so much worse. Write one unit's input for a digit $x$ of class $c$ as
#
# $$ x = \underbrace{\mu}_{\text{population mean}} + \underbrace{(\mu_c - \mu)}_{\text{what the class adds}}
#      + \underbrace{(x - \mu_c)}_{\text{this digit's own variation}} . $$
#
# In eval mode the layer subtracts $\mu$ (its running mean) and keeps the other two terms. In training mode it
# subtracts the batch mean. In a shuffled batch of $n$ digits that is $\mu$ plus noise of order $1/\sqrt n$. In a
# batch that holds one class only, the batch mean is about $\mu_c$: the layer subtracts the class's own
# contribution, from every unit at once, and what is left, $(x-\mu_c)/s_c$, no longer says which class the
# digit is. A large batch does not help; only a batch that mixes the classes does.
#
# Below, the shared network is tested three ways on the 1,000 test digits, in test batches of $t$:
# with `eval()`; in training mode (`eval()` forgotten); and in eval mode **after** a validation pass in training
# mode over the same test batches (the running statistics polluted by it). Each way with the test digits
# shuffled (as the course's split stores them) and sorted by class. **Held fixed:** the network, the test
# digits. **Varied:** $t$, the order, the way of testing.
#
# **Predict first.** With class-sorted test batches of 100 (each batch one class), what accuracy do you expect
# in training mode? And in eval mode?

# %%
table = forgot_eval_table(net, digits)      # every mode x order x t, about 1 s
plot_forgot_eval(table, "train", "class-sorted", 8);

# %%
# NBVAL_CHECK_OUTPUT
def acc(mode, order, t):
    return table.at(mode, order, t)


evals = np.concatenate([table.accuracy[("eval", order)] for order in ("shuffled", "class-sorted")])
print(f"eval(): every order and test batch size, max - min accuracy {within(evals.max() - evals.min(), 1e-12)}; "
      f"accuracy {table.reference:.3f}")
print(f"training mode, shuffled:     t = 2 {bracketed(acc('train', 'shuffled', 2), high=0.5)}, "
      f"t = 8 {acc('train', 'shuffled', 8):.3f}, t = 100 {acc('train', 'shuffled', 100):.3f}")
sorted_small = [acc("train", "class-sorted", t) for t in (2, 4, 8, 20, 50, 100)]
print(f"training mode, class-sorted: t = 2 to 100 {each_within(sorted_small, high=0.2, digits=3)}")
print(f"                             t = 250 {acc('train', 'class-sorted', 250):.3f}; t = 1000 (the whole test set "
      f"in one batch) minus shuffled {within(acc('train', 'class-sorted', 1000) - acc('train', 'shuffled', 1000), 1e-12)}")
print(f"a training-mode batch of one: {table.error}")

# %% [markdown]
# What to notice:
#
# - **`eval()` is the control.** Its accuracy is the same to the digit for every order and every test batch
#   size, one at a time included: with population statistics a prediction cannot depend on its batch-mates.
# - **Shuffled batches** (red, solid) repeat lecture 8: small batches hurt, from 100 digits on nothing is lost.
# - **Class-sorted batches** (red, dashed) are near chance up to batches of 100, whose every batch holds one
#   class, as the decomposition above predicts. Batches of 250 mix two or three classes and get about 0.6; only
#   the whole test set in one batch recovers. The right panel shows that no class survives.
#
# ### What a validation pass in training mode leaves behind
#
# The orange curves are measured in eval mode, the right way, but after one pass over the test set in training
# mode. That pass rewrote every running statistic. Unroll PyTorch's update (lecture 5) over the $k$ batches of the
# pass: the statistics training left behind keep the weight $(1-w)^k$, and the last $j$ batches of the pass carry
# $1-(1-w)^j$. At $w = 0.1$ the last 22 batches carry 90%. In class-sorted batches of 2 those are 44 digits,
# all nines: the network is then normalized as if every digit were a nine.
#
# `torch.no_grad()` does not prevent any of this: it turns off gradients, not training mode. A forward pass of
# ten test batches of 100 under `torch.no_grad()`, with and without `eval()`:

# %%
# NBVAL_CHECK_OUTPUT
for label, train_mode in (("train mode + no_grad", True), ("eval mode + no_grad", False)):
    probe = copy.deepcopy(net).train(train_mode)
    before = batchnorm_state(probe)
    with torch.no_grad():
        for start in range(0, 1000, 100):
            probe(digits.x_test[start:start + 100])
    changed = batchnorm_changes(before, batchnorm_state(probe))
    print(f"{label}: running_mean moved by up to {changed.running_mean:.2f} running std, running_var by up to "
          f"{changed.running_var:.0%}, num_batches_tracked +{changed.batches_tracked}")
share = 1 - 0.9 ** 22
print(f"weight of the last 22 batches after a long pass at momentum 0.1: {share:.2f}")
print(f"after a polluting pass: shuffled, t = 100 {bracketed(acc('polluted', 'shuffled', 100), 0.94)}; "
      f"class-sorted, t = 2 {bracketed(acc('polluted', 'class-sorted', 2), high=0.85)}, "
      f"t = 8 {acc('polluted', 'class-sorted', 8):.3f}")

# %% [markdown]
# A polluting pass in shuffled batches of 100 costs nothing measurable here: the test set looks like the
# training set, and the running statistics now describe the test digits instead (which is a small leak of
# test data into the network, not a fix). In class-sorted small batches the running statistics describe the
# last classes of the pass, and eval-mode accuracy drops to 0.77 at $t = 2$. The damage is permanent: a
# checkpoint written after the pass carries it, and `eval()` called later cannot undo it.
#
# The fix for both is one line at the top of every evaluation: `model.eval()` (and `torch.no_grad()` for speed),
# `model.train()` again before the next training step.
#
# ## 2. The batch of one, and the short last batch
#
# In training mode a channel needs at least two values to have a variance. A batch of one vector raises:

# %%
# NBVAL_CHECK_OUTPUT
print("ValueError:", training_mode_error(net, digits.x_test[:1]))
print("a batch of two:", training_mode_error(net, digits.x_test[:2]))
images = torch.randn(1, 3, 5, 5, generator=torch.Generator().manual_seed(0))
as_batch = F.batch_norm(images, None, None, training=True)           # one image: 25 values per channel
as_instance = F.instance_norm(images)
print(f"one 5x5 image with 3 channels passes (25 values per channel); it is normalized like instance norm: "
      f"max |BN - instance norm| {within((as_batch - as_instance).abs().max(), 1e-5, floor=1e-7)}")

# %% [markdown]
# A single image of shape $(1, C, H, W)$ does not raise: each channel has $H\cdot W$ values. It is then
# normalized by its own statistics, which is instance norm, not batch norm: no error, and a network that
# silently computes something else.
#
# Where does a batch of one come from, if nobody asks for it? Most often from the data loader: with $N$
# examples and batch size $B$, `DataLoader(..., drop_last=False)` (the default) ends every epoch with a batch of
# $N \bmod B$ examples. With 3,841 = 60·64 + 1 training digits and $B = 64$:

# %%
# NBVAL_CHECK_OUTPUT
x, y = digits.x_train[:3841], digits.y_train[:3841]
for drop_last in (False, True):
    outcome = one_epoch(copy.deepcopy(net), x, y, 64, drop_last=drop_last)
    ending = f"stopped by ValueError: {outcome.error}" if outcome.error else "epoch completed"
    print(f"drop_last={drop_last!s:5}: {len(outcome.batch_sizes)} batches trained, "
          f"sizes {sorted(set(outcome.batch_sizes))}; {ending}")

# %% [markdown]
# The error is loud and the fix is `drop_last=True` (or a batch size that leaves no remainder of one). Change
# $N$ to 3,842 and the last batch has **two** digits: no error. Is that harmless? [Lecture 8](08_batch_size.ipynb)
# derived what a pair does to the gradient: its outputs are $\pm 1$, and its Jacobian passes back a gain of up to
# $1/\sqrt\epsilon \approx 316$ from a pair that nearly ties. One update on such a batch, at the learning rate
# of training, is enough.
#
# Below, the trained network takes **one** more training-mode step on a random batch of $b$ training digits,
# twenty times with different batches (each time from the same trained network). **Control:** the same
# batches passed forward without the update, which only moves the running statistics, and $b = 60$, the
# training batch.

# %%
after_step = {b: one_step_accuracy(net, digits, b) for b in (2, 4, 8, 60)}
stats_only = {b: one_step_accuracy(net, digits, b, step=False) for b in (2, 4, 8, 60)}
plot_one_step(after_step, stats_only, run.accuracy);

# %%
# NBVAL_CHECK_OUTPUT
for b in (2, 4, 8, 60):
    low, median, high = np.percentile(after_step[b], [0, 50, 100])
    print(f"b = {b:2d}, one SGD step:        lowest {low:.3f}, median {median:.3f}, highest {high:.3f}")
print(f"b = 60, one SGD step: largest |change| over all {after_step[60].size} draws "
      f"{bracketed(np.abs(after_step[60] - run.accuracy).max(), high=0.01)}")
print(f"b = 2, one SGD step: median loss of accuracy {bracketed(run.accuracy - np.median(after_step[2]), 0.05)}; "
      f"draws below 0.2: {int((after_step[2] < 0.2).sum())} of {after_step[2].size}")
print(f"b = 4, 8, one SGD step: draws below 0.5: {int((after_step[4] < 0.5).sum())} and "
      f"{int((after_step[8] < 0.5).sum())} of 20")
worst_stats = max(np.abs(values - run.accuracy).max() for values in stats_only.values())
print(f"running statistics updated only, every b: largest change {bracketed(worst_stats, high=0.02)}")

# %% [markdown]
# One step on a pair costs a median of about 0.17 of test accuracy, and three draws in twenty send the network
# to chance. A batch of 4 is no better (median 0.67), a batch of 8 less bad (median 0.87, but one draw in
# twenty below half the digits); a batch of 60 changes nothing. The running-statistics update alone does no harm: the damage
# is the gradient, as lecture 8's Jacobian says.
#
# That is the accuracy *right after* the step. Does the damage last? The real loop: the shared network trained
# two more epochs with `DataLoader(..., shuffle=True, drop_last=False)`, batch 64, on $N$ = 3,842 digits (a pair
# ends every epoch) and, as the control, on $N$ = 3,840 (no remainder); three loader seeds each. Test accuracy
# just before and right after each epoch's last batch, and 5 and 20 updates into the next epoch.

# %%
# NBVAL_CHECK_OUTPUT
epochs = {(n, seed): short_batch_epochs(net, digits, n, seed=seed) for n in (3842, 3840) for seed in (0, 1, 2)}
for (n, seed), e in epochs.items():
    print(f"N = {n}, seed {seed}: last batch {e.last_batch:2d}; at the epoch ends, before / after it "
          f"{' '.join(f'{a:.3f}/{b:.3f}' for a, b in zip(e.before_last, e.epoch_end))}; "
          f"5, 20 updates later {' '.join(f'{v:.3f}' for v in e.later.ravel())}")
pair_ends = np.concatenate([e.epoch_end for (n, _), e in epochs.items() if n == 3842])
control_ends = np.concatenate([e.epoch_end for (n, _), e in epochs.items() if n == 3840])
recovered = np.concatenate([e.later[:, 0] for (n, _), e in epochs.items() if n == 3842])
drops = np.concatenate([e.before_last - e.epoch_end for (n, _), e in epochs.items() if n == 3842])
print(f"right after the pair: {int((drops > 0.05).sum())} of {drops.size} epoch ends lose more than 0.05, "
      f"{int((pair_ends < 0.5).sum())} fall below 0.5; lowest {bracketed(pair_ends.min(), high=0.6)}; "
      f"control (no pair) lowest {bracketed(control_ends.min(), 0.94)}")
print(f"5 updates after a pair, lowest {bracketed(recovered.min(), 0.93)}")

# %% [markdown]
# The damage does not last: five updates into the next epoch every run is back within about 0.01 of the
# control. But it is there at the one moment that counts, the end of the epoch: a validation pass or a checkpoint
# written then sees it (four of the six epoch ends above lose more than 0.05, two fall below 0.5), and so does
# the network that training hands back after its last epoch. A short last batch of two is **worse** than a batch
# of one, because nothing stops it: it happens silently once per epoch, just before the network is looked at.
#
# The fixes, and what each costs:
#
# - `drop_last=True` in the training loader: the remainder is skipped this epoch (shuffling moves it to other
#   batches in the next).
# - At inference, `eval()`: a batch of one is then fine, and gives exactly the batched predictions (checked
#   below).
# - To *train* in batches of one or two (a large model on a small device): batch statistics are then
#   meaningless, so freeze batch norm (next sections; section 4 trains in batches of one) or use a
#   normalization that does not look across examples, LayerNorm or GroupNorm (lecture 8).

# %%
# NBVAL_CHECK_OUTPUT
one_by_one = one_by_one_logits(net, digits.x_test)
with torch.no_grad():
    batched = copy.deepcopy(net).eval()(digits.x_test)
print(f"eval mode, 1,000 test digits one at a time vs in one batch: max |logit difference| "
      f"{within((one_by_one - batched).abs().max(), 1e-4, floor=1e-6)}, "
      f"differing predictions {int((one_by_one.argmax(1) != batched.argmax(1)).sum())}")

# %% [markdown]
# ## 3. EMA or precise statistics: when the running averages are not enough
#
# [Lecture 5](05_inference.ipynb) followed one layer of one run (He init, momentum 0.001, 300 updates) and split
# the gap between the running variance and the precise one into the initial value's share and lag. Here the
# question is practical: **for which momentum $w$ and run length $t$ does it matter, and does bias correction
# fix it?** Recall the two facts it rests on: after $t$ updates an EMA still holds the share
#
# $$ f = (1-w)^t \approx e^{-wt} $$
#
# of its initial value (0 for the mean, 1 for the variance), and removing that share gives the bias-corrected
# average $\hat r_t = (r_t - f\,r_0)/(1-f)$, a weighted mean of the batch statistics of the whole run.
#
# The momentum never changes training (the forward normalizes with batch statistics), so one run is enough:
# every layer's running statistics at any $w$ and $t$ are **replayed** from the batch statistics recorded during
# training, loaded into the network as it was at update $t$, and tested. **Control:** the replay at $w = 0.1$
# must equal what the layers themselves stored. **Precise** statistics (50 training batches of 60, the final
# weights of each $t$) are the reference. **Varied:** $w \in \{0.1, 0.01, 0.001\}$ and
# $t \in \{10, 30, 100, 300, 600\}$; the network with PyTorch's default init (the shared one) and, to connect
# with lecture 5, the same network with He init; three seeds each (seed 0 of the default init is the shared run).
# **Measured:** the accuracy with each kind of statistics, and the split of the gap in the statistics
# themselves: for every unit of every layer, $|\hat r_t - r_\text{precise}| / |r_t - r_\text{precise}|$, the part
# of the raw EMA's error that bias correction leaves (0: the gap was all initial value; near 1: it was all lag),
# median over units and layers, for the mean and the variance.

# %%
seed_runs = {"default init": (run, *map_seeds(lambda s: train_shared(digits, seed=s), (1, 2))),
             "He init": map_seeds(lambda s: train_shared(digits, seed=s, init="he"), (0, 1, 2))}   # about 5 s
seed_grids = {label: [ema_grid(r, data=digits) for r in runs] for label, runs in seed_runs.items()}
grids = {label: g[0] for label, g in seed_grids.items()}
plot_ema_grid(grids);                                     # seed 0 of each

# %%
# NBVAL_CHECK_OUTPUT
print(f"replay at w = 0.1 vs the stored statistics, every run: max |difference| "
      f"{within(max(g.replay_error.max() for gs in seed_grids.values() for g in gs), 1e-4, floor=1e-7)}")
w = grids["default init"].momenta.index(0.001)
print(f"w = 0.001, t = {', '.join(str(t) for t in grids['default init'].steps)}:")
for label, gs in seed_grids.items():
    for seed, g in enumerate(gs):
        closed = "  ".join("  - " if np.isnan(c) else f"{c:4.0%}" for c in g.closed()[w])
        print(f"  {label}, seed {seed}: accuracy gap precise - raw {' '.join(f'{v:.3f}' for v in g.gap()[w])}; "
              f"closed by correction {closed}; left in the mean {' '.join(f'{v:.2f}' for v in g.mean_left[w])}, "
              f"in the variance {' '.join(f'{v:.2f}' for v in g.var_left[w])}")
every = [g for gs in seed_grids.values() for g in gs]
print(f"w = 0.001, every init, seed and t: part of the gap left after correction, mean "
      f"{bracketed(max(g.mean_left[w].max() for g in every), high=0.35, digits=2)}, variance "
      f"{bracketed(max(g.var_left[w].max() for g in every), high=0.3, digits=2)} (largest)")
print(f"w = 0.001: corrected better than raw in accuracy at every t, every run "
      f"{bracketed(min((g.corrected[w] - g.raw[w]).min() for g in every), 0.0, digits=2)} (smallest gain)")
default = grids["default init"]
late = [t >= 100 for t in default.steps]
print(f"w = 0.1, t >= 100: |precise - raw| {each_within(np.abs(default.gap('raw')[0][late]), high=0.01, digits=3)} "
      f"(default init, seed 0)")
for label, grid in grids.items():
    first, last = grid.precise_var[0, 0], grid.precise_var[-1, 0]
    print(f"{label}, seed 0: layer-1 precise variance (mean over units) {first:.2f} at t = {grid.steps[0]}, "
          f"{last:.2f} at t = {grid.steps[-1]}: grows {last / first:.2f} times")

# %% [markdown]
# What to notice:
#
# - **At PyTorch's default 0.1** the EMA is as good as precise statistics from $t = 100$ on. At $t = 10$ it loses
#   about 0.02, and with the default init bias correction does not help there: in its first ten updates the
#   network itself changes fast.
# - **With a slow momentum the gap is large**: at $w = 0.001$ the raw EMA is below 0.5 after 10 updates and
#   still 0.01–0.04 below precise after 600.
# - **At $w = 0.001$ the gap is mostly the initial value, for both inits and every seed.** In the statistics
#   themselves bias correction removes most of the raw EMA's error: what it leaves is at most about a third for
#   the mean and a quarter for the variance (He init; about 0.03 for the default init's variance). The rest is lag:
#   the bias-corrected EMA is close to an equal-weight mean over the whole run (for $t \ll 1/w$ its weights are
#   nearly flat, lecture 5) and trails statistics that still move (right panel: layer 1's variance grows
#   3.5 times with the default init, 1.65 times with He init, seed 0).
# - **In accuracy the split is noisier.** Corrected beats raw at every $t$ in every run, and closes most of the
#   accuracy gap in most runs, but one run (default init, seed 0, the shared one) closes only 43% and 33% at
#   $t = 100$ and 300, where its gaps are 37 and 21 test digits. A ratio of two accuracy differences of a few dozen
#   digits is too noisy to split the gap; the statistics split it.
#
# So "the gap is initialization bias" holds here at $w = 0.001$ and short runs. At larger $wt$ the initial
# value's share is gone and what remains is lag, which correction cannot touch (at $w = 0.01$ and $t = 600$ it
# leaves nearly all of the, by then small, gap). The practical rule: if $wt$ is below about 5 (the initial
# value's share $e^{-wt}$ above 1%), or the statistics still move at the end of training, recompute precise
# statistics after training
# (`bnlab.nn.recompute_batchnorm_statistics`, a few dozen batches, no gradients). Bias correction is free and
# removes the initial value's share, but not lag.
#
# ## 4. Frozen batch norm for fine-tuning: `requires_grad_(False)` is not `eval()`
#
# Fine-tuning in small batches (a large model on a small device, a few examples per step) has the pair problem
# of section 2 on every step, and the running statistics drift to whatever the last small batches held. The
# usual recipe is to **freeze** batch norm: normalize with the running statistics, update them never, and
# optionally stop training $\gamma, \beta$. PyTorch has two separate switches, and neither alone does all of it:
#
# | treatment of every BN layer | normalizes with | running statistics | $\gamma$, $\beta$ |
# |---|---|---|---|
# | nothing (train mode) | batch statistics | updated | trained |
# | `requires_grad_(False)` on $\gamma, \beta$ | batch statistics | updated | frozen |
# | `layer.eval()`, then the loop calls `model.train()` | batch statistics | updated | trained |
# | `eval()` that survives `model.train()` ("statistics frozen") | running statistics | frozen | trained |
# | `bnlab.nn.freeze_batchnorm` (both) | running statistics | frozen | frozen |
#
# Row 3 is the classic slip: `model.train()` sets *every* submodule's mode, so a BN layer put in eval mode
# before the loop is back in training mode at its first step. `bnlab.train.train`, like most loops, calls
# `model.train()` at the start and after every evaluation. Rows 4 and 5 keep the layers in eval mode with a
# forward pre-hook (`freeze_batchnorm`; row 4 then makes $\gamma$, $\beta$ trainable again). In Keras,
# `trainable = False` on a BN layer does both at once (lecture 6).
#
# The shared network is trained 200 more updates in **batches of 2** (learning rate 0.005, a twentieth of
# training's, as fine-tuning would use), under each treatment. **Held fixed:** the starting
# network, the batches (seed 1), the learning rate. **Measured:** test accuracy every 20 updates, and what
# changed in the BN layers.

# %%
tuned = {treatment: fine_tune(net, treatment, digits) for treatment in TREATMENTS}    # about 1.5 s
plot_fine_tuning(tuned, run.accuracy);

# %%
# NBVAL_CHECK_OUTPUT
for treatment, outcome in tuned.items():
    c = outcome.changes
    print(f"{treatment:22}: accuracy {outcome.accuracy:.3f}; running statistics "
          f"{'changed' if c.statistics_changed else 'unchanged'} (running_mean by up to {c.running_mean:.3g} std, "
          f"+{c.batches_tracked} batches tracked); gamma, beta {'changed' if c.affine_changed else 'unchanged'} "
          f"(by up to {max(c.weight, c.bias):.2g})")
same = max((a - b).abs().max().item() for a, b in zip(tuned["train mode"].model.state_dict().values(),
                                                     tuned["eval(), then train()"].model.state_dict().values()))
print(f"'eval(), then train()' vs 'train mode': max |difference| of every weight and buffer {within(same, 1e-12)}")
frozen = [tuned[t].accuracy for t in ("statistics frozen", "freeze_batchnorm")]
unfrozen = [tuned[t].accuracy for t in ("train mode", "requires_grad_(False)", "eval(), then train()")]
print(f"frozen statistics: {each_within(frozen, low=run.accuracy - 0.01, digits=3)}; "
      f"batch statistics: {each_within(unfrozen, high=0.6, digits=3)}")
single = fine_tune(net, "freeze_batchnorm", digits, batch_size=1)
print(f"freeze_batchnorm, further training in batches of ONE: accuracy {bracketed(single.accuracy, run.accuracy - 0.01)} "
      f"(train mode raises: {training_mode_error(net, digits.x_train[:1])[:45]}...)")
growth = {t: tuned[t].result.weight_norms[-1, 0] / tuned[t].result.weight_norms[0, 0]
          for t in ("train mode", "freeze_batchnorm")}
print(f"layer-1 weight norm after / before the 200 updates: train mode {bracketed(growth['train mode'], 10)}, "
      f"freeze_batchnorm {bracketed(growth['freeze_batchnorm'], 0.9, 1.1)}")

# %% [markdown]
# What to notice:
#
# - **Every treatment that keeps batch statistics collapses**, to about a third of the digits, whether or not
#   $\gamma$ and $\beta$ train: `requires_grad_(False)` freezes two parameters per channel and nothing else. The
#   running statistics move by hundreds of their own standard deviations, and layer 1's weights grow many times
#   over: the pairs' gradient spikes of lecture 8, one per update.
# - **`eval()` undone by `model.train()`** is not "almost the same" as doing nothing: it is the same run, bit for
#   bit (the dotted line on top of the red one).
# - **Frozen statistics keep the network**, with $\gamma, \beta$ trained or not; the network is then an ordinary
#   network with a fixed affine map per channel, and it trains even in batches of one.
#
# ## 5. Before or after the activation?
#
# The paper puts BN before the nonlinearity, on $Wu$, because $Wu$ is "more likely to have a symmetric,
# non-sparse distribution, that is 'more Gaussian'" (Ioffe & Szegedy 2015, Sec. 3.2). Many networks put it after. **Varied:** the placement
# (Linear → BN → activation, or Linear → activation → BN; with BN after the activation the Linear keeps its
# bias, which is no longer cancelled) and the activation (ReLU, sigmoid). **Held fixed:** the rest of the
# shared setting, PyTorch's default init for both activations; three seeds each (seed 0 of ReLU/before is the
# shared run).

# %%
placements = placement_runs(data=digits, shared=run)     # 11 new runs, two at a time: about 6 s
plot_placement(placements);

# %%
# NBVAL_CHECK_OUTPUT
def finals(key):
    return np.array([result.final_test_accuracy for result, _ in placements[key]])


for activation in ("relu", "sigmoid"):
    before, after = finals((activation, "before")), finals((activation, "after"))
    low = {"relu": 0.93, "sigmoid": 0.88}[activation]
    print(f"{activation:7}: BN before {each_within(before, low, digits=3)}; after {each_within(after, low, digits=3)}; "
          f"seed means, after - before {after.mean() - before.mean():+.3f}")
relu_gap = finals(("relu", "after")).mean() - finals(("relu", "before")).mean()
sigmoid_margin = finals(("sigmoid", "after")).min() - finals(("sigmoid", "before")).max()
print(f"ReLU: |after - before| of the seed means {bracketed(abs(relu_gap), high=0.01, digits=2)}; sigmoid: worst "
      f"seed after minus best seed before {bracketed(sigmoid_margin, 0.02, digits=2)}")

# %% [markdown]
# For ReLU the placement makes no difference these three seeds can see (the seeds spread by about 0.01 either
# way). For sigmoid, BN after the activation wins in every seed, by about 0.03; bn-facts reports the same
# direction for a 5-layer net (0.945 against 0.923). These runs do not say why: the two sigmoid networks differ in
# what the sigmoid sees (a standardized input, or the raw $Wu + b$) and in what the next layer sees (sigmoid
# outputs around 0.5, or standardized ones), and nothing here separates the two. A practical cost of "after":
# the BN no longer follows a Linear directly, so it cannot be folded into it (lecture 5; it can be folded forward
# into the *next* Linear).
#
# ## 6. Dropout before batch norm: the variance shift
#
# Inverted dropout with rate $p$ multiplies each activation $a_i$ by $m_i/(1-p)$, $m_i \sim \text{Bernoulli}(1-p)$,
# in training, and does nothing in eval mode. A batch norm layer after the next Linear sees
# $z = \sum_i W_i\, m_i a_i/(1-p)$. The mean is unchanged, but since $\mathrm E[m_i^2] = 1-p$,
#
# $$ \mathrm{Var}_\text{train}(z) = \mathrm{Var}_\text{eval}(z) + \frac{p}{1-p}\sum_i W_i^2\,\mathrm E[a_i^2] . $$
#
# The running variance is learned in training mode, so in eval mode the layer divides by a standard deviation
# that is too large, and its outputs shrink: the **variance shift** (Li et al. 2019, "Understanding the
# disharmony between dropout and batch normalization by variance shift"). **Measured:** for each BN layer the
# ratio $\mathrm{Var}_\text{eval}(z)/\text{running\_var}$ per unit (median over units; test digits, eval mode),
# against the formula's prediction. **Varied:** where dropout ($p = 0.5$) goes: nowhere (the shared setting),
# after every hidden block (so it feeds BN 2 and BN 3), or only before the output layer (after every BN, Li et
# al.'s advice). **Control for the accuracy:** the same networks with the running statistics recomputed with
# dropout off (precise BN on a copy whose dropout is replaced by the identity), which removes the shift.

# %%
dropout = {"none": dropout_study("none", data=digits, plain=placements[("relu", "before")])}
for where in DROPOUT_PLACES[1:]:
    dropout[where] = dropout_study(where, data=digits)     # 3 seeds, one after the other: about 5 s in all
plot_dropout(dropout);

# %%
# NBVAL_CHECK_OUTPUT
every, last, none = dropout[DROPOUT_PLACES[1]], dropout[DROPOUT_PLACES[2]], dropout["none"]
print(f"dropout after every block: BN 2 measured {each_within([o.measured_ratio[1] for o in every], high=0.85)}, "
      f"predicted {each_within([o.predicted_ratio[1] for o in every], high=0.85)}")
print(f"                           BN 3 measured {each_within([o.measured_ratio[2] for o in every], high=0.75)}, "
      f"predicted {each_within([o.predicted_ratio[2] for o in every], 0.75, 0.85)}")
print(f"  control, only BN 2's statistics recomputed with dropout off: BN 3 measured "
      f"{each_within([o.bn2_recalibrated[2] for o in every], 0.8, 0.95)}, predicted "
      f"{each_within([o.bn2_recalibrated_predicted[2] for o in every], 0.75, 0.85)}")
print(f"controls: BN 1 (no dropout before it), every setting "
      f"{each_within([o.measured_ratio[0] for runs in dropout.values() for o in runs], 0.9, 1.1)}")
print(f"          BN 2, 3 without dropout before them "
      f"{each_within([r for runs in (none, last) for o in runs for r in o.measured_ratio[1:]], 0.85, 1.1)}")
for label, runs in (("none", none), ("after every block", every), ("before the output only", last)):
    print(f"accuracy, dropout {label:22}: as trained {each_within([o.accuracy for o in runs], 0.9, digits=3)}; "
          f"recalibrated minus as trained {each_within([o.recalibrated - o.accuracy for o in runs], -0.01, 0.01, digits=3)}")

# %% [markdown]
# What to notice:
#
# - **The shift is there, where the formula says.** BN 2's input has about three quarters of the variance at test
#   time that training stored, close to the prediction; BN 1, with no dropout before it, and every layer of the
#   two controls stay near 1 (within a few percent: test digits are not training digits).
# - **It compounds.** BN 3 is shifted more than the one-layer formula predicts (0.63–0.69 against about 0.80).
#   The control: recompute only BN 2's running statistics with dropout off, so that BN 2's eval-mode outputs are no
#   longer too small, and BN 3's ratio rises to 0.84–0.90, at or a little above its one-layer prediction. The
#   extra shift of BN 3 is inherited from BN 2.
# - **Here it does not cost the accuracy.** Dropout after every block loses about 0.03, but recomputing the
#   statistics without dropout gives none of it back (each seed within 0.01): what costs is training with
#   dropout at $p = 0.5$ for 600 updates, not the mismatch at test time. Dropout before the output layer only
#   costs nothing and shifts nothing. Li et al. measured accuracy losses from the shift in deep convolutional
#   networks; in this three-layer MLP the shift is real and harmless. If it matters in yours, the two fixes are
#   the ones measured here: dropout after the last BN, or statistics recomputed with dropout off.
#
# ## 7. A bias before batch norm, in a trained network
#
# [Lecture 2](02_forward_pass.ipynb) showed on one numpy layer that $\mathrm{BN}(Wu + b) = \mathrm{BN}(Wu)$ and that
# $\partial L/\partial b = \sum_n \partial L/\partial h_n = 0$. What happens in a real network over a whole
# training run? The shared network is rebuilt with a bias in each of its three hidden Linear layers (drawn from
# $U(-1, 1)$, weights unchanged) and trained exactly like it: same seed, same batches, same steps.
# **Control:** the same network with BN after the ReLU, where the bias sits before the ReLU and is not cancelled.

# %%
# NBVAL_CHECK_OUTPUT
bias = redundant_bias_study(run, digits)
print(f"trainable parameters: {bias.parameters_without:,} without, {bias.parameters_with:,} with the biases "
      f"(+{bias.parameters_with - bias.parameters_without})")
print(f"gradient at the first batch, per layer: bias {each_within(bias.bias_grad * 1e8, high=10, digits=1)} x 1e-8 "
      f"(float32); weight {each_within(bias.weight_grad, 0.01, digits=3)}")
print(f"  bias gradient in float64: {within(bias.bias_grad_float64.max(), 1e-12, floor=1e-18)}; control, BN after "
      f"the ReLU: {each_within(bias.control_bias_grad, 0.01, digits=3)}")
print(f"after 600 updates: largest move of any bias {within(bias.bias_moved.max(), 1e-6, floor=1e-9)}; "
      f"running_mean(with) - running_mean(without) - bias {within(bias.absorbed.max(), 1e-2, floor=1e-6)}")
print(f"eval-mode test logits: max |difference| {bias.logit_difference:.4f} (logits up to "
      f"{bias.logit_scale:.1f}; relative {within(bias.logit_difference / bias.logit_scale, 1e-2, floor=1e-6)}), "
      f"differing predictions {bias.predictions_differing}; accuracy {bias.accuracy_without:.3f} vs "
      f"{bias.accuracy_with:.3f}")

# %% [markdown]
# The bias gets a gradient of rounding size (a few $10^{-8}$ in float32, about $10^{-16}$ in float64) and so never
# moves; the running mean takes it in (it is the mean of $Wu + b$), and eval mode subtracts it again. The two
# trained networks differ only by float32 rounding, which 600 updates amplify to a few thousandths in the
# logits without changing a single prediction. So the bias costs 300 parameters, their memory and optimizer
# state, and an add per unit, for nothing. It is not always harmless, though: weight decay pulls a useless
# parameter towards 0 for nothing, and an optimizer that rescales each parameter's step by its gradient history
# (Adam) turns a gradient of rounding noise into steps of normal size (questions 4 and 5).
#
# ## 8. Batch norm after the output layer
#
# A `BatchNorm1d(10)` after the final Linear normalizes each class's score over the batch. In training mode,
# every class's logit then has batch mean $\beta_c$ and standard deviation $\gamma_c$, whatever the network
# computes. Take a class-balanced batch ($K$ classes, a fraction $q = 1/K$ of each) and no $\gamma, \beta$
# (`affine=False`): every logit column has mean 0 and variance 1. The best such column gives $a$ to the digits of
# its class and $b$ to the rest, with $q a + (1-q) b = 0$ and $q a^2 + (1-q) b^2 = 1$, so
# $a = \sqrt{K-1}$, $b = -1/\sqrt{K-1}$, a margin $a - b = K/\sqrt{K-1}$, and a cross-entropy of at least
#
# $$ \ln\!\Big(1 + (K-1)\, e^{-K/\sqrt{K-1}}\Big) = \ln\big(1 + 9\,e^{-10/3}\big) \approx 0.278 \quad (K = 10), $$
#
# and, at that arrangement, a top softmax probability of $e^{3}/(e^{3} + 9e^{-1/3}) \approx 0.76$ for every digit
# (not a bound: a standardized column of 60 values can give one digit up to $\sqrt{59}$). Why this arrangement
# is the best: relax "variance 1" to "variance at most 1", which makes the set of allowed columns convex; the
# cross-entropy is convex and symmetric in the classes, so its minimum over that set is at the symmetric
# arrangement. The floor assumes class-balanced batches; random batches of 60 are not balanced, and the same
# relaxation (`cross_entropy_floor_mixed`) gives a higher floor for their class mixes, 0.28–0.39 (computed
# below). With $\gamma$ the scale can grow, but only as fast as SGD moves $\gamma$. **Varied:** no BN on the logits (the shared setting), `BatchNorm1d(10)`, and
# `BatchNorm1d(10, affine=False)`; three seeds each.

# %%
final = final_layer_bn_study(data=digits, plain=placements[("relu", "before")])   # 6 new runs: about 4 s
plot_final_layer(final);

# %%
# NBVAL_CHECK_OUTPUT
floor = cross_entropy_floor(10)
print(f"floor with standardized logits, K = 10: {floor:.4f}; top probability at the floor "
      f"{np.exp(3) / (np.exp(3) + 9 * np.exp(-1 / 3)):.3f}; the relaxation on a balanced batch minus it "
      f"{within(abs(cross_entropy_floor_mixed([6] * 10)[0] - floor), 1e-6, floor=1e-9)}")
draws = [torch.randperm(digits.num_train, generator=torch.Generator().manual_seed(s))[:60] for s in range(200)]
mixed = cross_entropy_floor_mixed(np.stack([np.bincount(digits.y_train[d].numpy(), minlength=10) for d in draws]))
print(f"floor for the class mixes of 200 random batches of 60: lowest {bracketed(mixed.min(), floor)}, "
      f"mean {mixed.mean():.2f}, highest {bracketed(mixed.max(), high=0.45)}")
plain_accuracy = np.mean([o.accuracy for o in final["none"]])
confidence_brackets = {"none": (0.95, None), "BatchNorm1d(10)": (0.9, 0.95), "BatchNorm1d(10, affine=False)": (None, 0.75)}
for variant, outcomes in final.items():
    end_loss = [o.result.train_loss_avg[-1] for o in outcomes]
    print(f"{variant:30}: accuracy {each_within([o.accuracy for o in outcomes], 0.93, digits=3)}; top softmax "
          f"probability {each_within([o.confidence for o in outcomes], *confidence_brackets[variant], digits=3)}; "
          f"training loss (last 50 updates) {', '.join(f'{v:.3f}' for v in end_loss)}")
no_affine = final["BatchNorm1d(10, affine=False)"]
print(f"affine=False: training loss above the floor {each_within([o.result.train_loss_avg[-1] for o in no_affine], low=floor, digits=3)}; "
      f"logit std per class (eval) {each_within([o.logit_std for o in no_affine], 0.9, 1.1)}")
print(f"BatchNorm1d(10): mean gamma after 600 updates {each_within([o.gamma for o in final['BatchNorm1d(10)']], 1.5, 3)}; "
      f"seed-mean accuracy minus no BN on the logits "
      f"{each_within([np.mean([o.accuracy for o in outs]) - plain_accuracy for outs in list(final.values())[1:]], -0.01, 0.01, digits=3)}")

# %% [markdown]
# The accuracy is untouched (the largest logit still picks the class), but the network cannot become confident:
# without $\gamma$ its training loss cannot go below 0.278 and stays near 0.40, close to the floor of random
# batches' class mixes (up to about 0.39); its average top probability on the test digits is 0.68 instead of
# 0.96. With $\gamma$ the logits' scale has to be learned (here $\gamma$ reaches about 2.2 in 600 updates, and the top probability 0.93). Anything that reads the probabilities (a
# calibrated confidence, a threshold, distillation) gets different numbers; and in training mode every logit
# depends on the batch, with the class-sorted trouble of section 1 at the output itself. A batch norm after the
# last layer is a slip, not a design.
#
# ## 9. Folding batch norm for inference: exact, and how much faster
#
# [Lecture 5](05_inference.ipynb) folded each eval-mode BN into the Linear before it and checked the outputs.
# What it buys is time: three fewer passes over the activations. The shared network and its folded copy, timed
# on one torch thread, interleaved (best of three rounds of medians), on the whole test set and on one digit.

# %%
# NBVAL_CHECK_OUTPUT
speeds = {b: folding_speed(net, digits.x_test, b) for b in (1000, 1)}
check = speeds[1000]
print(f"batch norm layers: {check.norms_before} before folding, {check.norms_after} after; eval-mode max |logit "
      f"difference| {within(check.eval_difference, 1e-4, floor=1e-6)}")

# %%
for b, speed in speeds.items():      # timings: not checked, they depend on the machine and its load
    print(f"batch {b:4d}: unfolded {speed.unfolded_ms:.3f} ms, folded {speed.folded_ms:.3f} ms, "
          f"ratio {speed.ratio:.2f}")

# %% [markdown]
# Folding is exact to float32 rounding. It saves little on a batch of 1,000, where the four matrix products
# dominate the time, and more on a single digit, where each module call's fixed overhead is a large part of it
# (the ratios printed above were measured while other work shared the machine, and vary from run to run). The folded
# network has no batch norm left: it is for inference only, and fine-tuning it means training a network without
# BN.
#
# ## 10. Finding structural slips automatically
#
# Three of the slips above are visible in the structure of a network: a bias right before a BN, a BN after the
# output layer, and dropout feeding a BN. `lint_batchnorm` runs one batch through a copy in eval mode, records the
# order in which the leaf modules are called, and reports each pattern (exercise 5 uses it). It names modules
# as `named_modules()` does: in an `nn.Sequential` those are the indices (`0 -> 1` is the Linear at index 0
# feeding the BN at index 1). The shared network and a network with all three slips:

# %%
# NBVAL_CHECK_OUTPUT
sloppy = nn.Sequential(nn.Linear(784, 100), nn.BatchNorm1d(100), nn.ReLU(), nn.Dropout(0.5),
                       nn.Linear(100, 10, bias=False), nn.BatchNorm1d(10))
print(f"the shared network: {len(lint_batchnorm(net, digits.x_test[:8]))} findings")
for finding in lint_batchnorm(sloppy, digits.x_test[:8]):
    print(f"- {finding.kind} ({finding.where}): {finding.message}")

# %% [markdown]
# ## Your turn: the dashboard
#
# The shared network, tested every way of section 1: choose the test batch size, the order of the test digits
# and how the network is tested. Every setting was computed above; a move only redraws. It starts on item 3 of
# Things to try.
#
# Things to try, predicting first:
#
# 1. In training mode, class-sorted: move the batch size from 2 to 1,000. Where does the accuracy leave chance,
#    and which classes come back first (right panel)?
# 2. Choose a batch of 1 in training mode. What does the dashboard say, and why does eval mode not care?
# 3. *eval() after a training-mode pass*, class-sorted, batches of 2: which classes does the polluted network get
#    right, and which does it lose? Compare with the order the pass saw the classes in.

# %%
ForgotEvalDashboard(table=table, mode="polluted", order="class-sorted", batch_size=2)

# %% [markdown]
# ## What the papers and the folklore claim, and what we measured
#
# | claim | source | here |
# |---|---|---|
# | forgetting `eval()` costs most at small test batches; class-sorted batches 0.24; running statistics get polluted by test data | course reference (bn-facts) | **reproduced, and worse for sorted digits**: training mode in class-sorted batches of 2 to 100 gets 0.12–0.15 (one class per batch); a polluting pass leaves eval mode at 0.77 after class-sorted pairs, and costs nothing after shuffled batches of 100 |
# | a batch of one raises in training mode; (1, C, H, W) does not | PyTorch; bn-facts | **reproduced**; the $(1, C, H, W)$ case is instance norm. Measured here besides: a silent last batch of **two** costs a median 0.17 of accuracy right after the update; the next few updates repair it, so what it hurts is whatever reads the network at the epoch's end (validation, checkpoint, the final network) |
# | the EMA vs precise gap at momentum 0.001 is mostly initialization bias | course reference (bn-facts); Wu & Johnson 2021 recommend precise BN | **reproduced at w = 0.001** for both inits and three seeds each: in the statistics, bias correction leaves at most about a third of the mean's gap and a quarter of the variance's; the rest is lag. In accuracy corrected beats raw everywhere, but the share of the gap it closes is too noisy to split (33% to 110% over runs) |
# | freeze BN for small-batch fine-tuning; `requires_grad` and mode are separate switches | common practice; PyTorch docs | **reproduced**: only frozen statistics survive batches of 2 (0.95 against about 0.33); `requires_grad_(False)` alone does not help; `eval()` before a loop that calls `model.train()` is the same run bit for bit |
# | BN before the nonlinearity | Ioffe & Szegedy 2015, Sec. 3.2 | **no difference for ReLU; for sigmoid, after is better** in every seed (by about 0.03), as bn-facts reports for a deeper net; cause not separated |
# | dropout before BN causes a variance shift that hurts at test time | Li et al. 2019 | **shift reproduced** (BN 2 at about 0.75 of its stored variance, as predicted, compounding to BN 3); **the harm is not** in this MLP: removing the shift recovers nothing |
# | a bias before BN is redundant | Ioffe & Szegedy 2015, Sec. 3.2; lecture 2 | **reproduced in training**: gradient of rounding size, the bias never moves, same predictions on every test digit |
# | BN after the final layer is a mistake | course reference (bn-facts) | **measured**: accuracy unchanged, confidence capped (top probability 0.68 without affine; the loss cannot go below 0.278) |
# | folding BN is exact and speeds up inference | lecture 5; common practice | **exact to float32 rounding**; the speed-up is small for large batches and larger for a single example (timed under load) |
#
# ## Summary
#
# - Evaluate in `eval()` mode, always: in training mode a prediction depends on its batch-mates, and a
#   class-sorted test set is at chance; a validation pass in training mode rewrites the running statistics
#   (`torch.no_grad()` does not stop it), and a class-sorted one damages the network for good.
# - A batch of one raises in training mode; a batch of two does not and is worse: one update on it costs a median
#   0.17 of accuracy, which the next few updates repair, but a validation pass or checkpoint right after the
#   short batch at an epoch's end, and the network training hands back, see the damage. Use `drop_last=True`; a
#   batch of one is fine in eval mode.
# - A running average holds $(1-w)^t$ of its initial value. With $wt$ small, recompute precise statistics: bias
#   correction removes the initial value's share (most of the gap at $w = 0.001$ here, measured in the
#   statistics) but not the lag while the statistics still move.
# - To fine-tune in small batches, freeze the statistics (eval mode that survives `model.train()`);
#   `requires_grad_(False)` freezes only $\gamma$ and $\beta$.
# - BN before or after ReLU: no measurable difference here; after a sigmoid: better. Dropout before BN shifts the
#   variance at test time; here harmlessly. A bias before BN is dead weight. BN on the logits caps the
#   confidence. Folding is exact and saves inference time.
#
# ## Questions
#
# 1. A validation set is stored sorted by class and evaluated in training mode in batches of 100 under
#    `torch.no_grad()`. Name the two things that go wrong, and the one line that fixes both.
# 2. $N = 50{,}001$ training examples, batch size 100, `drop_last=False`. What happens, and when? With $N = 50{,}002$?
#    Why is the second case worse?
# 3. With momentum 0.01, how many updates until the initial value's share is below 1%? A fine-tuning run of 200
#    updates starts from pretrained running statistics instead of 0 and 1: is the "initial value" then still a
#    problem?
# 4. The bias before BN gets a gradient of about $10^{-8}$. With weight decay $\lambda$ and SGD, what happens to it
#    over training, and does the network's output change?
# 5. Adam divides each step by the square root of a running mean of squared gradients, plus $\epsilon = 10^{-8}$.
#    What step does a parameter whose gradient is rounding noise of size $10^{-8}$ take? Does it change the
#    network's output in training mode? In eval mode, just after such a step?
# 6. The lint finds a BN after the output layer by the order of module calls. Construct a model where the call
#    order misleads it (a residual block is a good start).
# 7. Section 6 found the variance shift harmless here. Which change to the network would you expect to make it
#    matter (think of what the layers after the shifted one do with a smaller input), and how would you test it?
#
# Next: [Lecture 13 — beyond one device](13_distributed.ipynb): batch statistics across processes with
# `torch.distributed`.
