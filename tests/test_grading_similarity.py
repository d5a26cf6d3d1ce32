"""Course code pasted into a submission is flagged (bnlab.grading.similarity); honest work and garbage are not."""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import sys
import textwrap
import time
import tokenize
from pathlib import Path

import nbformat
import pytest

from bnlab.grading.similarity import (DEFAULT_THRESHOLD, MIN_TOKENS, CourseMatch, course_matches, course_units,
                                      normalized_tokens)

sys.path.insert(0, str(Path(__file__).parent / "grading_fixtures"))
import submissions  # noqa: E402
import wrong  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ["ex1_forward", "ex2_backward", "ex3_numpy_layer", "ex4_torch_layer"]
MARGIN = 0.04  # the default threshold keeps at least this far from every honest and every copied score below


# ------------------------------------------------------------------------------------------------ copies


def course_source(dotted: str) -> str:
    """The source text of a course object (function, class or method), dedented."""
    parts = dotted.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for part in parts[split:]:
            obj = getattr(obj, part)
        return textwrap.dedent(inspect.getsource(obj))
    raise LookupError(dotted)


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def stripped(source: str) -> str:
    """Docstrings and comments removed; every other line kept as it was (layout, names, type hints)."""
    drop = _docstring_lines(ast.parse(source))
    comment_at = {tok.start[0]: tok.start[1] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                  if tok.type == tokenize.COMMENT}
    lines = []
    for number, line in enumerate(source.splitlines(), start=1):
        if number in drop:
            continue
        if number in comment_at:
            line = line[: comment_at[number]].rstrip()
            if not line.strip():
                continue
        lines.append(line)
    return "\n".join(lines) + "\n"


class _Rename(ast.NodeTransformer):
    def __init__(self, names: set[str]) -> None:
        self.new = {name: f"my_{name.strip('_')}_{i}" for i, name in enumerate(sorted(names))}

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.new.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.new.get(node.arg, node.arg)
        return node


def renamed(source: str, new_name: str = "my_copy") -> str:
    """Every argument and assigned variable renamed, and the object itself; printed back by ast.unparse."""
    tree = ast.parse(source)
    unit = tree.body[0]
    names = {n.id for n in ast.walk(unit) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    names |= {a.arg for a in ast.walk(unit) if isinstance(a, ast.arg)}
    _Rename(names).visit(tree)
    unit.name = new_name
    return ast.unparse(tree)


class _Reformat(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        node.keywords = node.keywords[::-1]
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.BinOp:
        self.generic_visit(node)
        for side in ("left", "right"):
            value = getattr(node, side)
            if isinstance(value, ast.Constant) and type(value.value) is int:
                setattr(node, side, ast.Constant(float(value.value)))
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        node.returns = None
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.stmt | None:
        self.generic_visit(node)
        return None if node.value is None else ast.copy_location(ast.Assign([node.target], node.value), node)


def reformatted(source: str) -> str:
    """Keyword arguments reversed, ints in arithmetic written as floats, annotations dropped, ast.unparse layout."""
    tree = ast.fix_missing_locations(_Reformat().visit(ast.parse(source)))
    return ast.unparse(tree)


_SIMPLE = (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr, ast.Return)


def edited(source: str) -> str:
    """The middle one-line statement (an assignment, a call, a return) of the longest function body replaced
    by a print: a small edit."""
    tree = ast.parse(source)
    body = max((n.body for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), key=len)
    simple = [i for i, statement in enumerate(body) if isinstance(statement, _SIMPLE)]
    body[simple[len(simple) // 2]] = ast.parse("print('checkpoint', flush=True)").body[0]
    return ast.unparse(ast.fix_missing_locations(tree))


VARIANTS = {"verbatim": lambda source: source, "stripped": stripped, "renamed": renamed,
            "reformatted": reformatted}

# What a learner could paste into exercises 1-4: numpy forward / inference / backward (1-2), the numpy layer (3),
# the torch autograd.Function and module (4), and course methods pasted as free functions.
COPIED = [
    "bnlab.functional._train_forward",  # the body of batchnorm_forward (lecture 2 shows it)
    "bnlab.functional.batchnorm_inference",
    "bnlab.functional.batchnorm_backward",
    "bnlab.functional.batchnorm_backward_fused",
    "bnlab.layers.BatchNorm",
    "bnlab.layers.BatchNorm.forward",
    "bnlab.layers.BatchNorm.backward",
    "bnlab.mistakes.LayerModel",
    "bnlab.nn.functional.BatchNormFunction",
    "bnlab.nn.functional.BatchNormFunction.forward",
    "bnlab.nn.modules.BatchNormBase",
    "bnlab.nn.ghost._ghost_batch_norm",
]
# Long enough that one replaced statement keeps the copy above the threshold (a short unit loses more per edit).
EDITED = ["bnlab.functional._train_forward", "bnlab.functional.batchnorm_backward", "bnlab.layers.BatchNorm",
          "bnlab.nn.functional.BatchNormFunction", "bnlab.nn.modules.BatchNormBase", "bnlab.mistakes.LayerModel"]


def _defined_name(source: str) -> str:
    return ast.parse(source).body[0].name


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("dotted", COPIED)
def test_a_pasted_course_object_is_flagged_with_its_source(dotted, variant):
    source = VARIANTS[variant](course_source(dotted))
    matches = course_matches(source)
    assert matches, f"{variant} copy of {dotted} not flagged"
    top = matches[0]
    assert (top.name, top.source) == (_defined_name(source), dotted)
    assert DEFAULT_THRESHOLD + MARGIN <= top.similarity <= 1.0


@pytest.mark.parametrize("dotted", EDITED)
def test_a_copy_with_a_statement_changed_is_still_flagged(dotted):
    source = edited(stripped(course_source(dotted)))
    matches = course_matches(source)
    assert [(m.name, m.source) for m in matches[:1]] == [(_defined_name(source), dotted)]
    assert matches[0].similarity < 1.0


def test_a_copy_among_a_notebooks_other_cells_is_found():
    """The other cells (imports, test calls, magics, a cell that does not parse) change nothing."""
    cells = ["%matplotlib inline\nimport numpy as np", "!pip install nothing", "def broken(:\n    pass",
             "from bnlab.grading import checks\nchecks.forward(batchnorm_forward)",
             "%%time\n" + renamed(stripped(course_source("bnlab.functional.batchnorm_backward")), "batchnorm_backward"),
             wrong.FORWARD]
    assert [(m.name, m.source) for m in course_matches(cells)] == [
        ("batchnorm_backward", "bnlab.functional.batchnorm_backward")]


def test_a_pasted_method_inside_an_honest_class_is_named_by_class_and_method():
    method = textwrap.indent(stripped(course_source("bnlab.layers.BatchNorm.backward")), "    ")
    honest_class = wrong.LAYER.replace("    def backward(self, dout):", method + "\n    def old_backward(self, dout):")
    matches = course_matches(honest_class)
    assert [(m.name, m.source) for m in matches] == [("BatchNorm.backward", "bnlab.layers.BatchNorm.backward")]


def test_a_name_defined_twice_is_reported_once():
    copy = course_source("bnlab.functional.batchnorm_backward_fused")
    matches = course_matches([copy, "x = 1", copy])
    assert len(matches) == 1 and isinstance(matches[0], CourseMatch)
    with pytest.raises(AttributeError):
        matches[0].similarity = 0.5  # frozen


# ------------------------------------------------------------------------------------------------ honest work

# Independent honest implementations in other styles than the course's.
HONEST_OWN = {
    "cs231n_forward": '''
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    N, D = x.shape
    sample_mean = np.sum(x, axis=0) / N
    x_minus_mean = x - sample_mean
    sq = x_minus_mean ** 2
    sample_var = np.sum(sq, axis=0) / N
    sqrtvar = np.sqrt(sample_var + eps)
    ivar = 1.0 / sqrtvar
    x_norm = x_minus_mean * ivar
    out = gamma * x_norm + beta
    cache = (x_norm, gamma, x_minus_mean, ivar, sqrtvar, sample_var, eps)
    return out, cache
''',
    "cs231n_staged_backward": '''
def batchnorm_backward(dout, cache):
    xhat, gamma, xmu, ivar, sqrtvar, var, eps = cache
    N, D = dout.shape
    dbeta = np.sum(dout, axis=0)
    dgammax = dout
    dgamma = np.sum(dgammax * xhat, axis=0)
    dxhat = dgammax * gamma
    divar = np.sum(dxhat * xmu, axis=0)
    dxmu1 = dxhat * ivar
    dsqrtvar = -1.0 / (sqrtvar ** 2) * divar
    dvar = 0.5 * 1.0 / np.sqrt(var + eps) * dsqrtvar
    dsq = 1.0 / N * np.ones((N, D)) * dvar
    dxmu2 = 2 * xmu * dsq
    dx1 = dxmu1 + dxmu2
    dmu = -1 * np.sum(dxmu1 + dxmu2, axis=0)
    dx2 = 1.0 / N * np.ones((N, D)) * dmu
    dx = dx1 + dx2
    return dx, dgamma, dbeta
''',
    # the lecture's steps and names, unpacking the cache in the course listing's order: the closest honest code
    "lecture_order_staged_backward": '''
def batchnorm_backward(dout, cache):
    x, xc, std, inv, xhat, g, axes, m = cache
    dbeta = dout.sum(axis=axes)
    dgamma = (dout * xhat).sum(axis=axes)
    dxhat = dout * g
    dinv = (dxhat * xc).sum(axis=axes, keepdims=True)
    dxc = dxhat * inv
    dstd = -dinv / std**2
    dvar = dstd / (2.0 * std)
    dxc = dxc + (2.0 / m) * xc * dvar
    dmu = -dxc.sum(axis=axes, keepdims=True)
    dx = dxc + dmu / m
    return dx, dgamma, dbeta
''',
    "lecture_steps_forward": '''
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    gamma, beta = gamma.reshape(shape), beta.reshape(shape)
    mu = x.mean(axis=axes, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=axes, keepdims=True)
    std = np.sqrt(var + eps)
    inv = 1 / std
    xhat = xc * inv
    out = gamma * xhat + beta
    cache = dict(x=x, mu=mu, xc=xc, var=var, std=std, inv=inv, xhat=xhat, gamma=gamma, eps=eps)
    return out, cache
''',
    "np_var_forward_moveaxis": '''
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    channels = x.shape[1]
    last = np.moveaxis(x, 1, -1)
    flat = last.reshape(-1, channels)
    mean = flat.mean(axis=0)
    var = np.var(flat, axis=0)
    normed = (flat - mean) / np.sqrt(var + eps)
    y = (normed * gamma + beta).reshape(last.shape)
    cache = {"normed": np.moveaxis(normed.reshape(last.shape), -1, 1), "var": var, "eps": eps, "gamma": gamma}
    return np.moveaxis(y, -1, 1), cache
''',
    "sum_over_count_forward": '''
def batchnorm_forward(x, gamma, beta, eps=1e-5):
    shape = [1] * x.ndim
    shape[1] = x.shape[1]
    axes = tuple(i for i in range(x.ndim) if i != 1)
    count = np.prod([x.shape[i] for i in axes])
    mean = np.sum(x, axis=axes, keepdims=True) / count
    dev = x - mean
    variance = np.sum(dev ** 2, axis=axes, keepdims=True) / count
    normalized = dev / np.sqrt(variance + eps)
    result = normalized * gamma.reshape(shape) + beta.reshape(shape)
    return result, {"normalized": normalized, "variance": variance, "eps": eps, "gamma": gamma.reshape(shape),
                    "axes": axes, "count": count, "dev": dev}
''',
    "dtype_careful_inference": '''
def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    scale = (gamma / np.sqrt(running_var + eps)).astype(x.dtype)
    shift = (beta - running_mean * scale).astype(x.dtype)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * scale.reshape(shape) + shift.reshape(shape)
''',
    "view_list_inference": '''
def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    view = [1] * x.ndim
    view[1] = -1
    mean = np.reshape(running_mean, view)
    std = np.sqrt(np.reshape(running_var, view) + eps)
    normalized = (x - mean) / std
    return np.reshape(gamma, view) * normalized + np.reshape(beta, view)
''',
    "fused_backward_means": '''
def batchnorm_backward_fused(dout, cache):
    xhat = cache["xhat"]
    gamma = cache["gamma"]
    var = cache["var"]
    eps = cache["eps"]
    axes = cache["axes"]
    m = dout.size / dout.shape[1]
    sum_dout = np.sum(dout, axis=axes, keepdims=True)
    sum_dout_xhat = np.sum(dout * xhat, axis=axes, keepdims=True)
    dx = gamma / np.sqrt(var + eps) * (dout - sum_dout / m - xhat * sum_dout_xhat / m)
    return dx, sum_dout_xhat.ravel(), sum_dout.ravel()
''',
    "paper_formula_backward": '''
def batchnorm_backward(dout, cache):
    x, mu, var, eps, gamma, axes = cache["x"], cache["mu"], cache["var"], cache["eps"], cache["gamma"], cache["axes"]
    n = 1
    for a in axes:
        n *= x.shape[a]
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    dbeta = np.sum(dout, axis=axes)
    dgamma = np.sum(dout * xhat, axis=axes)
    g = dout * gamma
    d_var = np.sum(g * (x - mu), axis=axes, keepdims=True) * (-0.5) * std ** -3
    d_mu = np.sum(-g / std, axis=axes, keepdims=True) + d_var * np.mean(-2.0 * (x - mu), axis=axes, keepdims=True)
    dx = g / std + d_var * 2.0 * (x - mu) / n + d_mu / n
    return dx, dgamma, dbeta
''',
    "numpy_layer_params_dict": '''
class BatchNorm:
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        self.params = {"weight": np.ones(num_features), "bias": np.zeros(num_features)}
        self.eps = eps
        self.momentum = momentum
        self.running_mean = np.zeros(num_features)
        self.running_var = np.ones(num_features)
        self.training = True
        self.grad = {}
        self.cache = None

    @property
    def weight(self):
        return self.params["weight"]

    @property
    def bias(self):
        return self.params["bias"]

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        self.training = False
        return self

    def _view(self, v, ndim):
        return v.reshape([1, -1] + [1] * (ndim - 2))

    def forward(self, x):
        axes = tuple(i for i in range(x.ndim) if i != 1)
        if self.training:
            n = x.size // x.shape[1]
            mu = np.mean(x, axis=axes)
            sigma2 = np.var(x, axis=axes)
            self.running_mean = self.momentum * mu + (1 - self.momentum) * self.running_mean
            self.running_var = self.momentum * sigma2 * n / (n - 1) + (1 - self.momentum) * self.running_var
        else:
            mu, sigma2 = self.running_mean, self.running_var
        istd = 1 / np.sqrt(sigma2 + self.eps)
        xn = (x - self._view(mu, x.ndim)) * self._view(istd, x.ndim)
        self.cache = (xn, istd, axes, self.training)
        return xn * self._view(self.weight, x.ndim) + self._view(self.bias, x.ndim)

    def backward(self, dout):
        xn, istd, axes, used_batch = self.cache
        self.grad = {"weight": np.sum(dout * xn, axis=axes), "bias": np.sum(dout, axis=axes)}
        dxn = dout * self._view(self.weight, dout.ndim)
        k = self._view(istd, dout.ndim)
        if not used_batch:
            return dxn * k
        mean_dxn = dxn.mean(axis=axes, keepdims=True)
        mean_dxn_xn = (dxn * xn).mean(axis=axes, keepdims=True)
        return k * (dxn - mean_dxn - xn * mean_dxn_xn)
''',
    "torch_function_saves_x": '''
class BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, running_mean, running_var, weight, bias, training, momentum, eps):
        reduce = tuple(d for d in range(x.dim()) if d != 1)
        view = (1, -1) + (1,) * (x.dim() - 2)
        if training:
            mu = x.mean(dim=reduce)
            sigma2 = x.var(dim=reduce, unbiased=False)
            if running_mean is not None:
                count = x.numel() / x.size(1)
                with torch.no_grad():
                    running_mean.copy_((1 - momentum) * running_mean + momentum * mu)
                    running_var.copy_((1 - momentum) * running_var + momentum * sigma2 * count / (count - 1))
        else:
            mu, sigma2 = running_mean, running_var
        rstd = 1.0 / torch.sqrt(sigma2 + eps)
        ctx.save_for_backward(x, mu, rstd, weight)
        ctx.stuff = (reduce, view, training)
        return (x - mu.view(view)) * rstd.view(view) * weight.view(view) + bias.view(view)

    @staticmethod
    def backward(ctx, grad_output):
        x, mu, rstd, weight = ctx.saved_tensors
        reduce, view, training = ctx.stuff
        xhat = (x - mu.view(view)) * rstd.view(view)
        grad_weight = (grad_output * xhat).sum(dim=reduce)
        grad_bias = grad_output.sum(dim=reduce)
        g = grad_output * weight.view(view)
        if training:
            g = g - g.mean(dim=reduce, keepdim=True) - xhat * (g * xhat).mean(dim=reduce, keepdim=True)
        grad_input = g * rstd.view(view)
        return grad_input, None, None, grad_weight, grad_bias, None, None, None
''',
    "torch_module_buffer_loop": '''
class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        for name, value in (("running_mean", torch.zeros(num_features)), ("running_var", torch.ones(num_features)),
                            ("num_batches_tracked", torch.zeros((), dtype=torch.long))):
            self.register_buffer(name, value)

    def forward(self, input):
        if input.dim() != 4:
            raise ValueError("BatchNorm2d wants 4-D input")
        if self.training:
            self.num_batches_tracked += 1
        out = BatchNormFunction.apply(input, self.running_mean, self.running_var, self.weight, self.bias,
                                      self.training, self.momentum, self.eps)
        return out
''',
}


def _fixture_sources(module, prefix: str) -> dict[str, str]:
    """Every module-level string of a fixture module, and every string in its module-level dicts and tuples."""
    found = {}
    for key, value in vars(module).items():
        if key.startswith("__"):
            continue
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, tuple) else [
            (None, value)]
        for sub, item in items:
            if isinstance(item, str):
                found[f"{prefix}.{key}" + ("" if sub is None else f"[{sub}]")] = item
    return found


def _solution_cells() -> dict[str, str]:
    cells = {}
    for exercise in EXERCISES:
        nb = nbformat.read(ROOT / "solutions" / f"{exercise}.ipynb", as_version=4)
        for cell in nb.cells:
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code" and meta.get("solution"):
                cells[f"solution:{meta['grade_id']}"] = cell.source
    return cells


def _solved_notebooks() -> dict[str, list[str]]:
    """Each master as a learner submits it (the fixtures' ``solved``): all its code cells."""
    return {f"solved:{exercise}": [c.source for c in submissions.solved(exercise).cells if c.cell_type == "code"]
            for exercise in EXERCISES}


HONEST: dict[str, str | list[str]] = {
    **_solution_cells(), **_fixture_sources(wrong, "wrong"), **_fixture_sources(submissions, "submissions"),
    **{f"own:{key}": value for key, value in HONEST_OWN.items()}, **_solved_notebooks(),
}


def test_the_honest_set_holds_what_it_should():
    assert sum(key.startswith("solution:") for key in HONEST) >= 10
    assert sum(key.startswith("wrong.") for key in HONEST) >= 50
    for source in HONEST_OWN.values():  # each compiles, and is long enough to be compared at all
        unit = ast.parse(source).body[0]
        assert len(normalized_tokens(unit)) >= MIN_TOKENS


@pytest.mark.parametrize("key", list(HONEST))
def test_honest_work_is_not_flagged(key):
    assert course_matches(HONEST[key]) == []


def test_the_threshold_keeps_a_margin_from_honest_work():
    """No honest unit comes within MARGIN of the threshold against any course unit."""
    near = {key: matches for key, source in HONEST.items()
            if (matches := course_matches(source, threshold=DEFAULT_THRESHOLD - MARGIN))}
    assert near == {}


# ------------------------------------------------------------------------------------------------ garbage


@pytest.mark.parametrize("code", [
    "", "   \n\n", [], [""], "def f(:\n    pass", "class", "This is my answer: batch norm normalizes each feature.",
    '{"cells": [], "nbformat": 4}', "%%bash\necho hi", "1 +", "\x00\x01\x02", "def f():\n\treturn 1\n        pass",
    None, 42, b"def f(): pass", [None, 3, b"x"], ["x = 1", object()],
    "(" * 100_000, "[" * 5_000 + "]" * 5_000, "-" * 100_000 + "1", "1+" * 100_000 + "1",
    "not " * 200_000 + "x", "a" + "[0]" * 200_000, "lambda:" * 100_000 + "1",
    "def f(x):\n    return " + "-" * 900 + "x\n",
    "".join("    " * depth + f"def f{depth}():\n" for depth in range(99)) + "    " * 99 + "pass\n",
], ids=lambda code: repr(code)[:40])
def test_garbage_gives_nothing(code):
    assert course_matches(code) == []


def test_huge_input_gives_nothing_and_returns_fast():
    copy = course_source("bnlab.layers.BatchNorm")
    start = time.perf_counter()
    assert course_matches("x = 1\n" * 1_750_000) == []  # 10.5 MB of valid code
    assert course_matches(copy + "\n" + "#" * 10_000_000) == []  # a copy inside a 10 MB cell: the cell is skipped
    assert course_matches(["y = 2\n" * 1000] * 2_000) == []  # 12 MB over many cells: only the first 2 MB read
    assert time.perf_counter() - start < 10.0


# ------------------------------------------------------------------------------------------------ the course side


def test_the_course_units_cover_the_four_exercises():
    sources = {unit.source for unit in course_units()}
    assert set(COPIED) <= sources
    assert course_units() is course_units()  # read once


def test_normalization_ignores_names_docstrings_comments_annotations_and_keyword_order():
    a = '''
def f(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Doc."""
    mu = x.mean(axis=0, keepdims=True)  # mean
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=0, keepdims=True) + eps)
'''
    b = '''
def g(inp, e=0.00001):
    m = inp.mean(keepdims=True, axis=0.0)
    return (inp - m) / np.sqrt(((inp - m) ** 2.0).mean(keepdims=True, axis=0) + e)
'''
    assert normalized_tokens(ast.parse(a).body[0]) == normalized_tokens(ast.parse(b).body[0])
    c = b.replace("np.sqrt", "np.cbrt")  # a called library name is part of the code
    assert normalized_tokens(ast.parse(c).body[0]) != normalized_tokens(ast.parse(b).body[0])


def test_a_class_of_submissions_is_checked_fast():
    notebooks = list(_solved_notebooks().values())
    course_matches("")  # course side read once, outside the timing
    start = time.perf_counter()
    for notebook in notebooks:
        assert course_matches(notebook) == []
    assert time.perf_counter() - start < 1.0  # all four notebooks of one learner


def test_grading_threads_can_check_at_once():
    """grade_many grades in threads: the cached course side is shared read-only."""
    from concurrent.futures import ThreadPoolExecutor

    sources = [course_source(dotted) for dotted in COPIED] + list(HONEST_OWN.values())
    alone = [course_matches(source) for source in sources]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(course_matches, sources * 4)) == alone * 4
