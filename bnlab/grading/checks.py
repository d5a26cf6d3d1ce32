"""What the exercise notebooks' test cells call.

Each function runs one check on the learner's own functions or classes, in the learner's kernel, and either
prints one line saying what passed or raises ``AssertionError`` (:class:`~bnlab.grading.core.CheckFailed`) with
a message naming the likely mistake. ``bnlab grade`` runs the very same checks, with the learner's code in a
sandbox and the verdict on the grader's side.

    from bnlab.grading import checks
    checks.forward(batchnorm_forward)
"""

from __future__ import annotations

from typing import Any

from bnlab.grading import answer_checks, layer_checks, numpy_checks, practice_checks, torch_checks
from bnlab.grading.core import Check, CheckFailed, run_in_process

__all__ = ["forward", "forward_conv", "forward_options", "inference", "inference_conv", "backward",
           "backward_conv", "checkpoint", "jacobian", "choice", "layer_train", "layer_eval", "layer_conv",
           "torch_function", "torch_function_conv", "torch_module", "torch_module_conv", "practice_model",
           "practice_model_sizes", "practice_batches", "practice_batches_sizes", "practice_evaluate",
           "practice_evaluate_modes", "practice_predict", "practice_predict_modes", "practice_fine_tune",
           "practice_fine_tune_nested", "sync_combine", "sync_combine_more", "sync_forward", "sync_forward_more"]


VISIBLE_PASSED = "visible checks passed \u2014 hidden checks run when your work is graded"


def _run(check: Check, *objects: Any, hidden: bool = False) -> None:
    """Run ``check`` here and print its verdict. A failure is raised afresh from here, without the grading
    internals' frames (IPython also hides the frames that set ``__tracebackhide__``): the learner sees the test
    cell's line and the message -- what was expected, what came, the likely mistake -- nothing else.

    A pass says which kind of check passed: a visible test cell never claims more than it ran
    (:data:`VISIBLE_PASSED`); a hidden check (run by nbgrader or an instructor) says it is one."""
    __tracebackhide__ = True
    try:
        message = run_in_process(check, *objects)
    except CheckFailed as failure:
        raise CheckFailed(str(failure)) from None
    print(f"\u2714 {message}\n  (hidden check passed)" if hidden else f"\u2714 {message}\n  ({VISIBLE_PASSED})")


def forward(batchnorm_forward: Any) -> None:
    """Training forward on (N, C) batches: values, small batches, nearly constant features, no in-place edits."""
    __tracebackhide__ = True
    _run(numpy_checks.ForwardCheck(), batchnorm_forward)


def forward_conv(batchnorm_forward: Any) -> None:
    """Training forward on (N, C, H, W) and (N, C, L): one statistic per channel over batch and positions."""
    __tracebackhide__ = True
    _run(numpy_checks.ForwardConvCheck(), batchnorm_forward, hidden=True)


def forward_options(batchnorm_forward: Any) -> None:
    """The eps argument is used and float32 input gives float32 output."""
    __tracebackhide__ = True
    _run(numpy_checks.ForwardOptionsCheck(), batchnorm_forward, hidden=True)


def inference(batchnorm_inference: Any) -> None:
    """Inference with running statistics on (N, C); one example's output must not depend on the others."""
    __tracebackhide__ = True
    _run(numpy_checks.InferenceCheck(), batchnorm_inference)


def inference_conv(batchnorm_inference: Any) -> None:
    """Inference on (N, C, H, W) and with a non-default eps."""
    __tracebackhide__ = True
    _run(numpy_checks.InferenceConvCheck(), batchnorm_inference, hidden=True)


def backward(batchnorm_forward: Any, batchnorm_backward: Any) -> None:
    """A backward (staged or fused) with the learner's own forward, against reference gradients on (N, C)."""
    __tracebackhide__ = True
    _run(numpy_checks.BackwardCheck(), batchnorm_forward, batchnorm_backward)


def backward_conv(batchnorm_forward: Any, batchnorm_backward: Any) -> None:
    """A backward on (N, C, H, W), (N, C, L) and a batch of 2."""
    __tracebackhide__ = True
    _run(numpy_checks.BackwardConvCheck(), batchnorm_forward, batchnorm_backward, hidden=True)


def checkpoint(dL_dvar: Any, dL_dmu: Any) -> None:
    """Exercise 2's hand-computed dL/dvar and dL/dmu for the tiny example."""
    __tracebackhide__ = True
    _run(answer_checks.CheckpointCheck(), dL_dvar, dL_dmu)


def jacobian(J: Any) -> None:
    """Exercise 2's hand-computed 3 x 3 Jacobian of feature 0 of the tiny example."""
    __tracebackhide__ = True
    _run(answer_checks.JacobianCheck(), J)


def choice(answer: Any, options: str = "abcd", correct: str | None = None, why: str = "") -> None:
    """A multiple-choice letter: valid when ``correct`` is None (visible test), right otherwise (hidden test)."""
    __tracebackhide__ = True
    _run(answer_checks.ChoiceCheck(options=options, correct=correct, why=why), answer, hidden=correct is not None)


def layer_train(BatchNorm: Any) -> None:
    """Exercise 3's layer in training mode: initial state, running statistics, eps and momentum, backward."""
    __tracebackhide__ = True
    _run(layer_checks.LayerTrainCheck(), BatchNorm)


def layer_eval(BatchNorm: Any) -> None:
    """Exercise 3's layer in eval mode: running statistics used and kept, per-example independence."""
    __tracebackhide__ = True
    _run(layer_checks.LayerEvalCheck(), BatchNorm)


def layer_conv(BatchNorm: Any) -> None:
    """Exercise 3's layer on (N, C, H, W) input."""
    __tracebackhide__ = True
    _run(layer_checks.LayerConvCheck(), BatchNorm, hidden=True)


def torch_function(BatchNormFunction: Any) -> None:
    """Exercise 4's autograd.Function against torch.nn.functional.batch_norm on (N, C)."""
    __tracebackhide__ = True
    _run(torch_checks.FunctionCheck(), BatchNormFunction)


def torch_function_conv(BatchNormFunction: Any) -> None:
    """Exercise 4's autograd.Function on (N, C, H, W), other momentum and eps."""
    __tracebackhide__ = True
    _run(torch_checks.FunctionConvCheck(), BatchNormFunction, hidden=True)


def torch_module(BatchNorm2d: Any) -> None:
    """Exercise 4's module against torch.nn.BatchNorm2d: parameters, buffers, modes, gradients."""
    __tracebackhide__ = True
    _run(torch_checks.ModuleCheck(), BatchNorm2d)


def torch_module_conv(BatchNorm2d: Any) -> None:
    """Exercise 4's module with custom eps and momentum."""
    __tracebackhide__ = True
    _run(torch_checks.ModuleConvCheck(), BatchNorm2d, hidden=True)


def practice_model(make_model: Any) -> None:
    """Exercise 5's make_model: no bias right before batch norm, no batch norm on the output, the task's layers."""
    __tracebackhide__ = True
    _run(practice_checks.ModelCheck(), make_model)


def practice_model_sizes(make_model: Any) -> None:
    """Exercise 5's make_model with other sizes."""
    __tracebackhide__ = True
    _run(practice_checks.ModelSizesCheck(), make_model, hidden=True)


def practice_batches(make_batches: Any) -> None:
    """Exercise 5's make_batches: shuffled with the given rng, no batch smaller than batch_size."""
    __tracebackhide__ = True
    _run(practice_checks.BatchesCheck(), make_batches)


def practice_batches_sizes(make_batches: Any) -> None:
    """Exercise 5's make_batches on other sizes."""
    __tracebackhide__ = True
    _run(practice_checks.BatchesSizesCheck(), make_batches, hidden=True)


def practice_evaluate(evaluate: Any) -> None:
    """Exercise 5's evaluate: eval-mode accuracy in any order and batch size, the model left as it was."""
    __tracebackhide__ = True
    _run(practice_checks.EvaluateCheck(), evaluate)


def practice_evaluate_modes(evaluate: Any) -> None:
    """Exercise 5's evaluate on a model in eval mode and one with frozen batch norm layers."""
    __tracebackhide__ = True
    _run(practice_checks.EvaluateModesCheck(), evaluate, hidden=True)


def practice_predict(predict_one: Any) -> None:
    """Exercise 5's predict_one: the eval-mode prediction of one example, the model left as it was."""
    __tracebackhide__ = True
    _run(practice_checks.PredictCheck(), predict_one)


def practice_predict_modes(predict_one: Any) -> None:
    """Exercise 5's predict_one on a model in eval mode and one with frozen batch norm layers."""
    __tracebackhide__ = True
    _run(practice_checks.PredictModesCheck(), predict_one, hidden=True)


def practice_fine_tune(fine_tune: Any) -> None:
    """Exercise 5's fine_tune: SGD in batches of two with the batch norm statistics frozen."""
    __tracebackhide__ = True
    _run(practice_checks.FineTuneCheck(), fine_tune)


def practice_fine_tune_nested(fine_tune: Any) -> None:
    """Exercise 5's fine_tune on a network whose batch norm layers are nested."""
    __tracebackhide__ = True
    _run(practice_checks.FineTuneNestedCheck(), fine_tune, hidden=True)


def sync_combine(combine_statistics: Any) -> None:
    """Exercise 5's combine_statistics: the global mean and variance from the workers' summaries (Chan et al.)."""
    __tracebackhide__ = True
    _run(practice_checks.CombineCheck(), combine_statistics)


def sync_combine_more(combine_statistics: Any) -> None:
    """Exercise 5's combine_statistics with a worker of one example and an empty worker."""
    __tracebackhide__ = True
    _run(practice_checks.CombineMoreCheck(), combine_statistics, hidden=True)


def sync_forward(sync_batchnorm_forward: Any) -> None:
    """Exercise 5's synchronized forward against batch norm of the concatenated batch."""
    __tracebackhide__ = True
    _run(practice_checks.SyncForwardCheck(), sync_batchnorm_forward)


def sync_forward_more(sync_batchnorm_forward: Any) -> None:
    """Exercise 5's synchronized forward: three workers, one example on one, a nearly constant channel, eps."""
    __tracebackhide__ = True
    _run(practice_checks.SyncForwardMoreCheck(), sync_batchnorm_forward, hidden=True)
