"""bnlab grade end to end: sandboxed children, every adversarial case, one grading run per exercise group.

All ex1 submissions are graded in one ``grade_many`` call with two jobs (as a class would be), and each test
below reads its row; likewise for ex4. Limits are small so that the time-outs cost seconds, not minutes.
"""

import hashlib
import time
import sys
from pathlib import Path

import pytest

from bnlab.grading.grade import grade_many
from bnlab.grading.notebooks import find_masters
from bnlab.grading.sandbox import Limits

sys.path.insert(0, str(Path(__file__).parent / "grading_fixtures"))
import wrong  # noqa: E402
from submissions import solved, write  # noqa: E402

LIMITS = Limits(timeout=8.0, cell_seconds=2.0, check_seconds=3.0, memory_mb=512)
BAD_FORWARD = wrong.WRONG_FORWARD["unbiased_variance"]
FORWARD_TESTS = {"ex1_forward_tests": 3.0, "ex1_forward_hidden": 2.0}

EX1 = {
    "correct": dict(),
    "renamed": dict(),
    "partial": dict(replace={"ex1_inference": wrong.WRONG_INFERENCE["batch_statistics_in_eval"]}),
    "no_metadata": dict(metadata_exercise=None),
    "unknown_exercise": dict(metadata_exercise="ex9_unknown"),
    "loop_in_function": dict(replace={"ex1_forward": "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
                                                     "    while True:\n        pass\n"}),
    "loop_swallowing_everything": dict(append=["while True:\n    try:\n        while True:\n            pass\n"
                                               "    except BaseException:\n        pass\n"]),
    "memory_top_level": dict(append=["import numpy as np\nhog = np.ones((1 << 40,))"]),
    "memory_in_function": dict(replace={"ex1_forward": "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
                                                       "    hog = [np.empty(1 << 24) for _ in range(10**6)]\n"}),
    "os_exit": dict(append=["import os\nos._exit(3)"]),
    "sys_exit": dict(append=["import sys\nsys.exit('bye')"]),
    "raises": dict(append=["raise RuntimeError('oops')"]),
    "prints_megabytes": dict(append=["import os\nprint('x' * 5_000_000)\nos.write(1, b'y' * 5_000_000)\n"
                                     "import sys\nsys.stderr.write('z' * 1_000_000)"]),
    "patches_comparisons": dict(replace={"ex1_forward": BAD_FORWARD + "\nimport numpy.testing\n"
                                         "np.allclose = lambda *a, **k: True\n"
                                         "np.array_equal = lambda *a, **k: True\n"
                                         "np.testing.assert_allclose = lambda *a, **k: None\n"
                                         "np.abs = lambda a: a * 0\n"}),
    "redefines_test_cells": dict(replace={"ex1_forward": BAD_FORWARD},
                                 edit_tests={"ex1_forward_tests": "print('all tests passed')",
                                             "ex1_forward_hidden": "pass"}),
    "deletes_test_cells": dict(replace={"ex1_forward": BAD_FORWARD},
                               edit_tests={"ex1_forward_tests": None, "ex1_forward_hidden": None}),
    "imports_the_answers": dict(replace={"ex1_forward": "from bnlab.functional import batchnorm_forward"}),
    "imports_answers_sneakily": dict(replace={"ex1_forward": "import importlib\n"
                                              "batchnorm_forward = importlib.import_module('bnlab.functional')"
                                              ".batchnorm_forward"}),
    # reach into the grading process and make the probe send nothing back ("passes on 0 batches")
    "empties_the_probe": dict(replace={"ex1_forward": BAD_FORWARD + "\nimport sys\n"
                                       "frame = sys._getframe()\n"
                                       "while frame is not None and 'PROBES' not in frame.f_globals:\n"
                                       "    frame = frame.f_back\n"
                                       "if frame is not None:\n"
                                       "    for name in list(frame.f_globals['PROBES']):\n"
                                       "        frame.f_globals['PROBES'][name] = lambda objects, inputs: []\n"}),
    # correct work written with IPython syntax: continuation lines that start with != or %, magics, help
    "ipython_syntax": dict(replace={"ex1_forward": (
        "%matplotlib inline\n"
        "np.var?\n"
        "!echo graded\n"
        "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
        "    axes = tuple(a for a in range(x.ndim) if a != 1)\n"
        "    per_channel = (1, -1) + (1,) * (x.ndim\n"
        "                                 - 2)\n"
        "    assert (x.ndim\n"
        "            != 1), 'needs a batch'\n"
        "    channels = (x.shape[1]\n"
        "                % (x.shape[1] + 1))\n"
        "    mu = x.mean(axis=axes, keepdims=True)\n"
        "    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)\n"
        "    xhat = (x - mu) / np.sqrt(var + eps)\n"
        "    out = np.reshape(gamma, per_channel) * xhat + np.reshape(beta, per_channel)\n"
        "    return out, {'xhat': xhat, 'channels': channels}\n")},
        append=["%time timed = 2 + 2\nassert timed == 4", "%%time\ncell_magic_ran = True\nassert cell_magic_ran"]),
    "calls_torch_batch_norm": dict(replace={"ex1_forward": "import torch\n"
                                            "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
                                            "    t = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None,"
                                            " torch.from_numpy(gamma), torch.from_numpy(beta), True, 0.1, eps)\n"
                                            "    return t.numpy(), None\n"}),
    # the reference, by routes around an import blocker: emptying sys.meta_path, exec'ing the source file, and
    # torch dug out of the interpreter's frames (a numpy exercise's process never imported it)
    "meta_path_then_reference": dict(replace={"ex1_forward": "import sys\nsys.meta_path[:] = []\n"
                                                             "from bnlab.functional import batchnorm_forward\n"}),
    "execs_course_source": dict(replace={"ex1_forward": (
        "import os\nnamespace = {}\n"
        f"exec(open(os.path.join({str(Path(__file__).resolve().parents[1] / 'bnlab')!r}, 'functional.py')).read(), "
        "namespace)\nbatchnorm_forward = namespace['batchnorm_forward']\n")}),
    "torch_from_frames": dict(replace={"ex1_forward": (
        "import sys\nframe = sys._getframe()\n"
        "while frame is not None and 'torch' not in frame.f_locals and 'torch' not in frame.f_globals:\n"
        "    frame = frame.f_back\n"
        "torch = (frame.f_locals.get('torch') or frame.f_globals['torch']) if frame else None\n"
        "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
        "    t = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, torch.from_numpy(gamma),"
        " torch.from_numpy(beta), True, 0.1, eps)\n"
        "    return t.numpy(), None\n")}),
    # correct work in more of Jupyter's idioms, and results in unusual (but numeric) dtypes
    "jupyter_idioms": dict(replace={"ex1_forward": (
        "get_ipython().run_cell_magic('writefile', 'bn_helpers.py', 'import numpy as np\\n"
        "def normalize(x, axes, eps):\\n    mu = x.mean(axis=axes, keepdims=True)\\n"
        "    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)\\n')\n"
        "from bn_helpers import normalize\nfrom bnlab.grading import checks\n"
        "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
        "    axes = tuple(a for a in range(x.ndim) if a != 1)\n"
        "    shape = (1, -1) + (1,) * (x.ndim - 2)\n"
        "    out = np.reshape(gamma, shape) * normalize(x, axes, eps) + np.reshape(beta, shape)\n"
        "    return out.astype(out.dtype.newbyteorder('>')), None\n"
        "checks.forward(batchnorm_forward)\n"
        "value = %time 2 + 2\nassert value == 4\n"
        "%timeit -n 1 -r 1 batchnorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3))\n"
        "display(value)\nfiles = !ls\nassert list(files) == []\n"
        "get_ipython().run_cell('ran_cell = True')\nassert ran_cell\n")},
        append=["%%writefile more_helpers.py\nANSWER = 42\n", "from more_helpers import ANSWER\nassert ANSWER == 42"]),
}


@pytest.fixture(scope="module")
def ex1(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ex1")
    paths = {}
    for name, spec in EX1.items():
        filename = {"renamed": "ex1 (1).ipynb"}.get(name, f"alice_{name}.ipynb")
        paths[name] = write(solved("ex1_forward", **spec), directory, filename)
    (directory / "corrupt.ipynb").write_text('{"cells": [ this is not json')
    paths["corrupt"] = str(directory / "corrupt.ipynb")
    paths["twice"] = paths["partial"]
    master = Path(__file__).resolve().parents[1] / "solutions" / "ex1_forward.ipynb"
    (directory / "symlink_to_master.ipynb").symlink_to(master)
    paths["symlink"] = str(directory / "symlink_to_master.ipynb")
    before = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths.values()}
    results = grade_many(list(paths.values()), find_masters(), LIMITS, jobs=2)
    after = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths.values()}
    return dict(zip(paths, results)), before, after, paths


def score(result, *names):
    tests = {t.name: t for t in result.tests}
    return sum(tests[n].score for n in names)


def feedback(result, name):
    return next(t.feedback for t in result.tests if t.name == name)


def test_a_correct_submission_gets_full_marks(ex1):
    result = ex1[0]["correct"]
    assert (result.score, result.max_score, result.status) == (10.0, 10.0, "graded")
    assert all(t.status == "passed" for t in result.tests) and result.notes == []


def test_the_submission_column_is_the_path_as_given_and_results_keep_their_order(ex1):
    results, _, _, paths = ex1
    assert [r.submission for r in results.values()] == list(paths.values())


def test_a_renamed_notebook_grades_the_same(ex1):
    renamed = ex1[0]["renamed"]
    assert renamed.submission.endswith("ex1 (1).ipynb") and renamed.exercise == "ex1_forward"
    assert renamed.score == 10.0


def test_partial_credit_per_test_cell(ex1):
    result = ex1[0]["partial"]
    assert result.score == 7.0
    assert "batch statistics in inference" in feedback(result, "ex1_inference_tests")


def test_same_submission_same_score_and_feedback(ex1):
    """Every check draws new inputs each grading run (so the numbers quoted in the feedback differ), but the
    verdicts are the same and the same mistake is named."""
    first, again = ex1[0]["partial"], ex1[0]["twice"]
    assert [(t.name, t.score) for t in first.tests] == [(t.name, t.score) for t in again.tests]
    for one, two in zip(first.tests, again.tests):
        assert one.feedback.split("Likely mistake")[1:] == two.feedback.split("Likely mistake")[1:]
        assert one.feedback.split(":")[0] == two.feedback.split(":")[0]


def test_every_checks_inputs_change_every_grading_run_and_a_notebooks_do_not():
    """A learner's notebook runs each check on fixed inputs (salt 0); grading draws them afresh, visible and
    hidden checks alike, from a secret salt."""
    import bnlab.grading.checks  # noqa: F401 -- registers the checks
    from bnlab.grading.core import CHECKS
    from bnlab.grading.sandbox import Limits, build_plan

    master = find_masters()["ex1_forward"]
    plans = [build_plan(master, solved("ex1_forward"), Limits())[0] for _ in range(2)]
    tests = [{item["grade_id"]: item["calls"] for item in plan["items"] if item["kind"] == "test"} for plan in plans]
    assert tests[0]["ex1_forward_tests"] != tests[1]["ex1_forward_tests"]
    assert tests[0]["ex1_forward_hidden"] != tests[1]["ex1_forward_hidden"]
    assert wire_inputs(CHECKS["forward"]()) == wire_inputs(CHECKS["forward"]())


def wire_inputs(check):
    from bnlab.grading import wire

    return wire.dumps(check.frozen_inputs())


def test_submitted_files_are_never_modified(ex1):
    _, before, after, _ = ex1
    assert before == after


def test_notebook_without_exercise_metadata_is_recognised_from_its_cells(ex1):
    result = ex1[0]["no_metadata"]
    assert result.score == 10.0 and "recognised ex1_forward from its cells" in result.notes[0]


def test_unknown_exercise_and_corrupt_file_are_error_rows(ex1):
    unknown, corrupt = ex1[0]["unknown_exercise"], ex1[0]["corrupt"]
    assert (unknown.status, unknown.score) == ("error", 0.0) and "ex9_unknown" in unknown.notes[0]
    assert "not one of the known exercises" in unknown.notes[0]
    assert (corrupt.status, corrupt.score) == ("error", 0.0) and "not a readable Jupyter notebook" in corrupt.notes[0]


def test_a_function_that_loops_forever_fails_its_tests_only(ex1):
    result = ex1[0]["loop_in_function"]
    assert score(result, *FORWARD_TESTS) == 0 and result.score == 5.0
    assert "time limit" in feedback(result, "ex1_forward_tests")


def test_a_loop_that_swallows_the_time_limit_is_stopped_and_keeps_earlier_marks(ex1):
    result = ex1[0]["loop_swallowing_everything"]
    assert result.status == "timed out" and result.score == 10.0  # every test ran before the last cell
    assert any("time limit" in note for note in result.notes)


def test_memory_exhaustion(ex1):
    top, inside = ex1[0]["memory_top_level"], ex1[0]["memory_in_function"]
    assert top.score == 10.0 and any("MemoryError" in note for note in top.notes)
    assert score(inside, *FORWARD_TESTS) == 0 and inside.score == 5.0
    assert "MemoryError" in feedback(inside, "ex1_forward_tests")


def test_os_exit_keeps_marks_earned_before_it(ex1):
    result = ex1[0]["os_exit"]
    assert result.status == "crashed" and result.score == 10.0
    assert any("exited with code 3" in note for note in result.notes)


def test_sys_exit_and_exceptions_in_cells_are_noted_and_grading_goes_on(ex1):
    for name, text in (("sys_exit", "SystemExit"), ("raises", "RuntimeError: oops")):
        result = ex1[0][name]
        assert result.score == 10.0 and result.status == "graded"
        assert any(text in note for note in result.notes)


def test_printing_megabytes(ex1):
    result = ex1[0]["prints_megabytes"]
    assert result.score == 10.0 and any("printed" in note for note in result.notes)


@pytest.mark.parametrize("name", ["patches_comparisons", "redefines_test_cells", "deletes_test_cells"])
def test_tricks_on_the_tests_earn_nothing(ex1, name):
    result = ex1[0][name]
    assert score(result, *FORWARD_TESTS) == 0 and result.score == 5.0
    assert "unbiased variance" in feedback(result, "ex1_forward_tests")


@pytest.mark.parametrize("name", ["imports_the_answers", "imports_answers_sneakily", "calls_torch_batch_norm",
                                  "meta_path_then_reference", "execs_course_source", "torch_from_frames"])
def test_reference_answers_and_torch_are_blocked_and_reported(ex1, name):
    result = ex1[0][name]
    assert score(result, *FORWARD_TESTS) == 0 and result.score == 5.0
    if name == "execs_course_source":  # a refused open is that cell's own error, not a note of its own
        assert "PermissionError: opening" in _cell_errors(result)
    elif name != "torch_from_frames":  # that one finds no torch at all: it was never imported in this process
        assert any(note.startswith("Blocked while grading") for note in result.notes)


_ATEN = ("    return torch.ops.aten.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, "
         "self.training, self.momentum, self.eps, False)\n")


def _module_via(body: str) -> str:
    """An ex4 module subclassing torch's, whose forward runs ``body`` (indented as a method body)."""
    return ("class BatchNorm2d(torch.nn.BatchNorm2d):\n    def forward(self, x):\n"
            "        if self.training:\n            self.num_batches_tracked += 1\n"
            + "".join("        " + line + "\n" for line in body.splitlines()))


EX4 = {
    "correct": dict(),
    "torch_bn_module": dict(replace={"ex4_module": wrong.TORCH_MODULE_CALLS_TORCH}),
    "torch_bn_function": dict(replace={"ex4_function": "class BatchNormFunction(torch.autograd.Function):\n"
                                       "    @staticmethod\n    def forward(ctx, *args):\n"
                                       "        return torch.nn.functional.batch_norm(*args)\n"}),
    "mode_from_grad": dict(replace={"ex4_module": wrong.WRONG_TORCH_MODULE["mode_from_grad"]}),
    # other routes to torch's own kernels: the aten op itself, and instance norm with the batch folded in
    "aten_batch_norm": dict(replace={"ex4_function": "class BatchNormFunction(torch.autograd.Function):\n"
                                     "    @staticmethod\n    def forward(ctx, x, rm, rv, w, b, training, m, eps):\n"
                                     "        return torch.ops.aten.batch_norm(x, w, b, rm, rv, training, m, eps,"
                                     " False)\n"}),
    # a real autograd.Function whose backward asks autograd for the gradient of a recomputed forward
    "autograd_in_backward": dict(replace={"ex4_function": wrong.TORCH_FUNCTION.replace(
        "        xhat, inv, weight = ctx.saved_tensors\n",
        "        xhat, inv, weight = ctx.saved_tensors\n"
        "        with torch.enable_grad():\n"
        "            w = weight.detach().requires_grad_()\n"
        "            y = (w.reshape(inv.shape) * xhat).sum()\n"
        "            torch.autograd.grad(y, w)\n")}),
    "instance_norm_folded": dict(replace={"ex4_function": (
        "class BatchNormFunction(torch.autograd.Function):\n"
        "    @staticmethod\n    def forward(ctx, x, rm, rv, w, b, training, m, eps):\n"
        "        folded = x.transpose(0, 1).reshape(1, x.shape[1], -1)\n"
        "        y = torch.nn.functional.instance_norm(folded, eps=eps)\n"
        "        return y.reshape(x.transpose(0, 1).shape).transpose(0, 1) * w.view(1, -1, *[1] * (x.dim() - 2))"
        " + b.view(1, -1, *[1] * (x.dim() - 2))\n")}),
    # a module that steps around the dispatch mode that guards the probes, four ways: each still meets the
    # blocked kernels in torch's dispatcher, the blocked Python decompositions, or the audit hook
    **{name: dict(replace={"ex4_module": _module_via(body)}) for name, body in {
        "pops_the_dispatch_mode": ("from torch.utils._python_dispatch import _pop_mode_temporarily\n"
                                   "with _pop_mode_temporarily():\n" + _ATEN),
        "disables_torch_dispatch": "with torch._C._DisableTorchDispatch():\n" + _ATEN,
        "python_decomposition": ("import torch._decomp.decompositions as d\nif True:\n    return "
                                 "d.native_batch_norm(x, self.weight, self.bias, self.running_mean, "
                                 "self.running_var, self.training, self.momentum, self.eps)[0]\n"),
        "refs_normalize": ("import torch._refs\nif True:\n    dims = [0, 2, 3]\n"
                           "    xhat, mean, rstd = torch._refs._normalize(x, dims, self.eps)\n"
                           "    return xhat * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)\n"),
        "originals_through_gc": ("import gc\nif True:\n    bn = [o for o in gc.get_objects() if getattr(o, "
                                 "'__name__', '') == 'batch_norm'][0]\n    return bn(x, self.running_mean, "
                                 "self.running_var, self.weight, self.bias, self.training, self.momentum, "
                                 "self.eps)\n"),
    }.items()},
}


@pytest.fixture(scope="module")
def ex4(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ex4")
    paths = [write(solved("ex4_torch_layer", **spec), directory, f"{name}.ipynb") for name, spec in EX4.items()]
    return dict(zip(EX4, grade_many(paths, find_masters(), LIMITS, jobs=2)))


def test_torch_exercise_correct_and_partial(ex4):
    assert ex4["correct"].score == ex4["correct"].max_score == 9.0
    assert not [note for note in ex4["correct"].notes if note.startswith("Blocked")], ex4["correct"].notes
    result = ex4["mode_from_grad"]
    assert result.score == 5.0 and "torch.is_grad_enabled()" in feedback(result, "ex4_module_tests")


def test_torch_exercise_cannot_delegate_to_torch_batch_norm(ex4):
    module, function = ex4["torch_bn_module"], ex4["torch_bn_function"]
    assert score(module, "ex4_module_tests", "ex4_module_hidden") == 0 and module.score == 5.0
    assert "torch's own normalization" in feedback(module, "ex4_module_tests")
    assert function.score <= 1.0  # the module built on it fails too; only the multiple-choice answer remains
    assert any("torch.nn.functional.batch_norm" in note for note in function.notes)


def test_autograd_inside_a_backward_earns_nothing(ex4):
    result = ex4["autograd_in_backward"]
    assert score(result, "ex4_function_tests", "ex4_function_hidden") == 0, [t.feedback for t in result.tests]
    assert any("autograd inside a backward" in note for note in result.notes), result.notes


@pytest.mark.parametrize("route", ["aten_batch_norm", "instance_norm_folded"])
def test_no_route_to_torch_batch_norm_earns_marks(ex4, route):
    result = ex4[route]
    assert score(result, "ex4_function_tests", "ex4_function_hidden") == 0, [t.feedback for t in result.tests]
    assert any(note.startswith("Blocked while grading") and "_norm" in note for note in result.notes), result.notes


@pytest.mark.parametrize("route", ["pops_the_dispatch_mode", "disables_torch_dispatch", "python_decomposition",
                                   "refs_normalize", "originals_through_gc"])
def test_stepping_around_the_dispatch_mode_earns_nothing(ex4, route):
    result = ex4[route]
    assert score(result, "ex4_module_tests", "ex4_module_hidden") == 0, [t.feedback for t in result.tests]
    assert result.score == 5.0  # the function and the question, which it left alone


@pytest.mark.parametrize("name", ["ipython_syntax", "jupyter_idioms"])
def test_correct_work_in_ipython_syntax_gets_full_marks(ex1, name):
    """Magics, help lines, %%writefile and importing what it wrote, x = %time f(), %timeit with options,
    display, shell captures, run_cell, a test line pasted into a solution, a big-endian result."""
    results, *_ = ex1
    result = results[name]
    assert result.score == result.max_score, [t.feedback for t in result.tests if t.status != "passed"]
    assert not [n for n in result.notes if "raised" in n], result.notes


def test_a_symlink_is_refused_not_followed(ex1):
    results, *_ = ex1
    assert results["symlink"].status == "error" and results["symlink"].score == 0
    assert "symbolic link" in results["symlink"].notes[0]


def test_a_failure_while_grading_one_submission_is_its_error_row(tmp_path, monkeypatch):
    """Whatever breaks for one submission (here: building its plan) leaves the others graded."""
    from bnlab.grading import grade as grade_module

    good = write(solved("ex1_forward"), tmp_path, "good.ipynb")
    bad = write(solved("ex1_forward"), tmp_path, "bad.ipynb")
    real = grade_module.build_plan

    def fails_for_bad(master, nb, limits):
        if any("bad" in str(cell.get("source", "")) for cell in nb.cells):
            raise RuntimeError("planning broke")
        return real(master, nb, limits)

    monkeypatch.setattr(grade_module, "build_plan", fails_for_bad)
    Path(bad).write_text(Path(bad).read_text().replace('"cells": [', '"cells": [{"cell_type": "markdown", '
                                                      '"id": "marker", "metadata": {}, "source": "bad"}, ', 1))
    results = grade_many([good, bad], find_masters(), LIMITS, jobs=2)
    assert results[0].status == "graded" and results[0].score == results[0].max_score
    assert results[1].status == "error" and "could not be graded: RuntimeError: planning broke" in results[1].notes[0]


# ------------------------------------------------------------------------------------------------ isolation

from bnlab.grading.grade import sandboxed  # noqa: E402

needs_sandbox = pytest.mark.skipif(not sandboxed(), reason="bubblewrap is not usable here; to run these tests: "
                                   "sudo apt-get install bubblewrap (CI's .ci/run installs it)")
MASTERS_DIR = Path(__file__).resolve().parents[1] / "solutions"


@pytest.fixture(scope="module")
def attacks(tmp_path_factory):
    """Hostile submissions graded in one class run beside innocent ones, two at a time."""
    import bnlab

    directory = tmp_path_factory.mktemp("attacks")
    outside = tmp_path_factory.mktemp("outside")
    package_file = Path(bnlab.__file__).resolve()
    attacks = {
        # read the master (hidden tests and answers) next to the grader
        "reads_master": [f"print(open({str(MASTERS_DIR / 'ex1_forward.ipynb')!r}).read()[:10])"],
        # make the grader judge with a rigged package: write into the installed bnlab
        "writes_package": [f"open({str(package_file)!r}, 'a').write('\\n# rigged\\n')"],
        # find every other process and kill it (the grader, the other submissions)
        "kills_everything": ["import os, signal\n"
                             "for p in os.listdir('/proc'):\n"
                             "    if p.isdigit() and int(p) != os.getpid():\n"
                             "        try:\n            os.kill(int(p), signal.SIGKILL)\n"
                             "        except OSError:\n            pass"],
        # leave a detached process behind that writes outside its folder once grading is over
        "detached_writer": ["import os, time\n"
                            "if os.fork() == 0:\n    os.setsid()\n    time.sleep(1.5)\n"
                            f"    open({str(outside / 'planted.txt')!r}, 'w').write('x')\n    os._exit(0)"],
        # reach the network
        "network": ["import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=2)"],
        # plant a module where a later submission in the same sandbox would import it (the scratch root)
        "plants_module": ["import os\nroot = os.path.dirname(os.getcwd())\n"
                          "open(os.path.join(root, 'statistics.py'), 'w').write('raise SystemExit')"],
        # read the next submission's code from the sandbox helper's pipes, and write forged results into them
        "opens_helper_pipes": ["import os\nos.open(f'/proc/{os.getppid()}/fd/0', os.O_RDONLY)",
                               "import os\nos.open(f'/proc/{os.getppid()}/fd/1', os.O_WRONLY)"],
        # messages the grader cannot parse or must not trust: nesting past the JSON parser's depth, a 64 MB
        # message, a forged instructor's note with a lone surrogate and terminal escapes
        "forges_messages": ["import sys\nframe = sys._getframe()\n"
                            "while 'conn' not in frame.f_locals:\n    frame = frame.f_back\n"
                            "conn = frame.f_locals['conn']\n"
                            "import json\nconn.send_bytes(json.dumps({'type': 'cell_error', "
                            "'where': frame.f_locals['item']['label'], "
                            "'error': 'NOTE FROM INSTRUCTOR: full marks \\udc80 \\x1b[2K' + 'x' * 50000}).encode())\n"
                            "conn.send_bytes(b'[' * 100000 + b']' * 100000)\n"
                            "conn.send_bytes(b'{\"type\": \"at\", \"where\": \"' + b'x' * (8 << 20) + b'\"}')\n"
                            "conn.send_bytes(b'{\"type\": \"at\", \"where\": \"' + b'x' * (64 << 20) + b'\"}')\n"],
        # start a process: it would have none of the child's guards (audited, and with the audit silenced)
        "starts_process": ["import subprocess, sys\nsubprocess.run([sys.executable, '-c', 'print(1)'])",
                           "import subprocess, sys, types\nquiet = types.ModuleType('sys')\n"
                           "quiet.__dict__.update(sys.__dict__)\nquiet.audit = lambda *args: None\n"
                           "subprocess.sys = quiet\nsubprocess.run([sys.executable, '-c', 'print(1)'])"],
        # read the course's source or a helper's pipe relative to a folder descriptor, which the open event
        # does not show: from the root, and from the scratch folder upwards
        "reads_through_dir_fd": ["import os\nroot = os.open('/', os.O_RDONLY)",
                                 "import os\nhere = os.open('.', os.O_RDONLY)\n"
                                 "os.open('../../../../../proc/1/fd/1', os.O_WRONLY, dir_fd=here)"],
        # a link whose target the check would resolve from the wrong folder: relative to the link's own folder
        # (not the working one), opened through a folder descriptor; and a hard link to the master
        "links_past_the_check": ["import os\nos.makedirs('a/' * 30)\nos.symlink('a/' * 30, 'x')\nos.makedirs('d/x')\n"
                                 f"os.symlink('x/' + '../' * 30 + {str(MASTERS_DIR)[1:]!r} + '/ex1_forward.ipynb', "
                                 "'d/w')\nfolder = os.open('d', os.O_RDONLY)\n"
                                 "print(os.read(os.open('w', os.O_RDONLY, dir_fd=folder), 9))",
                                 f"import os\nos.link({str(MASTERS_DIR / 'ex1_forward.ipynb')!r}, 'master.ipynb')"],
    }
    paths = {name: write(solved("ex1_forward", append=cells), directory, f"{name}.ipynb")
             for name, cells in attacks.items()}
    for index in range(4):
        paths[f"innocent{index}"] = write(solved("ex1_forward"), directory, f"innocent{index}.ipynb")
    before = package_file.read_bytes()
    results = dict(zip(paths, grade_many(list(paths.values()), find_masters(), LIMITS, jobs=2)))
    time.sleep(2.5)  # longer than the detached writer waits
    return results, outside, before, package_file


def _cell_errors(result):
    return " | ".join(note for note in result.notes if "raised" in note)


def test_a_submission_cannot_read_the_masters(attacks):
    """Two walls: the child's audit hook refuses to open a file in a master's folder (with or without the
    sandbox), and in the sandbox the folder is an empty one."""
    results, *_ = attacks
    errors = _cell_errors(results["reads_master"])
    assert "PermissionError: opening" in errors or "FileNotFoundError" in errors, errors


def test_a_submission_cannot_make_links(attacks):
    """A link's target is resolved from the link's folder or a folder descriptor the audit event does not
    show, so no path check of it holds: making links is refused outright (a grader's reviewer got the master's
    text this way before)."""
    results, *_ = attacks
    errors = _cell_errors(results["links_past_the_check"])
    assert "os.symlink is not allowed while grading" in errors and "os.link is not allowed while grading" in errors, \
        errors
    assert results["links_past_the_check"].score == results["innocent0"].score  # the cells after still ran


@needs_sandbox
def test_a_submission_cannot_write_to_the_grader_or_its_package(attacks):
    results, _, before, package_file = attacks
    assert package_file.read_bytes() == before
    errors = _cell_errors(results["writes_package"])
    assert "OSError" in errors or "PermissionError" in errors, errors


@needs_sandbox
def test_killing_every_visible_process_touches_no_other_submission(attacks):
    results, *_ = attacks
    for index in range(4):
        innocent = results[f"innocent{index}"]
        assert innocent.status == "graded" and innocent.score == innocent.max_score, innocent.notes


@needs_sandbox
def test_nothing_a_submission_starts_outlives_its_grading(attacks):
    results, outside, *_ = attacks
    assert not (outside / "planted.txt").exists()


@needs_sandbox
def test_a_submission_has_no_network(attacks):
    results, *_ = attacks
    assert "OSError" in _cell_errors(results["network"]) or "gaierror" in _cell_errors(results["network"])


def test_a_submission_cannot_plant_modules_open_the_helpers_pipes_or_start_processes(attacks):
    results, *_ = attacks
    assert "PermissionError: writing" in _cell_errors(results["plants_module"])
    pipes = _cell_errors(results["opens_helper_pipes"])
    assert pipes.count("PermissionError") == 2, pipes
    started = _cell_errors(results["starts_process"])
    assert "subprocess.Popen is not allowed" in started and "PermissionError" in started, started
    folders = _cell_errors(results["reads_through_dir_fd"])
    assert "opening the folder /" in folders and "opening ../../../../../proc/1/fd/1" in folders, folders
    for name in ("plants_module", "opens_helper_pipes", "starts_process", "reads_through_dir_fd"):
        assert results[name].score == results[name].max_score  # the attack cell failed, nothing else


def test_forged_and_malformed_messages_are_dropped_and_texts_are_made_safe(attacks):
    """Nested past the parser's depth and oversized messages are dropped; a forged note is cut to 500
    characters and its lone surrogate and terminal escapes are shown as escapes; every innocent submission
    of the class is graded in full."""
    results, *_ = attacks
    result = results["forges_messages"]  # a message over the frame limit ends its own run: after every test
    assert result.status in ("graded", "crashed") and result.score == result.max_score
    forged = [note for note in result.notes if "NOTE FROM INSTRUCTOR" in note]
    assert forged and all(len(note) < 600 and "\x1b" not in note and "\udc80" not in note for note in forged)
    assert any("\\x1b" in note for note in forged)
    for index in range(4):
        assert results[f"innocent{index}"].score == results[f"innocent{index}"].max_score


def test_without_bubblewrap_the_grader_says_what_isolation_is_lost(monkeypatch):
    from bnlab.grading import grade as grade_module

    grade_module.isolation_problem.cache_clear()
    monkeypatch.setattr(grade_module, "bubblewrap_problem",
                        lambda: "bubblewrap (bwrap) is not installed: install Debian's bubblewrap")
    try:
        text = grade_module.isolation_problem()
        assert text.startswith("WARNING: bubblewrap (bwrap) is not installed")
        assert "can read the masters and the other submissions" in text and "network" in text
        assert not grade_module.sandboxed()
    finally:
        grade_module.isolation_problem.cache_clear()


def test_a_probe_that_sends_back_nothing_earns_nothing(ex1):
    results, *_ = ex1
    result = results["empties_the_probe"]
    assert score(result, *FORWARD_TESTS) == 0, [t.feedback for t in result.tests]
    assert "results for" in feedback(result, "ex1_forward_tests")


def test_a_table_of_answers_for_the_published_inputs_earns_nothing(tmp_path):
    """The checks' code is public, so a student can compute every input they draw in a notebook (salt 0) and
    answer only those; grading draws fresh inputs for every check, so such a table earns no mark at all."""
    import hashlib

    import numpy as np

    from bnlab.grading.sandbox import make_check

    master = find_masters()["ex1_forward"]
    known = set()
    for test in master.tests:
        for call in test.calls:
            for case in make_check(call.check, call.names, call.options).inputs().get("cases", []):
                known.add(hashlib.sha256(np.ascontiguousarray(case["x"]).tobytes()).hexdigest())
    source = (
        "import hashlib\nimport numpy as np\n"
        f"KNOWN = {sorted(known)!r}\n"
        "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n"
        "    if hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest() not in KNOWN:\n"
        "        return np.zeros_like(x), None\n"
        "    axes = tuple(a for a in range(x.ndim) if a != 1)\n"
        "    shape = (1, -1) + (1,) * (x.ndim - 2)\n"
        "    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)\n"
        "    return np.reshape(gamma, shape) * (x - mu) / np.sqrt(var + eps) + np.reshape(beta, shape), None\n")
    path = write(solved("ex1_forward", replace={"ex1_forward": source}), tmp_path, "table.ipynb")
    (result,) = grade_many([path], find_masters(), LIMITS)
    assert score(result, "ex1_forward_tests") == 0 and score(result, "ex1_forward_hidden") == 0


def test_a_notebook_not_run_top_to_bottom_gets_a_note(tmp_path):
    from bnlab.grading.grade import _run_order_notes

    nb = solved("ex1_forward")
    code = [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]
    assert _run_order_notes(nb) == []                                   # never run: nothing to say
    for count, cell in enumerate(code, start=1):
        cell.execution_count = count
    assert _run_order_notes(nb) == []                                   # top to bottom
    code[0].execution_count, code[1].execution_count = 5, 2
    assert "run out of order" in _run_order_notes(nb)[0]
    code[2].execution_count = None
    assert any("never run" in note for note in _run_order_notes(nb))
    code[0].execution_count, code[1].execution_count = 1, 2
    path = write(nb, tmp_path, "skipped.ipynb")
    (result,) = grade_many([path], find_masters(), LIMITS)
    assert any("1 code cell was never run" in note for note in result.notes) and result.score == result.max_score


def test_a_sandbox_that_will_not_start_falls_back_and_says_so(tmp_path, monkeypatch):
    from bnlab.grading import grade as grade_module

    def broken(hidden, torch=True):
        raise RuntimeError("the grading sandbox did not start")

    monkeypatch.setattr(grade_module, "sandbox_for_this_thread", broken)
    monkeypatch.setattr(grade_module, "sandboxed", lambda: True)
    path = write(solved("ex1_forward"), tmp_path, "fallback.ipynb")
    (result,) = grade_many([path], find_masters(), LIMITS)
    assert result.status == "graded" and result.score == result.max_score
    assert any("graded without the sandbox" in note for note in result.notes)


def test_a_course_that_lives_under_tmp_is_bound_back_into_the_sandbox(monkeypatch):
    """The sandbox gets an empty /tmp of its own; a Python or a course checked out under /tmp (a CI clone) is
    bound back read-only, outermost folder only, or the sandbox's helper could not even start."""
    from bnlab.grading import sandbox

    monkeypatch.setattr(sys, "prefix", "/tmp/course/.venv")
    monkeypatch.setattr(sys, "exec_prefix", "/tmp/course/.venv")
    needed = sandbox._needed_under_tmp()
    assert "/tmp/course/.venv" in needed or any("/tmp/course/.venv".startswith(p + "/") for p in needed)
    assert all(not a.startswith(b + "/") for a in needed for b in needed if a != b)
