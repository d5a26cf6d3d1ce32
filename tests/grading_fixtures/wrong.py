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
