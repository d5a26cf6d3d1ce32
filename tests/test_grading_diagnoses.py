"""Every diagnosis the grader makes, each triggered by a deliberately wrong learner implementation.

These run the checks in-process (as a learner's notebook does); the sandboxed grader runs the same judges on the
same raw results, which tests/test_grading_sandbox.py checks end to end.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from bnlab import functional, layers
from bnlab.grading import checks
from bnlab.grading.answer_checks import tiny_reference
from bnlab.grading.core import CheckFailed
from bnlab.grading.diagnoses import EXPLANATIONS, LAYER_MISTAKES, LayerModel
from bnlab.grading.layer_script import play_model, play_numpy

sys.path.insert(0, str(Path(__file__).parent / "grading_fixtures"))
import wrong  # noqa: E402


def failure(check, *objects) -> str:
    with pytest.raises(AssertionError) as info:
        check(*objects)
    assert isinstance(info.value, CheckFailed)
    return str(info.value)


def test_correct_learner_code_passes_every_check(capsys):
    forward = wrong.load(wrong.FORWARD, "batchnorm_forward")
    backward = wrong.load(wrong.BACKWARD, "batchnorm_backward")
    checks.forward(forward)
    checks.forward_conv(forward)
    checks.forward_options(forward)
    checks.inference(wrong.load(wrong.INFERENCE, "batchnorm_inference"))
    checks.inference_conv(wrong.load(wrong.INFERENCE, "batchnorm_inference"))
    checks.backward(forward, backward)
    checks.backward_conv(forward, backward)
    layer = wrong.load(wrong.LAYER, "BatchNorm")
    checks.layer_train(layer)
    checks.layer_eval(layer)
    checks.layer_conv(layer)
    printed = capsys.readouterr()
    assert printed.out.count("\u2714") == 10 and printed.err == ""


@pytest.mark.parametrize("label", sorted(wrong.WRONG_FORWARD))
def test_forward_mistakes_are_named(label):
    message = failure(checks.forward, wrong.load(wrong.WRONG_FORWARD[label], "batchnorm_forward"))
    assert EXPLANATIONS[label] in message


def test_eps_misplacement_shows_on_the_nearly_constant_feature():
    message = failure(checks.forward, wrong.load(wrong.WRONG_FORWARD["eps_outside_sqrt"], "batchnorm_forward"))
    assert "nearly constant feature" in message and "+-0.03" in message


def test_unbiased_variance_shows_at_small_batch():
    message = failure(checks.forward, wrong.load(wrong.WRONG_FORWARD["unbiased_variance"], "batchnorm_forward"))
    assert "(4, 3) batch" in message  # caught on the first, N = 4, batch


@pytest.mark.parametrize("label", sorted(wrong.WRONG_FORWARD_CONV))
def test_conv_forward_mistakes_are_named(label):
    forward = wrong.load(wrong.WRONG_FORWARD_CONV[label], "batchnorm_forward")
    message = failure(checks.forward_conv, forward)
    assert EXPLANATIONS[label] in message


def test_forward_that_edits_its_input_in_place():
    message = failure(checks.forward, wrong.load(wrong.FORWARD_IN_PLACE, "batchnorm_forward"))
    assert "in place" in message and "x" in message


def test_forward_that_returns_no_cache():
    message = failure(checks.forward, wrong.load(wrong.FORWARD_NOT_A_PAIR, "batchnorm_forward"))
    assert "must return a pair (out, cache)" in message


def test_forward_that_changes_the_dtype():
    forward = wrong.load(wrong.FORWARD_DROPS_DTYPE, "batchnorm_forward")
    checks.forward(forward)
    assert "dtype float64" in failure(checks.forward_options, forward)


def test_forward_that_ignores_eps():
    forward = wrong.load(wrong.FORWARD.replace("np.sqrt(var + eps)", "np.sqrt(var + 1e-5)"), "batchnorm_forward")
    checks.forward(forward)
    assert "eps argument is ignored" in failure(checks.forward_options, forward)


def test_placeholder_is_reported_as_unfinished():
    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        raise NotImplementedError()
    assert "still the exercise's placeholder" in failure(checks.forward, batchnorm_forward)


@pytest.mark.parametrize("label", sorted(wrong.WRONG_INFERENCE))
def test_inference_mistakes_are_named(label):
    message = failure(checks.inference, wrong.load(wrong.WRONG_INFERENCE[label], "batchnorm_inference"))
    assert EXPLANATIONS[label] in message


def test_inference_in_place():
    assert "in place" in failure(checks.inference, wrong.load(wrong.INFERENCE_IN_PLACE, "batchnorm_inference"))


@pytest.mark.parametrize("label", sorted(wrong.WRONG_BACKWARD))
def test_backward_mistakes_are_named(label):
    forward = wrong.load(wrong.FORWARD, "batchnorm_forward")
    message = failure(checks.backward, forward, wrong.load(wrong.WRONG_BACKWARD[label], "batchnorm_backward"))
    assert EXPLANATIONS[label] in message


def test_a_backward_returning_zeros_would_pass_an_all_ones_check_but_not_ours():
    forward = wrong.load(wrong.FORWARD, "batchnorm_forward")
    zeros = wrong.load(wrong.WRONG_BACKWARD["zeros"], "batchnorm_backward")
    x = np.random.default_rng(0).standard_normal((5, 3))
    out, cache = forward(x, np.ones(3), np.zeros(3))
    _, reference_cache = functional.batchnorm_forward(x, np.ones(3), np.zeros(3))
    true_dx, _, _ = functional.batchnorm_backward(np.ones_like(x), reference_cache)
    assert np.allclose(zeros(np.ones_like(x), cache)[0], true_dx, atol=1e-10)  # the weak check is fooled
    assert "all-ones upstream gradient" in failure(checks.backward, forward, zeros)


@pytest.mark.parametrize("source, expected", [
    (wrong.BACKWARD_DGAMMA_NOT_SUMMED, "it is not summed"),
    (wrong.BACKWARD_DGAMMA_KEEPDIMS, "drop the kept axes"),
    (wrong.BACKWARD_CACHE_IN_PLACE, "modifies the cache in place"),
    (wrong.BACKWARD_DOUT_IN_PLACE, "changed dout in place"),
], ids=["dgamma-not-summed", "dgamma-keepdims", "cache-in-place", "dout-in-place"])
def test_backward_shape_and_in_place_mistakes(source, expected):
    forward = wrong.load(wrong.FORWARD, "batchnorm_forward")
    assert expected in failure(checks.backward, forward, wrong.load(source, "batchnorm_backward"))


def test_a_consistent_pair_on_the_wrong_convention_passes_a_gradient_check_but_not_reference_values():
    from bnlab.gradcheck import check_forward_backward

    forward = wrong.load(wrong.UNBIASED_PAIR[0], "batchnorm_forward")
    backward = wrong.load(wrong.UNBIASED_PAIR[1], "batchnorm_backward")
    assert check_forward_backward(forward, backward).passed
    message = failure(checks.backward, forward, backward)
    assert "agrees with finite differences of your own" in message and "only reference values" in message


def test_backward_reports_its_missing_forward():
    def batchnorm_forward(x, gamma, beta, eps=1e-5):
        raise NotImplementedError()
    message = failure(checks.backward, batchnorm_forward, wrong.load(wrong.BACKWARD, "batchnorm_backward"))
    assert "cannot check batchnorm_backward" in message


@pytest.mark.parametrize("label", sorted(wrong.WRONG_LAYER))
def test_layer_mistakes_are_named(label):
    layer = wrong.load(wrong.WRONG_LAYER[label], "BatchNorm")
    messages = []
    for check in (checks.layer_train, checks.layer_eval):
        try:
            check(layer)
        except CheckFailed as exc:
            messages.append(str(exc))
    assert messages, "the mistake went unnoticed"
    assert EXPLANATIONS[label] in messages[0] or EXPLANATIONS[label] in messages[-1]


@pytest.mark.parametrize("source, what", [("LAYER_X_IN_PLACE", "changed its input x in place"),
                                          ("LAYER_DOUT_IN_PLACE", "changed the upstream gradient dout in place")])
def test_a_layer_that_edits_its_callers_arrays_fails(source, what):
    assert LAYER_SOURCE_OK in wrong.LAYER
    layer = wrong.load(getattr(wrong, source), "BatchNorm")
    assert what in failure(checks.layer_train, layer)


LAYER_SOURCE_OK = "self.xhat = (x - mean.reshape(shape)) * self.inv"


def test_a_backward_counting_only_the_batch_is_named_on_4d_input():
    forward = wrong.load(wrong.FORWARD, "batchnorm_forward")
    backward = wrong.load(wrong.BACKWARD_M_IS_N, "batchnorm_backward")
    checks.backward(forward, backward)                          # (N, C): m = N is right
    assert EXPLANATIONS["m_is_batch_size_in_backward"] in failure(checks.backward_conv, forward, backward)


def test_layer_conv_mistake_m_is_n_h_w():
    layer = wrong.load(wrong.WRONG_LAYER_CONV["running_var_batch_size_only"], "BatchNorm")
    checks.layer_train(layer)
    checks.layer_eval(layer)
    assert EXPLANATIONS["running_var_batch_size_only"] in failure(checks.layer_conv, layer)


def test_eval_mode_output_must_not_depend_on_the_rest_of_the_batch():
    layer = wrong.load(wrong.WRONG_LAYER["batch_statistics_in_eval"], "BatchNorm")
    assert EXPLANATIONS["batch_statistics_in_eval"] in failure(checks.layer_eval, layer)


@pytest.mark.parametrize("label", sorted(wrong.WRONG_TORCH_FUNCTION))
def test_torch_function_mistakes_are_named(label):
    function = wrong.load(wrong.WRONG_TORCH_FUNCTION[label], "BatchNormFunction")
    assert EXPLANATIONS[label] in failure(checks.torch_function, function)


def test_torch_module_mode_tied_to_grad_flag():
    module = wrong.load(wrong.WRONG_TORCH_MODULE["mode_from_grad"], "BatchNorm2d")
    assert EXPLANATIONS["mode_from_grad"] in failure(checks.torch_module, module)


def test_torch_module_weight_must_be_a_parameter():
    module = wrong.load(wrong.TORCH_MODULE_NOT_A_PARAMETER, "BatchNorm2d")
    assert "not a registered parameter" in failure(checks.torch_module, module)


def test_torch_module_statistics_are_buffers_and_its_state_dict_matches_torch():
    as_parameters = wrong.load(wrong.TORCH_MODULE_STATISTICS_AS_PARAMETERS, "BatchNorm2d")
    assert "running_mean is a parameter" in failure(checks.torch_module, as_parameters)
    extra = wrong.load(wrong.TORCH_MODULE_EXTRA_STATE, "BatchNorm2d")
    assert "keys torch.nn.BatchNorm2d does not (['saved_mean'])" in failure(checks.torch_module, extra)


def test_torch_function_must_accept_no_running_statistics():
    function = wrong.load(wrong.TORCH_FUNCTION_NEEDS_RUNNING, "BatchNormFunction")
    assert wrong.TORCH_FUNCTION_NEEDS_RUNNING != wrong.TORCH_FUNCTION
    message = failure(checks.torch_function, function)
    assert "without running statistics (None)" in message and "AttributeError" in message


def test_torch_module_counts_batches_as_torch_does():
    module = wrong.load(wrong.TORCH_MODULE_TRACKED_FLOAT, "BatchNorm2d")
    assert wrong.TORCH_MODULE_TRACKED_FLOAT != wrong.TORCH_MODULE
    message = failure(checks.torch_module, module)
    assert "num_batches_tracked is 0 (torch.float32), torch's is 0 (torch.int64)" in message


def test_torch_module_returns_the_inputs_dtype():
    module = wrong.load(wrong.TORCH_MODULE_DOUBLE_OUTPUT, "BatchNorm2d")
    assert wrong.TORCH_MODULE_DOUBLE_OUTPUT != wrong.TORCH_MODULE
    assert "returned float64, torch returns float32 for float32 input" in failure(checks.torch_module, module)


def test_correct_torch_code_passes(capsys):
    function = wrong.load(wrong.TORCH_FUNCTION, "BatchNormFunction")
    checks.torch_function(function)
    checks.torch_function_conv(function)
    module = wrong.load(wrong.TORCH_MODULE, "BatchNorm2d")
    checks.torch_module(module)
    checks.torch_module_conv(module)
    assert capsys.readouterr().out.count("\u2714") == 4


@pytest.mark.parametrize("entry, expected", [
    (lambda r: (r["dvar"] / 3 * np.array([1, -1]) * np.array([1, -1]), r["dmu"]), None),
    (lambda r: (-r["dvar"], r["dmu"]), "sign is flipped"),
    (lambda r: (tiny_reference(use_gamma=False)["dvar"], r["dmu"]), "gamma is missing"),
    (lambda r: (r["dvar"], r["dmu"] / 3), "averaged instead of summing"),
    (lambda r: (r["dvar"].round(4), r["dmu"].round(4)), "pass"),
], ids=["wrong-scale", "sign", "gamma", "mean", "rounded-ok"])
def test_checkpoint_answers(entry, expected):
    dvar, dmu = entry(tiny_reference())
    if expected == "pass":
        checks.checkpoint(list(dvar), list(dmu))
        return
    message = failure(checks.checkpoint, dvar, dmu)
    assert expected is None or expected in message


def test_jacobian_with_constant_statistics_is_named():
    ref = tiny_reference()["jacobian"]
    diagonal = np.diag(np.diag(ref)) * 0 + np.eye(3) * 3.0 / np.sqrt(np.var([1.0, 3.0, 8.0]) + 1e-5)
    assert "treated as constants" in failure(checks.jacobian, diagonal)
    assert "rows and columns" not in failure(checks.jacobian, ref * 2)


def test_choice_checks_form_visibly_and_correctness_hidden():
    checks.choice("b")
    assert "one of the letters" in failure(checks.choice, "e")
    assert "one of the letters" in failure(checks.choice, None)
    for not_one_letter in ("", "abcd", "ab", " "):  # a substring of the options is not a choice
        assert "one of the letters" in failure(checks.choice, not_one_letter), repr(not_one_letter)
    assert "not the right answer" in failure(lambda answer: checks.choice(answer, correct="b"), "a")


@pytest.mark.parametrize("mistake", [None])
def test_mistake_models_without_a_mistake_equal_the_references(mistake):
    """The diagnosis models are only trustworthy if the mistake-free model is the reference itself."""
    steps = checks.layer_checks.LayerEvalCheck().steps()
    model = play_model(LayerModel(3, mistake=mistake), steps)
    reference = play_numpy(layers.BatchNorm, steps)
    for mine, ref in zip(model, reference):
        if isinstance(ref.get("value"), np.ndarray):
            assert np.allclose(mine["value"], ref["value"], atol=1e-12)


def test_every_layer_mistake_model_differs_from_the_reference():
    steps = checks.layer_checks.LayerTrainCheck().steps()[:8] + [("eval",), ("forward", np.eye(3) * 2.0), ("state",),
                                                                 ("backward", np.arange(9.0).reshape(3, 3))]
    reference = play_model(LayerModel(3), steps)
    for mistake in LAYER_MISTAKES:
        if mistake in ("mode_from_grad", "eps_ignored", "momentum_ignored", "running_var_batch_size_only"):
            continue  # need no_grad forwards, custom arguments or (N, C, H, W) input to show
        records = play_model(LayerModel(3, mistake=mistake), steps)
        assert any("value" in a and "value" in b and not _equal(a["value"], b["value"])
                   for a, b in zip(records, reference)), mistake


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return all(np.allclose(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(np.allclose(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.shape == np.shape(b) and np.allclose(a, b)
    return a == b


def test_a_failing_check_shows_the_message_without_grading_internals():
    """IPython renders CheckFailed through _render_traceback_: the message only, no bnlab frames."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_cell("from bnlab.grading import checks\n"
                   "def batchnorm_forward(x, gamma, beta, eps=1e-5):\n    return x * 0, None")
    result = shell.run_cell("checks.forward(batchnorm_forward)")
    rendered = result.error_in_exec._render_traceback_()
    assert rendered[0].endswith("batchnorm_forward on a (4, 3) batch: out differs from the reference (relative "
                                "error 1.0e+00); e.g. at index (0, 0) you have -0, expected 2.64028.")
    assert "check failed" in rendered[0] and not any("bnlab/grading" in line for line in rendered)


def test_a_one_pass_variance_passes_in_float64_but_not_on_a_float32_batch_with_a_large_mean():
    one_pass = wrong.load(wrong.FORWARD_ONE_PASS, "batchnorm_forward")
    checks.forward(one_pass)                                           # float64: no cancellation, it passes
    message = failure(checks.forward_options, one_pass)
    assert "float32 batch with a large mean" in message and EXPLANATIONS["one_pass_variance"] in message
    checks.forward_options(wrong.load(wrong.FORWARD, "batchnorm_forward"))  # two passes in float32: passes


# ---------------------------------------------------------------- mistakes named since the adversarial review


def test_a_backward_on_reshape_c_rows_is_named():
    """reshape(C, -1) of (N, C, H, W) mixes channels; right on (N, C) only when the rows happen to be channels."""
    forward = wrong.load(wrong.FORWARD, "batchnorm_forward")
    backward = wrong.load(wrong.BACKWARD_RESHAPE_ROWS, "batchnorm_backward")
    message = failure(checks.backward_conv, forward, backward)
    assert "(3, 2, 2, 3)" in message and EXPLANATIONS["reshape_rows_without_transpose"] in message


def test_dgamma_summed_over_the_wrong_axes_is_named_with_the_axes():
    forward = wrong.load(wrong.FORWARD, "batchnorm_forward")
    backward = wrong.load(wrong.BACKWARD_DGAMMA_AXIS_0, "batchnorm_backward")
    checks.backward(forward, backward)                          # (N, C): axis 0 is right
    message = failure(checks.backward_conv, forward, backward)
    assert "summed over axes (0,) only" in message and EXPLANATIONS["param_gradient_wrong_axes"] in message


def test_momentum_swapped_after_the_first_batch_is_named():
    """The whole-script models start from the right state; the update rule is also judged from the learner's
    own previous state, so a rule that goes wrong only from the second batch on is still named."""
    layer = wrong.load(wrong.LAYER_MOMENTUM_SWAPPED_AFTER_FIRST, "BatchNorm")
    message = failure(checks.layer_train, layer)
    assert "forward #2" in message and EXPLANATIONS["momentum_swapped"] in message


def test_first_batch_copied_into_the_running_statistics_is_named():
    layer = wrong.load(wrong.LAYER_FIRST_BATCH_COPIED, "BatchNorm")
    message = failure(checks.layer_train, layer)
    assert "forward #1" in message and EXPLANATIONS["first_batch_copied"] in message


def test_an_eval_backward_with_the_training_formula_is_named():
    function = wrong.load(wrong.TORCH_FUNCTION_TRAINING_BACKWARD_IN_EVAL, "BatchNormFunction")
    message = failure(checks.torch_function, function)
    assert "eval mode" in message and EXPLANATIONS["training_backward_in_eval"] in message
    module = wrong.load(wrong.TORCH_MODULE.replace("class BatchNorm2d", wrong.TORCH_FUNCTION_TRAINING_BACKWARD_IN_EVAL
                                                   + "\n\nclass BatchNorm2d"), "BatchNorm2d")
    message = failure(checks.torch_module, module)
    assert "backward after forward #3" in message and EXPLANATIONS["training_backward_in_eval"] in message


@pytest.mark.parametrize("check, source, name", [
    (checks.inference_conv, "INFERENCE_TAKES_STATISTICS_DTYPE", "batchnorm_inference"),
    (checks.forward_options, "FORWARD_TAKES_GAMMAS_DTYPE", "batchnorm_forward"),
], ids=["inference", "forward"])
def test_float64_input_keeps_its_dtype_with_float32_statistics(check, source, name):
    function = wrong.load(getattr(wrong, source), name)
    message = failure(check, function)
    assert "float64 batch with float32" in message and "the output has dtype float32" in message


def test_the_forward_on_reshape_c_rows_is_named():
    forward = wrong.load(wrong.WRONG_FORWARD_CONV["reshape_rows_without_transpose"], "batchnorm_forward")
    assert EXPLANATIONS["reshape_rows_without_transpose"] in failure(checks.forward_conv, forward)


def test_a_passing_test_cell_says_what_it_ran_and_never_all_passed(capsys):
    """A visible test cell cannot vouch for the hidden checks: it says so; a hidden check says it is one."""
    forward = wrong.load(wrong.FORWARD, "batchnorm_forward")
    checks.forward(forward)
    visible = capsys.readouterr().out
    assert "visible checks passed \u2014 hidden checks run when your work is graded" in visible
    checks.forward_conv(forward)
    hidden = capsys.readouterr().out
    assert "(hidden check passed)" in hidden and "visible" not in hidden
    checks.choice("b", options="abcd")
    assert "visible checks passed" in capsys.readouterr().out
    checks.choice("b", options="abcd", correct="b")
    assert "(hidden check passed)" in capsys.readouterr().out
    assert "all passed" not in visible + hidden


def test_a_function_that_is_not_an_autograd_function_earns_nothing():
    """Plain tensor operations let autograd differentiate the forward: the exercise's hand-written backward is
    then missing, and the check says so."""
    function = wrong.load(wrong.TORCH_FUNCTION_WITHOUT_BACKWARD, "BatchNormFunction")
    assert "must be a subclass of torch.autograd.Function" in failure(checks.torch_function, function)
