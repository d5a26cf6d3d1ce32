"""Checks for the PyTorch exercise: ``BatchNormFunction`` (an autograd.Function) and ``BatchNorm2d`` (a module).

References are torch's own ``F.batch_norm`` and ``nn.BatchNorm2d``, run on the grader's side. In the sandbox,
torch's batch norm entry points are blocked, so a submission cannot delegate to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bnlab.grading import probes
from bnlab.grading.core import (
    CaseCheck,
    CheckFailed,
    ScriptCheck,
    array_problem,
    as_array,
    case_rng,
    closest_mistake,
    register,
)
from bnlab.grading.diagnoses import (
    LayerModel,
    backward_dx_candidates,
    eval_backward_candidates,
    explain,
    forward_candidates,
    hint_for_error,
    inference_candidates,
)
from bnlab.grading.layer_checks import independent_rows
from bnlab.grading.layer_script import compare_scripts, describe_steps, model_records, play_torch
from bnlab.grading.numpy_checks import batch

__all__ = ["FunctionCheck", "FunctionConvCheck", "ModuleCheck", "ModuleConvCheck"]

TOL64, TOL32 = 1e-6, 1e-4
TORCH_MISTAKES = ("momentum_swapped", "running_var_biased", "running_var_batch_size_only", "running_var_init_zero",
                  "first_batch_copied", "no_update", "update_twice", "update_in_eval", "batch_statistics_in_eval",
                  "mode_from_grad", "momentum_ignored", "eps_ignored", "training_backward_in_eval")
_STAT_MISTAKES = ("momentum_swapped", "running_var_biased", "running_var_batch_size_only", "no_update",
                  "update_twice", "update_in_eval")


def _function_case(label: str, shape: tuple[int, ...], seed: int, training: bool, momentum: float = 0.1,
                   eps: float = 1e-5, running: bool = True) -> dict[str, Any]:
    """One call of the function; ``running=False``: no running statistics (None, as the task allows in
    training mode)."""
    rng = case_rng(seed)
    c = shape[1]
    gamma = rng.uniform(0.5, 2.0, c) * np.where(np.arange(c) % 2, -1.0, 1.0)
    gamma[0] = 0.0
    running_mean, running_var = rng.uniform(-1, 1, c), rng.uniform(0.5, 2.0, c)
    return {"label": label, "x": batch(shape, seed + 1), "running_mean": running_mean if running else None,
            "running_var": running_var if running else None, "weight": gamma, "bias": rng.normal(0, 1, c),
            "training": training, "momentum": momentum, "eps": eps, "dout": rng.standard_normal(shape)}


class _FunctionBase(CaseCheck):
    subjects = ("BatchNormFunction",)
    needs_torch = True
    blocks_torch_norm = True
    probe = staticmethod(probes.torch_function)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        name = self.names[0]
        for case, record in zip(inputs["cases"], data):
            label = case["label"]
            if "not_a_function" in record:
                raise CheckFailed(f"{name} must be a subclass of torch.autograd.Function with its own backward "
                                  f"(`class {name}(torch.autograd.Function)` with `@staticmethod def backward(ctx, "
                                  f"grad_out)`): the task is the hand-written backward, so autograd "
                                  f"differentiating your forward earns nothing here.")
            if "error" not in record and record.get("node") != record.get("own_node"):
                raise CheckFailed(f"on {label} the output of {name}.apply does not come from {name}'s own "
                                  f"backward (its autograd node is {record.get('node')!r}): return the result of "
                                  f"forward directly, so that backward computes the gradients.")
            if "error" in record:
                raise CheckFailed(f"{name}.apply (or its backward) raised {record['error']} on {label}."
                                  f"{hint_for_error(record['error'])}")
            out, dx, dweight, dbias = record["value"]
            after = record["after"]
            expected = _torch_reference(case)
            if not np.array_equal(as_array(after["x"]), case["x"]):
                raise CheckFailed(f"{name} changed its input x in place on {label}; compute new tensors instead.")
            problem = array_problem("output", out, expected["out"], TOL64)
            if problem:
                args = (case["x"], case["weight"], case["bias"])
                candidates = (forward_candidates(*args, case["eps"]) if case["training"] else
                              inference_candidates(*args, case["running_mean"], case["running_var"], case["eps"]))
                mistake = closest_mistake(out, candidates)
                raise CheckFailed(f"{name} on {label}: {problem}." + (f"\n{explain(mistake)}" if mistake else ""))
            for stat in ("running_mean", "running_var") if case["running_mean"] is not None else ():
                problem = array_problem(stat, after[stat], expected[stat], TOL64)
                if problem:
                    mistake = closest_mistake(after[stat], _stat_candidates(case, stat))
                    raise CheckFailed(f"{name} on {label}: after the call, {problem}."
                                      + (f"\n{explain(mistake)}" if mistake else ""))
            for grad_name, value in (("dx", dx), ("grad of weight", dweight), ("grad of bias", dbias)):
                key = {"dx": "dx", "grad of weight": "dweight", "grad of bias": "dbias"}[grad_name]
                if value is None:
                    raise CheckFailed(f"{name} on {label}: backward returned None for {grad_name}; return one "
                                      f"gradient per input of forward (None only for non-tensor arguments and the "
                                      f"running statistics).")
                problem = array_problem(grad_name, value, expected[key], TOL64)
                if problem:
                    candidates = {}
                    if key == "dx" and case["training"]:
                        candidates = backward_dx_candidates(case["x"], case["weight"], case["dout"], case["eps"])
                    elif key == "dx":
                        candidates = eval_backward_candidates(case["x"], case["weight"], case["dout"],
                                                              case["running_mean"], case["running_var"], case["eps"])
                    mistake = closest_mistake(value, candidates)
                    raise CheckFailed(f"{name} on {label}: {problem}." + (f"\n{explain(mistake)}" if mistake else ""))
        return f"{name} matches torch.nn.functional.batch_norm (output, running statistics, gradients) on " \
               f"{len(data)} cases."


def _torch_reference(case: dict[str, Any]) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F

    x = torch.tensor(case["x"], requires_grad=True)
    weight = torch.tensor(case["weight"], requires_grad=True)
    bias = torch.tensor(case["bias"], requires_grad=True)
    mean, var = probes.tensor_or_none(case["running_mean"]), probes.tensor_or_none(case["running_var"])
    out = F.batch_norm(x, mean, var, weight, bias, case["training"], case["momentum"], case["eps"])
    dx, dweight, dbias = torch.autograd.grad(out, (x, weight, bias), torch.tensor(case["dout"]))
    return {"out": out.detach().numpy(), "dx": dx.numpy(), "dweight": dweight.numpy(), "dbias": dbias.numpy(),
            "running_mean": None if mean is None else mean.numpy(), "running_var": None if var is None else var.numpy()}


def _stat_candidates(case: dict[str, Any], stat: str) -> dict[str, np.ndarray]:
    out = {}
    for mistake in _STAT_MISTAKES:
        model = LayerModel(case["x"].shape[1], case["eps"], case["momentum"], mistake=mistake)
        model.running_mean, model.running_var = case["running_mean"].copy(), case["running_var"].copy()
        model.weight, model.bias = case["weight"], case["bias"]
        model.train(case["training"])
        model.forward(case["x"])
        out[mistake] = getattr(model, stat)
    return out


@register
class FunctionCheck(_FunctionBase):
    """BatchNormFunction on (N, C): training with running statistics, then eval."""

    name = "torch_function"

    def cases(self) -> list[dict[str, Any]]:
        return [_function_case("a (6, 3) float64 batch in training mode", (6, 3), 81, True),
                _function_case("a (4, 3) float64 batch in eval mode", (4, 3), 82, False),
                _function_case("a (5, 3) float64 batch in training mode without running statistics (None)",
                               (5, 3), 86, True, running=False)]


@register
class FunctionConvCheck(_FunctionBase):
    """BatchNormFunction on (N, C, H, W), other momentum and eps."""

    name = "torch_function_conv"

    def cases(self) -> list[dict[str, Any]]:
        return [_function_case("a (3, 2, 2, 3) batch in training mode, momentum 0.3", (3, 2, 2, 3), 83, True, 0.3),
                _function_case("a (2, 3, 2, 2) batch in eval mode, eps 1e-3", (2, 3, 2, 2), 84, False, 0.1, 1e-3),
                _function_case("a (2, 3) batch in training mode", (2, 3), 85, True)]


class _ModuleBase(ScriptCheck):
    subjects = ("BatchNorm2d",)
    needs_torch = True
    blocks_torch_norm = True
    probe = staticmethod(probes.torch_module)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        import torch

        from bnlab.grading import wire

        steps, name = inputs["steps"], self.names[0]
        self._judge_names(steps, data)
        reference = wire.loads(wire.dumps(play_torch(torch.nn.BatchNorm2d, steps)))
        models = model_records(steps, TORCH_MISTAKES)
        compare_scripts(steps, data, reference, class_name=name, tol=TOL32, models=models)
        self._judge_tracked(steps, data, reference)
        self._judge_dtypes(steps, data, reference)
        forwards = [i for i, s in enumerate(steps) if s[0] == "forward"]
        for a, b in self.independence_pairs(forwards):
            independent_rows(steps, data, a, b, name)
        return f"{name} matches torch.nn.BatchNorm2d step by step ({self.summary})."

    def independence_pairs(self, forwards: list[int]) -> list[tuple[int, int]]:
        return []

    def _judge_dtypes(self, steps: Sequence[tuple[Any, ...]], data: Sequence[dict[str, Any]],
                      reference: Sequence[dict[str, Any]]) -> None:
        """A forward returns the input's dtype, as torch's does (float32 in, float32 out)."""
        names = describe_steps(steps, self.names[0])
        for index, (step, mine, ref) in enumerate(zip(steps, data, reference)):
            if step[0] != "forward" or not isinstance(ref.get("value"), np.ndarray):
                continue
            value = mine.get("value")
            if isinstance(value, np.ndarray) and value.dtype != ref["value"].dtype:
                raise CheckFailed(f"{names[index]} returned {value.dtype}, torch returns {ref['value'].dtype} for "
                                  f"{ref['value'].dtype} input: compute in the input's dtype, or convert back "
                                  f"(.to(x.dtype)).")

    def _judge_tracked(self, steps: Sequence[tuple[Any, ...]], data: Sequence[dict[str, Any]],
                       reference: Sequence[dict[str, Any]]) -> None:
        """num_batches_tracked counts training-mode forwards (torch.long), like torch's."""
        names = describe_steps(steps, self.names[0])
        for index, (step, mine, ref) in enumerate(zip(steps, data, reference)):
            if step[0] != "state" or "tracked" not in ref:
                continue
            value, dtype = (mine.get("tracked") or [None, "missing"])[:2]
            want, want_dtype = ref["tracked"][:2]
            if value != want or dtype != want_dtype:
                raise CheckFailed(f"in {names[index]}: num_batches_tracked is {value} ({dtype}), torch's is "
                                  f"{want} ({want_dtype}). It counts the forwards in training mode (with or "
                                  f"without gradients), as a long tensor: self.num_batches_tracked += 1.")

    def _judge_names(self, steps: Sequence[tuple[Any, ...]], data: Sequence[dict[str, Any]]) -> None:
        for step, record in zip(steps, data):
            if step[0] != "names" or "error" in record:
                continue
            names = record["value"]
            params = names.get("parameters", []) if isinstance(names, dict) else []
            keys = names.get("state_dict", []) if isinstance(names, dict) else []
            for param in ("weight", "bias"):
                if param not in params:
                    raise CheckFailed(f"{self.names[0]}.{param} is not a registered parameter (named_parameters() "
                                      f"lists {params}): wrap it in nn.Parameter, or an optimizer never trains it.")
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                if buffer in params:
                    raise CheckFailed(f"{self.names[0]}.{buffer} is a parameter (named_parameters() lists {params}): "
                                      f"an optimizer would train it. Statistics are buffers: "
                                      f"self.register_buffer('{buffer}', ...).")
                if buffer not in keys:
                    raise CheckFailed(f"{self.names[0]}.{buffer} is not in state_dict() (keys {keys}): register it "
                                      f"with self.register_buffer('{buffer}', ...) so that it is saved and moved "
                                      f"with the module.")
            expected = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
            extra = sorted(set(map(str, keys)) - expected)
            if extra:
                raise CheckFailed(f"{self.names[0]}.state_dict() has keys torch.nn.BatchNorm2d does not ({extra}): a "
                                  f"checkpoint saved from one would not load into the other. Keep exactly "
                                  f"{sorted(expected)} (plain attributes for anything else).")


@register
class ModuleCheck(_ModuleBase):
    """BatchNorm2d: parameters and buffers, train/eval, no_grad in training, grads, independence in eval."""

    name = "torch_module"
    summary = "parameters and buffers, training and eval forwards with and without gradients, backward"

    def steps(self) -> list[tuple[Any, ...]]:
        rng = case_rng(91)
        evaluated = batch((3, 3, 2, 2), 94, np.float32)
        changed = evaluated.copy()
        changed[1:] = batch((2, 3, 2, 2), 95, np.float32) * 3.0
        return [
            ("new", {"num_features": 3}), ("names",), ("state",),
            ("forward", batch((4, 3, 2, 2), 92, np.float32), True), ("state",),
            ("backward", rng.standard_normal((4, 3, 2, 2)).astype(np.float32)),
            ("forward", batch((2, 3, 3, 2), 93, np.float32) + 1.0, False), ("state",),
            ("eval",), ("forward", evaluated, True), ("state",),
            ("backward", rng.standard_normal((3, 3, 2, 2)).astype(np.float32)),
            ("forward", changed, False), ("state",),
            ("train",), ("forward", batch((2, 3, 2, 2), 96, np.float32), True), ("state",),
        ]

    def independence_pairs(self, forwards: list[int]) -> list[tuple[int, int]]:
        return [(forwards[2], forwards[3])]


@register
class ModuleConvCheck(_ModuleBase):
    """BatchNorm2d with other eps and momentum, channels of different statistics, m = N*H*W."""

    name = "torch_module_conv"
    summary = "custom eps and momentum, m = N*H*W values per channel"

    def steps(self) -> list[tuple[Any, ...]]:
        rng = case_rng(97)
        return [
            ("new", {"num_features": 2, "eps": 1e-3, "momentum": 0.5}),
            ("forward", batch((2, 2, 3, 3), 98, np.float32), True), ("state",),
            ("backward", rng.standard_normal((2, 2, 3, 3)).astype(np.float32)),
            ("forward", batch((3, 2, 2, 4), 99, np.float32) * 2.0, True), ("state",),
            ("eval",), ("forward", batch((1, 2, 2, 2), 100, np.float32), True), ("state",),
        ]
