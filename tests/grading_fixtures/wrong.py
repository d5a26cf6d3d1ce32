"""Learner-style implementations, right and deliberately wrong, as source text for notebooks and in-process use.

Each wrong version makes one classic mistake; the grading tests check that the grader names it. Sources are
text (not functions) so the same code can be pasted into a submitted notebook and graded end to end.
"""

from __future__ import annotations

import numpy as np

FORWARD = '''
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    xhat = (x - mu) / np.sqrt(var + eps)
    out = gamma.reshape(shape) * xhat + beta.reshape(shape)
    return out, {"x": x, "xhat": xhat, "mu": mu, "var": var, "eps": eps, "gamma": gamma.reshape(shape),
                 "axes": axes}
'''


def forward_with(old: str, new: str) -> str:
    """FORWARD with one line changed (the change must apply)."""
    assert old in FORWARD, old
    return FORWARD.replace(old, new)


WRONG_FORWARD = {
    "unbiased_variance": forward_with("var = x.var(axis=axes, keepdims=True)",
                                      "var = x.var(axis=axes, keepdims=True, ddof=1)"),
    "eps_outside_sqrt": forward_with("np.sqrt(var + eps)", "(np.sqrt(var) + eps)"),
    "eps_missing": forward_with("np.sqrt(var + eps)", "np.sqrt(var)"),
    "per_example_statistics": forward_with("axes = (0,) + tuple(range(2, x.ndim))",
                                           "axes = tuple(range(1, x.ndim))"),
    "no_affine": forward_with("out = gamma.reshape(shape) * xhat + beta.reshape(shape)", "out = xhat"),
    "gamma_beta_swapped": forward_with("out = gamma.reshape(shape) * xhat + beta.reshape(shape)",
                                       "out = beta.reshape(shape) * xhat + gamma.reshape(shape)"),
}
# the variance in one pass, E[x^2] - E[x]^2: right in float64, lost to cancellation in float32 at a large mean
FORWARD_ONE_PASS = forward_with("var = x.var(axis=axes, keepdims=True)",
                                "var = (x * x).mean(axis=axes, keepdims=True) - mu * mu")
# (N, C, H, W) mistakes, seen only by the hidden forward_conv check
WRONG_FORWARD_CONV = {
    "batch_axis_only": forward_with("axes = (0,) + tuple(range(2, x.ndim))", "axes = (0,)"),
    "reshape_without_moving_channels": '''
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    flat = x.reshape(-1, x.shape[1])          # wrong for 4-D: C is not last
    mu, var = flat.mean(axis=0), flat.var(axis=0)
    out = (gamma * (flat - mu) / np.sqrt(var + eps) + beta).reshape(x.shape)
    return out, None
''',
    "missing_keepdims": '''
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    mu, var = x.mean(axis=axes), x.var(axis=axes)     # shape (C,): broadcasts against the last axis
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None
''',
    "reshape_rows_without_transpose": '''
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    rows = x.reshape(x.shape[1], -1)          # wrong for 4-D: each row mixes channels and examples
    mu, var = rows.mean(axis=1, keepdims=True), rows.var(axis=1, keepdims=True)
    out = gamma[:, None] * (rows - mu) / np.sqrt(var + eps) + beta[:, None]
    return out.reshape(x.shape), None
''',
}
FORWARD_IN_PLACE = forward_with("    mu = x.mean(axis=axes, keepdims=True)\n",
                                "    mu = x.mean(axis=axes, keepdims=True)\n    x -= mu\n    mu = 0.0 * mu\n")
FORWARD_NOT_A_PAIR = forward_with("    return out, {", "    return out\n    {")
FORWARD_DROPS_DTYPE = forward_with("    axes = (0,)", "    x = x.astype(np.float64)\n    axes = (0,)")
# float64 input computed (and returned) in the dtype of float32 gamma and beta
FORWARD_TAKES_GAMMAS_DTYPE = forward_with("    axes = (0,)", "    x = x.astype(gamma.dtype)\n    axes = (0,)")

INFERENCE = '''
def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = gamma / np.sqrt(running_var + eps)
    return x * scale.reshape(shape) + (beta - running_mean * scale).reshape(shape)
'''
WRONG_INFERENCE = {
    "batch_statistics_in_eval": '''
def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return gamma.reshape(shape) * xhat + beta.reshape(shape)
''',
    "eps_outside_sqrt": INFERENCE.replace("np.sqrt(running_var + eps)", "(np.sqrt(running_var) + eps)"),
    "sqrt_missing": INFERENCE.replace("np.sqrt(running_var + eps)", "(running_var + eps)"),
}
# float64 input converted to the dtype of float32 running statistics
INFERENCE_TAKES_STATISTICS_DTYPE = INFERENCE.replace("    shape = (1, -1)",
                                                     "    x = x.astype(running_mean.dtype)\n    shape = (1, -1)")
INFERENCE_IN_PLACE = '''
def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    x -= running_mean.reshape(shape)
    x /= np.sqrt(running_var + eps).reshape(shape)
    return x * gamma.reshape(shape) + beta.reshape(shape)
'''

# Backward variants all read the cache of FORWARD.
BACKWARD = '''
def batchnorm_backward(dout, cache):
    x, xhat, mu, var, eps, g, axes = (cache[k] for k in ("x", "xhat", "mu", "var", "eps", "gamma", "axes"))
    m = x.size // x.shape[1]
    xc = x - mu
    std = np.sqrt(var + eps)
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * g
    dinv = (dxhat * xc).sum(axis=axes, keepdims=True)
    dxc = dxhat / std
    dvar = -dinv / std**2 / (2 * std)
    dxc = dxc + 2.0 / m * xc * dvar
    dmu = -dxc.sum(axis=axes, keepdims=True)
    dx = dxc + dmu / m
    return dx, dgamma, dbeta
'''


def backward_with(old: str, new: str) -> str:
    """BACKWARD with one line changed (the change must apply)."""
    assert old in BACKWARD, old
    return BACKWARD.replace(old, new)


WRONG_BACKWARD = {
    "constant_statistics": backward_with("    dx = dxc + dmu / m\n", "    dx = dxhat / std\n"),
    "variance_branch_missing": backward_with("    dxc = dxc + 2.0 / m * xc * dvar\n", ""),
    "mean_branch_missing": backward_with("    dx = dxc + dmu / m\n", "    dx = dxc\n"),
    "mean_gradient_not_summed": backward_with("dmu = -dxc.sum(axis=axes, keepdims=True)", "dmu = -dxc"),
    "variance_gradient_not_summed": backward_with("dinv = (dxhat * xc).sum(axis=axes, keepdims=True)",
                                                  "dinv = dxhat * xc"),
    "gamma_missing": backward_with("dxhat = dout * g", "dxhat = dout"),
    "zeros": backward_with("    return dx, dgamma, dbeta", "    return np.zeros_like(dout), dgamma, dbeta"),
    "dgamma_dbeta_swapped": backward_with("    return dx, dgamma, dbeta", "    return dx, dbeta, dgamma"),
    # invisible on ordinary channels (relative error ~ eps / var): caught on a nearly constant one
    "eps_missing_in_backward": backward_with("    std = np.sqrt(var + eps)\n", "    std = np.sqrt(var)\n"),
}
BACKWARD_DGAMMA_NOT_SUMMED = backward_with("dgamma = (dout * xhat).sum(axis=axes)", "dgamma = dout * xhat")
BACKWARD_DGAMMA_KEEPDIMS = backward_with("dgamma = (dout * xhat).sum(axis=axes)",
                                         "dgamma = (dout * xhat).sum(axis=axes, keepdims=True)")
# dgamma summed over the batch axis only: shape (C, H, W) for (N, C, H, W)
BACKWARD_DGAMMA_AXIS_0 = backward_with("dgamma = (dout * xhat).sum(axis=axes)", "dgamma = (dout * xhat).sum(axis=0)")
# a right forward, and a fused backward on reshape(C, -1) rows of the cached xhat and dout (no transpose)
BACKWARD_RESHAPE_ROWS = '''
def batchnorm_backward(dout, cache):
    xhat, var, eps, g = cache["xhat"], cache["var"], cache["eps"], cache["gamma"]
    c = dout.shape[1]
    d, h = dout.reshape(c, -1), xhat.reshape(c, -1)
    m = d.shape[1]
    dbeta, dgamma = d.sum(axis=1), (d * h).sum(axis=1)
    scale = g.reshape(c, 1) / np.sqrt(var.reshape(c, 1) + eps)
    dx = scale / m * (m * d - dbeta[:, None] - h * dgamma[:, None])
    return dx.reshape(dout.shape), dgamma, dbeta
'''
BACKWARD_CACHE_IN_PLACE = backward_with("    dgamma = (dout * xhat).sum(axis=axes)\n",
                                        "    dgamma = (dout * xhat).sum(axis=axes)\n    cache['xhat'] *= 2.0\n"
                                        "    xhat = xhat / 2.0\n")
BACKWARD_DOUT_IN_PLACE = backward_with("    dxhat = dout * g\n", "    dout *= g\n    dxhat = dout\n"
                                       "    dgamma = dgamma\n")
# A consistent pair on the wrong convention: unbiased variance in the forward, and the matching backward.
UNBIASED_PAIR = (WRONG_FORWARD["unbiased_variance"],
                 backward_with("    m = x.size // x.shape[1]\n", "    m = x.size // x.shape[1]\n    n = m - 1\n")
                 .replace("2.0 / m * xc * dvar", "2.0 / n * xc * dvar"))

LAYER = '''
class BatchNorm:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.eps, self.momentum = eps, momentum
        self.weight, self.bias = np.ones(num_features), np.zeros(num_features)
        self.running_mean, self.running_var = np.zeros(num_features), np.ones(num_features)
        self.training, self.grad = True, {}

    def train(self, mode=True):
        self.training = mode

    def eval(self):
        self.train(False)

    def update(self, mean, var, m):
        k = self.momentum
        self.running_mean = (1 - k) * self.running_mean + k * mean
        self.running_var = (1 - k) * self.running_var + k * var * m / (m - 1)

    def forward(self, x):
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            self.update(mean, var, x.size // x.shape[1])
        else:
            mean, var = self.running_mean, self.running_var
        self.inv = (1 / np.sqrt(var + self.eps)).reshape(shape)
        self.xhat = (x - mean.reshape(shape)) * self.inv
        self.axes, self.shape, self.batch = axes, shape, self.training
        return self.weight.reshape(shape) * self.xhat + self.bias.reshape(shape)

    def backward(self, dout):
        axes, shape, xhat = self.axes, self.shape, self.xhat
        dbeta, dgamma = dout.sum(axis=axes), (dout * xhat).sum(axis=axes)
        self.grad = {"weight": dgamma, "bias": dbeta}
        m = dout.size // dout.shape[1]
        a = self.weight.reshape(shape) * self.inv
        if not self.batch:
            return dout * a
        return a / m * (m * dout - dbeta.reshape(shape) - xhat * dgamma.reshape(shape))
'''


def layer_with(old: str, new: str) -> str:
    """LAYER with one passage changed (the change must apply)."""
    assert old in LAYER, old
    return LAYER.replace(old, new)


WRONG_LAYER = {
    "momentum_swapped": layer_with("k = self.momentum", "k = 1 - self.momentum"),
    "running_var_biased": layer_with("k * var * m / (m - 1)", "k * var"),
    "running_var_init_zero": layer_with("np.ones(num_features)\n", "np.zeros(num_features)\n"),
    "no_update": layer_with("        self.running_mean = (1 - k) * self.running_mean + k * mean\n"
                            "        self.running_var = (1 - k) * self.running_var + k * var * m / (m - 1)\n",
                            "        running_mean = (1 - k) * self.running_mean + k * mean\n"
                            "        running_var = (1 - k) * self.running_var + k * var * m / (m - 1)\n"),
    "update_twice": layer_with("            self.update(mean, var, x.size // x.shape[1])\n",
                               "            self.update(mean, var, x.size // x.shape[1])\n"
                               "            self.update(mean, var, x.size // x.shape[1])\n"),
    "update_in_eval": layer_with("            mean, var = self.running_mean, self.running_var\n",
                                 "            mean, var = self.running_mean, self.running_var\n"
                                 "            self.update(x.mean(axis=axes), x.var(axis=axes),"
                                 " x.size // x.shape[1])\n"),
    "batch_statistics_in_eval": layer_with("        if self.training:\n            mean, var = x.mean(axis=axes), "
                                           "x.var(axis=axes)\n",
                                           "        mean, var = x.mean(axis=axes), x.var(axis=axes)\n"
                                           "        if self.training:\n"),
    "eval_ignored": layer_with("    def eval(self):\n        self.train(False)",
                               "    def eval(self):\n        self.train = False"),
    "momentum_ignored": layer_with("k = self.momentum", "k = 0.1"),
}
# the first update right, every later one with the momentum swapped (Keras's convention from batch 2 on)
LAYER_MOMENTUM_SWAPPED_AFTER_FIRST = layer_with(
    "        k = self.momentum\n",
    "        self.updates = getattr(self, 'updates', 0) + 1\n"
    "        k = self.momentum if self.updates == 1 else 1 - self.momentum\n")
# the first batch's statistics copied into the running statistics
LAYER_FIRST_BATCH_COPIED = layer_with(
    "        k = self.momentum\n",
    "        self.updates = getattr(self, 'updates', 0) + 1\n"
    "        k = 1.0 if self.updates == 1 else self.momentum\n")
WRONG_LAYER_CONV = {
    "running_var_batch_size_only": layer_with("self.update(mean, var, x.size // x.shape[1])",
                                              "self.update(mean, var, x.shape[0])"),
}
WRONG_LAYER["batch_statistics_in_eval"] = WRONG_LAYER["batch_statistics_in_eval"].replace(
    "        else:\n            mean, var = self.running_mean, self.running_var\n", "")

TORCH_FUNCTION = '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps):
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        m = x.numel() // x.shape[1]
        if training:
            mean = x.mean(dim=dims, keepdim=True)
            var = x.var(dim=dims, keepdim=True, unbiased=False)
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(momentum * mean.reshape(-1))
                running_var.mul_(1 - momentum).add_(momentum * var.reshape(-1) * m / (m - 1))
        else:
            mean, var = running_mean.reshape(shape), running_var.reshape(shape)
        inv = 1 / torch.sqrt(var + eps)
        xhat = (x - mean) * inv
        ctx.save_for_backward(xhat, inv, weight)
        ctx.training, ctx.dims, ctx.m = training, dims, m
        return weight.reshape(shape) * xhat + bias.reshape(shape)

    @staticmethod
    def backward(ctx, g):
        xhat, inv, weight = ctx.saved_tensors
        dims, m, shape = ctx.dims, ctx.m, inv.shape
        dbias, dweight = g.sum(dim=dims), (g * xhat).sum(dim=dims)
        a = weight.reshape(shape) * inv
        if not ctx.training:
            return a * g, None, None, dweight, dbias, None, None, None
        dx = a / m * (m * g - dbias.reshape(shape) - xhat * dweight.reshape(shape))
        return dx, None, None, dweight, dbias, None, None, None
'''
TORCH_MODULE = '''
class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        training = self.training
        if training:
            self.num_batches_tracked += 1
        return BatchNormFunction.apply(x, self.running_mean, self.running_var, self.weight, self.bias,
                                       training, self.momentum, self.eps)
'''
WRONG_TORCH_FUNCTION = {
    "constant_statistics": TORCH_FUNCTION.replace(
        "        dx = a / m * (m * g - dbias.reshape(shape) - xhat * dweight.reshape(shape))\n",
        "        dx = a * g\n"),
    "unbiased_variance": TORCH_FUNCTION.replace("unbiased=False", "unbiased=True"),
    "momentum_swapped": TORCH_FUNCTION.replace("mul_(1 - momentum).add_(momentum * ",
                                               "mul_(momentum).add_((1 - momentum) * "),
}
# the backward ignores the mode: the training formula after an eval forward (with the running statistics)
TORCH_FUNCTION_TRAINING_BACKWARD_IN_EVAL = TORCH_FUNCTION.replace(
    "        if not ctx.training:\n            return a * g, None, None, dweight, dbias, None, None, None\n", "")
WRONG_TORCH_MODULE = {
    "mode_from_grad": TORCH_MODULE.replace("training = self.training", "training = torch.is_grad_enabled()"),
}
TORCH_MODULE_NOT_A_PARAMETER = TORCH_MODULE.replace("nn.Parameter(torch.ones(num_features))",
                                                    "torch.ones(num_features, requires_grad=True)")
# a layer whose forward centres x in place, and one whose backward scales dout in place
LAYER_X_IN_PLACE = LAYER.replace("        self.xhat = (x - mean.reshape(shape)) * self.inv\n",
                                 "        x -= mean.reshape(shape)\n        self.xhat = x * self.inv\n")
LAYER_DOUT_IN_PLACE = LAYER.replace(  # right gradients, but dout is centred in the caller's array
    "        return a / m * (m * dout - dbeta.reshape(shape) - xhat * dgamma.reshape(shape))\n",
    "        dout -= dout.mean(axis=axes, keepdims=True)\n"
    "        return a * (dout - xhat * dgamma.reshape(shape) / m)\n")
# a function that assumes running statistics are always given (the task allows None in training mode)
TORCH_FUNCTION_NEEDS_RUNNING = TORCH_FUNCTION.replace("            if running_mean is not None:\n",
                                                      "            if True:\n")
# num_batches_tracked as a float, and counted on every forward (eval ones too)
TORCH_MODULE_TRACKED_FLOAT = TORCH_MODULE.replace('torch.tensor(0))', 'torch.tensor(0.0))')
# the right values, returned in float64 for float32 input
TORCH_MODULE_DOUBLE_OUTPUT = TORCH_MODULE.replace(
    "        return BatchNormFunction.apply(x, self.running_mean, self.running_var, self.weight, self.bias,\n"
    "                                       training, self.momentum, self.eps)\n",
    "        return BatchNormFunction.apply(x, self.running_mean, self.running_var, self.weight, self.bias,\n"
    "                                       training, self.momentum, self.eps).double()\n")
# the fused backward with m = N: right for (N, C), wrong for (N, C, H, W)
BACKWARD_M_IS_N = backward_with("    m = x.size // x.shape[1]\n", "    m = x.shape[0]\n")
TORCH_MODULE_STATISTICS_AS_PARAMETERS = TORCH_MODULE.replace(
    'self.register_buffer("running_mean", torch.zeros(num_features))',
    "self.running_mean = nn.Parameter(torch.zeros(num_features), requires_grad=False)")
TORCH_MODULE_EXTRA_STATE = TORCH_MODULE.replace(
    'self.register_buffer("num_batches_tracked", torch.tensor(0))',
    'self.register_buffer("num_batches_tracked", torch.tensor(0))\n'
    '        self.register_buffer("saved_mean", torch.zeros(num_features))')
TORCH_MODULE_CALLS_TORCH = '''
class BatchNorm2d(nn.BatchNorm2d):
    pass
'''


def load(source: str, name: str):
    """Execute learner source (numpy as np, torch, nn available) and return the object called ``name``."""
    namespace = {"np": np}
    if "torch" in source:
        import torch
        from torch import nn

        namespace.update(torch=torch, nn=nn)
        if "BatchNormFunction.apply" in source and "class BatchNormFunction" not in source:
            exec(TORCH_FUNCTION, namespace)  # noqa: S102 -- test fixture
    exec(source, namespace)  # noqa: S102 -- test fixture
    return namespace[name]
# not an autograd.Function: plain tensor operations, so autograd differentiates the forward (no hand-written
# backward at all)
TORCH_FUNCTION_WITHOUT_BACKWARD = TORCH_FUNCTION.replace(
    "class BatchNormFunction(torch.autograd.Function):\n    @staticmethod\n    def forward(ctx, ",
    "class BatchNormFunction:\n    @staticmethod\n    def apply(").replace(
    "        ctx.save_for_backward(xhat, inv, weight)\n        ctx.training, ctx.dims, ctx.m = training, dims, m\n", "")


# ------------------------------------------------------------------------ exercise 5: batch norm in practice
# Right versions (PRACTICE), and wrong ones: {label: (source, the slips the check must name, the check that
# catches it)}. Checks are checks.<name>; "hidden" ones are the names ending in _sizes, _modes, _nested, _more.

PRACTICE = {
    "make_model": '''
def make_model(in_features, hidden, classes):
    return nn.Sequential(nn.Linear(in_features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))
''',
    "make_batches": '''
def make_batches(n, batch_size, rng):
    order = rng.permutation(n)
    return [order[start:start + batch_size] for start in range(0, n - batch_size + 1, batch_size)]
''',
    "evaluate": '''
def evaluate(model, x, y, batch_size):
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(dim=1) == y[start:start + batch_size]).sum())
    for module, mode in modes:
        module.training = mode
    return correct / len(x)
''',
    "predict_one": '''
def predict_one(model, x1):
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    with torch.no_grad():
        logits = model(x1.unsqueeze(0))
    for module, mode in modes:
        module.training = mode
    return int(logits.argmax(dim=1))
''',
    "fine_tune": '''
def fine_tune(model, x, y, steps, lr):
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm1d)]
    for step in range(steps):
        model.train()
        for norm in norms:
            norm.eval()
        loss = F.cross_entropy(model(x[2 * step:2 * step + 2]), y[2 * step:2 * step + 2])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p -= lr * p.grad
''',
    "combine_statistics": '''
def combine_statistics(counts, means, m2s):
    weights = np.asarray(counts, dtype=np.float64)[:, None]
    n = weights.sum()
    mean = (weights * means).sum(axis=0) / n
    m2 = m2s.sum(axis=0) + (weights * (means - mean) ** 2).sum(axis=0)
    return mean, m2 / n
''',
    "sync_batchnorm_forward": '''
def sync_batchnorm_forward(parts, gamma, beta, eps=1e-5):
    counts = np.array([len(part) for part in parts])
    means = np.array([part.mean(axis=0) for part in parts])
    m2s = np.array([((part - part.mean(axis=0)) ** 2).sum(axis=0) for part in parts])
    mean, var = combine_statistics(counts, means, m2s)
    return [gamma * (part - mean) / np.sqrt(var + eps) + beta for part in parts]
''',
}


def practice_with(name: str, old: str, new: str) -> str:
    """PRACTICE[name] with one piece changed (the change must apply)."""
    assert old in PRACTICE[name], old
    return PRACTICE[name].replace(old, new)


# other right answers, which every check must accept
PRACTICE_ALSO_RIGHT = {
    # the remainder merged into the previous batch; a generator
    "make_batches": '''
def make_batches(n, batch_size, rng):
    order = rng.permutation(n)
    starts = list(range(0, n - batch_size + 1, batch_size))
    for index, start in enumerate(starts):
        yield order[start:] if index == len(starts) - 1 else order[start:start + batch_size]
''',
    # the model evaluated as a copy in eval mode (the original untouched), accuracy as a 0-d tensor
    "evaluate": '''
import copy
def evaluate(model, x, y, batch_size):
    frozen = copy.deepcopy(model).eval()
    with torch.no_grad():
        logits = torch.cat([frozen(x[s:s + batch_size]) for s in range(0, len(x), batch_size)])
    return (logits.argmax(dim=1) == y).float().mean()
''',
    # gamma and beta frozen too (requires_grad_(False) and eval mode inside the loop)
    "fine_tune": practice_with("fine_tune", "    for step in range(steps):\n",
                               "    for norm in norms:\n        norm.requires_grad_(False)\n"
                               "    for step in range(steps):\n"),
}

# the script as found (the master's locked cell ex5_as_found, without the buggy_ prefix); the wrong versions below
# name what their message must hold: labels of bnlab.grading.practice_checks.EXPLANATIONS, or literal text
AS_FOUND = {
    "make_model": '''
def make_model(in_features, hidden, classes):
    return nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, classes), nn.BatchNorm1d(classes))
''',
    "make_batches": '''
def make_batches(n, batch_size, rng):
    order = rng.permutation(n)
    return [order[start:start + batch_size] for start in range(0, n, batch_size)]
''',
    "evaluate": '''
def evaluate(model, x, y, batch_size):
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            correct += int((logits.argmax(dim=1) == y[start:start + batch_size]).sum())
    model.train()
    return correct / len(x)
''',
    "predict_one": '''
def predict_one(model, x1):
    with torch.no_grad():
        return int(model(x1.unsqueeze(0)).argmax(dim=1))
''',
    "fine_tune": '''
def fine_tune(model, x, y, steps, lr):
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.requires_grad_(False)
    for step in range(steps):
        model.train()
        loss = F.cross_entropy(model(x[2 * step:2 * step + 2]), y[2 * step:2 * step + 2])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p -= lr * p.grad
''',
}

_RESTORE = "    for module, mode in modes:\n        module.training = mode\n"
_COMBINED = "    mean, var = combine_statistics(counts, means, m2s)\n"
WRONG_PRACTICE = {
    # make_model
    "model_as_found": (AS_FOUND["make_model"], ("bias_before_batchnorm", "batchnorm_on_output"), "practice_model"),
    "model_bias_only": (practice_with("make_model", "nn.Linear(hidden, hidden, bias=False)",
                                      "nn.Linear(hidden, hidden)"), ("bias_before_batchnorm",), "practice_model"),
    "model_bn_on_output": (practice_with("make_model", "nn.Linear(hidden, classes))",
                                         "nn.Linear(hidden, classes), nn.BatchNorm1d(classes))"),
                           ("batchnorm_on_output",), "practice_model"),
    # the sizes of the visible test written in: the hidden test uses others
    "model_hard_coded_sizes": (PRACTICE["make_model"]
                               .replace("(in_features, hidden, bias=False)", "(64, 32, bias=False)")
                               .replace("(hidden, hidden, bias=False)", "(32, 32, bias=False)")
                               .replace("nn.BatchNorm1d(hidden)", "nn.BatchNorm1d(32)")
                               .replace("nn.Linear(hidden, classes)", "nn.Linear(32, 10)"),
                               ("build its layers from the arguments (20 inputs, 48 hidden units, 5 classes)",),
                               "practice_model_sizes"),
    "model_dropout_before_bn": (practice_with("make_model", "nn.BatchNorm1d(hidden), nn.ReLU(),\n",
                                              "nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.5),\n"),
                                ("dropout_before_batchnorm",), "practice_model"),
    # make_batches
    "batches_as_found": (AS_FOUND["make_batches"], ("batch_of_one", "short_batch"), "practice_batches"),
    "batches_drop_only_one": (practice_with("make_batches", "range(0, n - batch_size + 1, batch_size)]",
                                            "range(0, n, batch_size) if n - start > 1]"),
                              ("short_batch",), "practice_batches"),
    # a remainder merged into the last batch only when it is small (under 8): the hidden test's 1000 = 15 * 64 + 40
    "batches_merges_small_remainders_only": ('''
def make_batches(n, batch_size, rng):
    order = rng.permutation(n)
    batches = [order[start:start + batch_size] for start in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 8:
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return batches
''', ("short_batch",), "practice_batches_sizes"),
    "batches_not_shuffled": (practice_with("make_batches", "order = rng.permutation(n)", "order = np.arange(n)"),
                             ("not_shuffled",), "practice_batches"),
    "batches_global_rng": (practice_with("make_batches", "order = rng.permutation(n)",
                                         "order = np.random.permutation(n)"),
                           ("ignores_rng",), "practice_batches"),
    "batches_lose_a_full_one": (practice_with("make_batches", "range(0, n - batch_size + 1, batch_size)",
                                              "range(0, n - batch_size, batch_size)"),
                                ("examples_lost",), "practice_batches"),
    # evaluate
    "evaluate_as_found": (AS_FOUND["evaluate"], ("eval_forgotten", "statistics_changed"), "practice_evaluate"),
    "evaluate_as_found_hidden": (AS_FOUND["evaluate"], ("eval_forgotten", "statistics_changed", "mode_not_restored"),
                                 "practice_evaluate_modes"),
    "evaluate_not_restored": (practice_with("evaluate", "        module.training = mode\n", "        pass\n"),
                              ("mode_not_restored",), "practice_evaluate"),
    # model.train() at the end: right for a model that came in training mode, so only the hidden tests see it
    "evaluate_train_at_end": (practice_with("evaluate", _RESTORE, "    model.train()\n"),
                              ("mode_not_restored",), "practice_evaluate_modes"),
    # model.train(was_training) restores the model's flag, and sets every batch norm layer's to it too
    "evaluate_restores_top_flag_only": (practice_with("evaluate", _RESTORE, "    model.train(modes[0][1])\n"),
                                        ("mode_not_restored",), "practice_evaluate_modes"),
    # predict_one
    "predict_as_found": (AS_FOUND["predict_one"], ("eval_forgotten",), "practice_predict"),
    "predict_pair_trick": ('''
def predict_one(model, x1):
    with torch.no_grad():
        return int(model(torch.stack([x1, x1]))[0].argmax())
''', ("batch_statistics", "statistics_changed"), "practice_predict"),
    "predict_not_restored": (practice_with("predict_one", "        module.training = mode\n", "        pass\n"),
                             ("mode_not_restored",), "practice_predict"),
    "predict_train_at_end": (practice_with("predict_one", _RESTORE, "    model.train()\n"),
                             ("mode_not_restored",), "practice_predict_modes"),
    # fine_tune
    "fine_tune_as_found": (AS_FOUND["fine_tune"], ("statistics_updated",), "practice_fine_tune"),
    # eval() once before the loop: the loop's model.train() undoes it
    "fine_tune_eval_before_loop": (practice_with("fine_tune", "    for step in range(steps):\n        model.train()\n"
                                                 "        for norm in norms:\n            norm.eval()\n",
                                                 "    for norm in norms:\n        norm.eval()\n"
                                                 "    for step in range(steps):\n        model.train()\n"),
                                   ("statistics_updated",), "practice_fine_tune"),
    # trains in training mode, then puts the old statistics back: the forwards used batch statistics all along
    "fine_tune_restores_statistics": ('''
def fine_tune(model, x, y, steps, lr):
    saved = copy.deepcopy(model.state_dict())
    for step in range(steps):
        model.train()
        loss = F.cross_entropy(model(x[2 * step:2 * step + 2]), y[2 * step:2 * step + 2])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(saved[name])
''', ("batch_statistics_used",), "practice_fine_tune"),
    # model.children() finds the batch norm layers of a flat Sequential only: the nested hidden test sees it
    "fine_tune_children_only": (practice_with("fine_tune", "for module in model.modules()",
                                              "for module in model.children()"),
                                ("statistics_updated",), "practice_fine_tune_nested"),
    "fine_tune_no_step": (practice_with("fine_tune", "                    p -= lr * p.grad\n",
                                        "                    pass\n"),
                          ("not_trained",), "practice_fine_tune"),
    # combine_statistics
    "combine_unweighted_mean": (practice_with("combine_statistics", "mean = (weights * means).sum(axis=0) / n",
                                              "mean = means.mean(axis=0)"),
                                ("unweighted_mean",), "sync_combine"),
    "combine_no_between_term": (practice_with("combine_statistics",
                                              " + (weights * (means - mean) ** 2).sum(axis=0)", ""),
                                ("no_between_term",), "sync_combine"),
    "combine_unbiased": (practice_with("combine_statistics", "return mean, m2 / n", "return mean, m2 / (n - 1)"),
                         ("unbiased_variance",), "sync_combine"),
    "combine_averages_variances": (practice_with("combine_statistics",
                                                 "    m2 = m2s.sum(axis=0) + (weights * (means - mean) ** 2)"
                                                 ".sum(axis=0)\n    return mean, m2 / n\n",
                                                 "    return mean, (m2s / weights).mean(axis=0)\n"),
                                   ("no_between_term", "unweighted_mean"), "sync_combine"),
    # an unweighted average over every row: the empty worker's zeros count (hidden test)
    "combine_unweighted_with_empty": (practice_with("combine_statistics", "mean = (weights * means).sum(axis=0) / n",
                                                    "mean = means.mean(axis=0)"),
                                      ("unweighted_mean",), "sync_combine_more"),
    # the variance through the workers' variances M_k / n_k: an empty worker's 0 / 0 is NaN (hidden test)
    "combine_divides_by_empty_count": (practice_with("combine_statistics", "m2s.sum(axis=0)",
                                                     "(weights * (m2s / weights)).sum(axis=0)"),
                                       ("NaN or inf. An empty worker (n_k = 0) adds nothing",), "sync_combine_more"),
    # sync_batchnorm_forward
    "sync_local_statistics": ('''
def sync_batchnorm_forward(parts, gamma, beta, eps=1e-5):
    return [gamma * (part - part.mean(axis=0)) / np.sqrt(part.var(axis=0) + eps) + beta for part in parts]
''', ("local_statistics",), "sync_forward"),
    "sync_average_of_means": (practice_with("sync_batchnorm_forward", _COMBINED,
                                            "    mean = means.mean(axis=0)\n"
                                            "    var = np.array([part.var(axis=0) for part in parts]).mean(axis=0)\n"),
                              ("unweighted_mean", "no_between_term"), "sync_forward"),
    "sync_unbiased": (practice_with("sync_batchnorm_forward", _COMBINED, _COMBINED +
                                    "    var = var * counts.sum() / (counts.sum() - 1)\n"),
                      ("unbiased_variance",), "sync_forward"),
    # the eps argument ignored: only the hidden test passes another one
    "sync_ignores_eps": (practice_with("sync_batchnorm_forward", "np.sqrt(var + eps)", "np.sqrt(var + 1e-5)"),
                         ("eps = 1e-3",), "sync_forward_more"),
}


def load_practice(source: str, name: str):
    """Execute exercise-5 learner source with the exercise's setup names (np, torch, nn, F, copy) and, for the
    synchronized forward, the right combine_statistics; return the object called ``name``."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch import nn

    namespace = {"np": np, "torch": torch, "nn": nn, "F": F, "copy": copy}
    exec(PRACTICE["combine_statistics"], namespace)  # noqa: S102 -- test fixture
    exec(source, namespace)  # noqa: S102 -- test fixture
    return namespace[name]
