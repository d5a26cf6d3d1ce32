# %% [markdown]
# # Exercise 5 — Batch norm in practice
#
# **Goals.** After this exercise you have
# 1. found and fixed, in a short training script, the batch norm slips that lecture 12 measured: a bias right
#    before batch norm and a batch norm on the logits, a last batch of one (or a silent one of two), evaluation and
#    prediction in training mode, running statistics polluted under `torch.no_grad()`, a mode not restored, and
#    "frozen" batch norm whose statistics still move;
# 2. combined the batch statistics of several workers exactly (Chan et al.'s parallel variance), as synchronized
#    batch norm does, so that every worker's output equals batch norm of the whole batch.
#
# **Before you start.** Lecture 12 (batch norm in practice) for part A, lecture 13 (beyond one device) for part B.
#
# **How this works.** As before: code where it says `# YOUR CODE HERE`, run the tests below it. In part A the
# tests train a small batch norm network of their own, hand it to your function in training mode, in eval mode
# or with frozen batch norm layers, and look at everything: what your function returned, the running statistics,
# the parameters and every module's `training` flag afterwards. A failing test names **every** slip still
# present, one message per kind. Here torch's `nn.BatchNorm1d` is allowed (it is the point); graded code may not
# import `bnlab`.

# %% locked id=ex5_setup
import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)


def make_data(n, seed=0, classes=10, features=64):
    """A 10-class problem, the same classes for every seed: x float32 (n, 64), y int64 (n,). Features have
    different offsets and scales, so batch norm's statistics matter."""
    fixed = np.random.default_rng(1234)
    centres = fixed.normal(0.0, 0.5, (classes, features))
    offset, scale = fixed.normal(0.0, 2.0, features), fixed.uniform(0.5, 2.0, features)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (centres[y] + rng.normal(0.0, 1.0, (n, features))) * scale + offset
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)

# %% [markdown]
# ## Part A: the script as found
#
# A colleague's training script, split into functions. It runs (mostly), and every function holds at least one
# of lecture 12's slips. The cell below is locked: it is the script as found, with the prefix `buggy_`. Run the
# cell after it to watch the slips happen, measure more in cells of your own, then write the fixed functions,
# under the names without the prefix, in the task cells.

# %% locked id=ex5_as_found
def buggy_make_model(in_features, hidden, classes):
    return nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, classes), nn.BatchNorm1d(classes))


def buggy_make_batches(n, batch_size, rng):
    order = rng.permutation(n)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]


def buggy_evaluate(model, x, y, batch_size):
    correct = 0
    with torch.no_grad():                      # "no gradients, so nothing can change"
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(dim=1) == y[start:start + batch_size]).sum())
    model.train()                              # back to training
    return correct / len(x)


def buggy_predict_one(model, x1):
    with torch.no_grad():
        return int(model(x1.unsqueeze(0)).argmax(dim=1))


def buggy_fine_tune(model, x, y, steps, lr):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.requires_grad_(False)       # "freeze batch norm"
    for step in range(steps):
        model.train()
        loss = F.cross_entropy(model(x[2 * step:2 * step + 2]), y[2 * step:2 * step + 2])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p -= lr * p.grad


def buggy_train(model, x, y, epochs, batch_size, lr, seed=0):
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        for batch in buggy_make_batches(len(x), batch_size, rng):
            model.train()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            model.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= lr * p.grad

# %%
# The script as found, run (well under a second). 2049 = 32 * 64 + 1 training examples.
x_train, y_train = make_data(2049, seed=1)
x_test, y_test = make_data(400, seed=2)
model = buggy_make_model(64, 32, 10)
try:
    buggy_train(model, x_train, y_train, epochs=3, batch_size=64, lr=0.1)
except ValueError as error:
    print(f"training stopped: ValueError: {error}")
buggy_train(model, x_train[:2048], y_train[:2048], epochs=3, batch_size=64, lr=0.1)
by_class = torch.argsort(y_test, stable=True)
for order, index in (("shuffled", torch.arange(len(y_test))), ("sorted by class", by_class)):
    for batch_size in (2, 100):
        accuracy = buggy_evaluate(copy.deepcopy(model), x_test[index], y_test[index], batch_size)
        print(f"buggy_evaluate, {order:15} batches of {batch_size:3d}: accuracy {accuracy:.3f}")
probe = copy.deepcopy(model)
before = probe[1].running_mean.clone()
buggy_evaluate(probe, x_test[by_class], y_test[by_class], 2)
print(f"running_mean of the first batch norm layer moved by up to {(probe[1].running_mean - before).abs().max():.2f}")
try:
    buggy_predict_one(model, x_test[0])
except ValueError as error:
    print(f"buggy_predict_one: ValueError: {error}")
before = model[1].running_var.clone()
buggy_fine_tune(model, x_test[:40], y_test[:40], steps=20, lr=0.01)
print(f"after 'frozen' fine-tuning, running_var moved by up to {(model[1].running_var / before - 1).abs().max():.0%}")

# %% [markdown]
# ## Recap
#
# Lecture 12's rules, measured there on MNIST:
#
# * A batch norm layer in **training mode** normalizes with the statistics of the batch it is given and updates
#   its running statistics, $r \leftarrow (1-w)\,r + w\,b$, whether or not gradients are on. After $k$ batches the
#   last $j$ of them carry
#
# $$
# 1-(1-w)^{j} \quad\text{of the running statistics: at } w = 0.1 \text{ the last 22 batches carry 90\%.}
# $$
#
# * In **eval mode** it uses the running statistics: a prediction does not depend on its batch-mates, a batch of
#   one is fine, nothing is updated. `model.train()` and `model.eval()` set the flag of every submodule.
# * A channel needs two values for a variance: a training-mode batch of one raises. A batch of two does not,
#   and is worse: it normalizes to $\pm 1$ and one update on it costs a large share of the accuracy.
# * `requires_grad_(False)` freezes $\gamma$ and $\beta$, not the statistics; `eval()` freezes the statistics,
#   until the next `model.train()`.
#
# ## Task 1: `make_model(in_features, hidden, classes)`
#
# Return an `nn.Sequential` with two hidden layers, each `Linear` → `BatchNorm1d` → `ReLU` (`hidden` units), then
# a `Linear` to the `classes` outputs (the logits): the colleague's network without its two structural slips.
# Batch norm layers keep their defaults. Hidden tests use other sizes.
#
# **Hint.** Lecture 12, sections 7 and 8 (and its `lint_batchnorm`, section 10, which finds both).

# %% solution id=ex5_make_model
def make_model(in_features, hidden, classes):
    """Two hidden layers Linear -> BatchNorm1d -> ReLU, then a Linear to the logits."""
    ### BEGIN SOLUTION
    return nn.Sequential(nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))
    ### END SOLUTION

# %% tests id=ex5_make_model_tests points=2
from bnlab.grading import checks
checks.practice_model(make_model)

# %% tests id=ex5_make_model_hidden points=1
from bnlab.grading import checks
print("Hidden tests of make_model run when your work is graded: other sizes.")
### BEGIN HIDDEN TESTS
checks.practice_model_sizes(make_model)
### END HIDDEN TESTS

# %% [markdown]
# ## Task 2: `make_batches(n, batch_size, rng)`
#
# The batches of one training epoch: a list of 1-D arrays of example indices, a shuffled order drawn from `rng`
# (a `np.random.Generator`: `rng.permutation(n)`), each index at most once. **No batch may be smaller than
# `batch_size`.** Two rules are accepted: drop the remainder of $n \bmod$ `batch_size` examples, as
# `DataLoader(..., drop_last=True)` does (shuffling moves it into other batches next epoch), or merge it into the
# previous batch. Hidden tests use other sizes.
#
# **Hint.** Why not "at least two"? Lecture 12 measured one update on a batch of two *and* of four: both cost a
# large share of the accuracy.

# %% solution id=ex5_make_batches
def make_batches(n, batch_size, rng):
    """Shuffled index batches for one epoch, none smaller than batch_size."""
    ### BEGIN SOLUTION
    shuffled = rng.permutation(n)
    full = n - n % batch_size                  # the remainder is dropped, as with DataLoader(drop_last=True)
    return [shuffled[start:start + batch_size] for start in range(0, full, batch_size)]
    ### END SOLUTION

# %% tests id=ex5_make_batches_tests points=2
from bnlab.grading import checks
checks.practice_batches(make_batches)

# %% tests id=ex5_make_batches_hidden points=1
from bnlab.grading import checks
print("Hidden tests of make_batches run when your work is graded: other sizes.")
### BEGIN HIDDEN TESTS
checks.practice_batches_sizes(make_batches)
### END HIDDEN TESTS

# %% [markdown]
# ## Task 3: `evaluate(model, x, y, batch_size)`
#
# The accuracy of `model` on `x` (N, D) with labels `y` (N,): the fraction of examples whose largest logit is
# the label, computed in consecutive batches of `batch_size` in the order given. The answer must not depend on the
# order or the batch size, the running statistics and parameters must not change, and the model must leave
# `evaluate` in the mode it came in: **every module's** `training` flag as it was (a model being fine-tuned keeps
# its batch norm layers in eval mode inside a model in training mode). Hidden tests pass a model in eval mode and
# one with frozen batch norm layers.
#
# **Hint.** Lecture 12, section 1. `torch.no_grad()` is for speed; it changes no mode.

# %% solution id=ex5_evaluate
def evaluate(model, x, y, batch_size):
    """Eval-mode accuracy of model on (x, y) in batches; every module's mode restored."""
    ### BEGIN SOLUTION
    modes = [(module, module.training) for module in model.modules()]
    model.eval()                               # running statistics: batch-mates do not matter, nothing updates
    hits = 0
    with torch.no_grad():                      # for speed only: it changes no mode
        for begin in range(0, len(x), batch_size):
            predicted = model(x[begin:begin + batch_size]).argmax(dim=1)
            hits += int((predicted == y[begin:begin + batch_size]).sum())
    for module, mode in modes:                 # every module back in the mode it came in
        module.training = mode
    return hits / len(x)
    ### END SOLUTION

# %% tests id=ex5_evaluate_tests points=2
from bnlab.grading import checks
checks.practice_evaluate(evaluate)

# %% tests id=ex5_evaluate_hidden points=1
from bnlab.grading import checks
print("Hidden tests of evaluate run when your work is graded: a model in eval mode, one whose batch norm layers "
      "are frozen in eval mode.")
### BEGIN HIDDEN TESTS
checks.practice_evaluate_modes(evaluate)
### END HIDDEN TESTS

# %% [markdown]
# ## Task 4: `predict_one(model, x1)`
#
# The predicted class (an `int`) of one example `x1` of shape (D,), with the same rules as `evaluate`: the
# prediction must be the one the model makes in eval mode, nothing may change, every module's mode is restored.
# Hidden tests pass a model in eval mode and one with frozen batch norm layers.
#
# **Hint.** Lecture 12, section 2: what does a batch of one do in training mode, and in eval mode? (Repeating
# the example to make a batch of two is not a fix: try it.)

# %% solution id=ex5_predict_one
def predict_one(model, x1):
    """The eval-mode prediction for one example x1 of shape (D,); every module's mode restored."""
    ### BEGIN SOLUTION
    modes = [(module, module.training) for module in model.modules()]
    model.eval()                               # a batch of one is fine in eval mode
    with torch.no_grad():                      # for speed only
        logits = model(x1.unsqueeze(0))        # (1, D): the example as a batch of one
    for module, mode in modes:
        module.training = mode
    return int(logits.argmax(dim=1))
    ### END SOLUTION

# %% tests id=ex5_predict_one_tests points=2
from bnlab.grading import checks
checks.practice_predict(predict_one)

# %% tests id=ex5_predict_one_hidden points=1
from bnlab.grading import checks
print("Hidden tests of predict_one run when your work is graded: a model in eval mode, one whose batch norm layers "
      "are frozen in eval mode.")
### BEGIN HIDDEN TESTS
checks.practice_predict_modes(predict_one)
### END HIDDEN TESTS

# %% [markdown]
# ## Task 5: `fine_tune(model, x, y, steps, lr)`
#
# Train `model` (in place) for `steps` plain SGD updates in batches of two, `x[2t:2t+2]` at step `t`, on the
# mean cross-entropy (`F.cross_entropy`): `p -= lr * p.grad` for every parameter that requires a gradient, as the
# script does. Batches of two are far too small for batch statistics, so batch norm is **frozen**: every batch
# norm layer of the model (nested ones included: `model.modules()`) normalizes with its running statistics in
# every forward of the loop, and they do not change. Whether $\gamma$ and $\beta$ train or stay fixed is your
# choice (both are accepted). The loop keeps its `model.train()` (it stands for the evaluation a real loop calls
# between steps). Hidden tests use a network whose batch norm layers sit in nested blocks.
#
# **Hint.** Lecture 12, section 4: what do `requires_grad_(False)` and `eval()` each freeze, and what undoes
# `eval()`?

# %% solution id=ex5_fine_tune
def fine_tune(model, x, y, steps, lr):
    """SGD in batches of two with every batch norm layer's statistics frozen."""
    ### BEGIN SOLUTION
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm1d)]
    params = [p for p in model.parameters() if p.requires_grad]
    for t in range(steps):
        model.train()                          # the loop's call puts every module in training mode, so
        for norm in norms:
            norm.eval()                        # batch norm goes back to eval mode after it, in every step
        loss = F.cross_entropy(model(x[2 * t:2 * t + 2]), y[2 * t:2 * t + 2])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():                  # the update is not part of the graph
            for p, g in zip(params, grads):
                p -= lr * g
    ### END SOLUTION

# %% tests id=ex5_fine_tune_tests points=2
from bnlab.grading import checks
checks.practice_fine_tune(fine_tune)

# %% tests id=ex5_fine_tune_hidden points=1
from bnlab.grading import checks
print("Hidden tests of fine_tune run when your work is graded: batch norm layers nested in blocks.")
### BEGIN HIDDEN TESTS
checks.practice_fine_tune_nested(fine_tune)
### END HIDDEN TESTS

# %% [markdown]
# ## Part B: synchronized statistics
#
# With data parallelism each of $W$ workers holds a part of the batch: worker $k$ has $n_k$ examples (the parts
# may differ in size). Synchronized batch norm normalizes every part with the statistics of the **whole** batch,
# without ever gathering it: each worker computes, per channel, its count, mean and sum of squared deviations,
#
# $$
# n_k,\qquad \bar x_k = \frac{1}{n_k}\sum_{i\in k} x_i,\qquad M_k = \sum_{i\in k}\big(x_i-\bar x_k\big)^2 ,
# $$
#
# the workers exchange these summaries (one all-reduce), and each combines them exactly (Chan, Golub & LeVeque):
#
# $$
# n=\sum_k n_k,\qquad \mu=\frac{1}{n}\sum_k n_k\,\bar x_k,\qquad
# \sigma^2=\frac{1}{n}\Big(\sum_k M_k+\sum_k n_k\big(\bar x_k-\mu\big)^2\Big) .
# $$
#
# Here the workers are simulated: a list of numpy arrays, no processes.
#
# ## Task 6: `combine_statistics(counts, means, m2s)`
#
# From the summaries only: `counts` (W,) integers, `means` and `m2s` (W, C). Return `(mean, var)`, each (C,): the
# global mean and the global **biased** variance. A worker may hold no examples ($n_k = 0$, mean and $M_k$ zero):
# it then adds nothing. Do not change the arguments. Hidden tests add a worker with one example and an empty one.
#
# **Hint.** Which of the three sums is the "between workers" term, and why is the average of the workers'
# variances not the variance?

# %% solution id=ex5_combine
def combine_statistics(counts, means, m2s):
    """Global (mean, biased variance), each (C,), from per-worker counts (W,), means (W, C) and M_k (W, C)."""
    ### BEGIN SOLUTION
    weights = np.asarray(counts, dtype=np.float64)[:, None]
    n = weights.sum()
    mean = (weights * means).sum(axis=0) / n
    m2 = m2s.sum(axis=0) + (weights * (means - mean) ** 2).sum(axis=0)
    return mean, m2 / n
    ### END SOLUTION

# %% tests id=ex5_combine_tests points=2
from bnlab.grading import checks
checks.sync_combine(combine_statistics)

# %% tests id=ex5_combine_hidden points=1
from bnlab.grading import checks
print("Hidden tests of combine_statistics run when your work is graded: a worker with one example, an empty "
      "worker.")
### BEGIN HIDDEN TESTS
checks.sync_combine_more(combine_statistics)
### END HIDDEN TESTS

# %% [markdown]
# ## Task 7: `sync_batchnorm_forward(parts, gamma, beta, eps=1e-5)`
#
# `parts` is a list of (n_k, C) float64 arrays, one per worker, every $n_k \ge 1$. Each worker computes its
# summary $(n_k, \bar x_k, M_k)$ from its own part, the summaries are combined with your `combine_statistics`, and
# each worker normalizes its own part with the global statistics: $y = \gamma\,(x-\mu)/\sqrt{\sigma^2+\epsilon} +
# \beta$. Return the list of outputs, one per worker, each shaped like its part. The tests compare them with
# batch norm of the concatenated batch. Hidden tests: three workers, one of them with a single example, a nearly
# constant channel, another `eps`.
#
# **Hint.** The worker with one example: what would *local* batch norm output there?

# %% solution id=ex5_sync_forward
def sync_batchnorm_forward(parts, gamma, beta, eps=1e-5):
    """Batch norm over all workers' parts together; one output per worker."""
    ### BEGIN SOLUTION
    counts = np.array([len(part) for part in parts])
    means = np.array([part.mean(axis=0) for part in parts])
    m2s = np.array([((part - part.mean(axis=0)) ** 2).sum(axis=0) for part in parts])
    mean, var = combine_statistics(counts, means, m2s)
    return [gamma * (part - mean) / np.sqrt(var + eps) + beta for part in parts]
    ### END SOLUTION

# %% tests id=ex5_sync_forward_tests points=2
from bnlab.grading import checks
checks.sync_forward(sync_batchnorm_forward)

# %% tests id=ex5_sync_forward_hidden points=1
from bnlab.grading import checks
print("Hidden tests of sync_batchnorm_forward run when your work is graded: three workers, one with a single "
      "example, a nearly constant channel, another eps.")
### BEGIN HIDDEN TESTS
checks.sync_forward_more(sync_batchnorm_forward)
### END HIDDEN TESTS

# %% [markdown]
# ## Two questions
#
# **Q6.** A training set of $N = 50{,}002$ examples, batch size 100, `DataLoader(..., shuffle=True)` with its
# default `drop_last=False`, a network with `BatchNorm1d`. What happens in every epoch?
#
# * (a) the last batch raises a ValueError and the epoch ends
# * (b) the last batch, of two examples, trains without any error: batch norm turns it into $\pm 1$ per unit,
#   and the update on it can cost much of the accuracy
# * (c) nothing: PyTorch skips batches that are too small for batch norm
# * (d) the two examples wait for the next epoch's first batch
#
# Answer with one letter, e.g. `answer_q6 = "a"`.

# %% solution id=ex5_q6
### BEGIN SOLUTION
answer_q6 = "b"
### END SOLUTION

# %% tests id=ex5_q6_tests points=1
from bnlab.grading import checks
checks.choice(answer_q6, options="abcd")
### BEGIN HIDDEN TESTS
checks.choice(answer_q6, options="abcd", correct="b",
              why="50,002 = 500 * 100 + 2: the last batch holds two examples, which raises nothing (a channel has "
                  "two values) and normalizes them to +-1.")
### END HIDDEN TESTS

# %% [markdown]
# **Q7.** Why do the workers send $(n_k, \bar x_k, M_k)$ rather than $(n_k, \sum x, \sum x^2)$, from which the
# variance $\frac{1}{n}\sum x^2 - \mu^2$ follows too?
#
# * (a) a sum of squares cannot be added up by an all-reduce
# * (b) fewer numbers cross the network
# * (c) when a channel's mean is large compared with its spread, $\frac{1}{n}\sum x^2$ and $\mu^2$ are large and
#   nearly equal, and in float32 their difference keeps mostly rounding error; sums of squared deviations cancel
#   nothing
# * (d) $M_k$ gives the unbiased variance directly
#
# Answer with one letter, e.g. `answer_q7 = "a"`.

# %% solution id=ex5_q7
### BEGIN SOLUTION
answer_q7 = "c"
### END SOLUTION

# %% tests id=ex5_q7_tests points=1
from bnlab.grading import checks
checks.choice(answer_q7, options="abcd")
### BEGIN HIDDEN TESTS
checks.choice(answer_q7, options="abcd", correct="c",
              why="Both summaries are sums an all-reduce adds, of the same size; the one-pass variance cancels "
                  "catastrophically far from zero (exercise 1's float32 batch at a mean of 3000), the deviations "
                  "do not.")
### END HIDDEN TESTS
