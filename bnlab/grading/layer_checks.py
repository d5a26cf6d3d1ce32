"""Checks for the numpy ``BatchNorm`` layer of exercise 3: running statistics, modes, backward.

Each check plays one script of constructor calls, mode switches, forwards and backwards on the learner's class
and on ``bnlab.layers.BatchNorm`` (the reference), and compares them step by step; a wrong step is matched
against models of the classic running-statistics mistakes (:class:`bnlab.grading.diagnoses.LayerModel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bnlab.grading import probes
from bnlab.grading.core import CheckFailed, ScriptCheck, as_array, case_rng, register, relative_error
from bnlab.grading.diagnoses import explain
from bnlab.grading.layer_script import compare_scripts, model_records, play_numpy
from bnlab.grading.numpy_checks import batch

__all__ = ["LayerTrainCheck", "LayerEvalCheck", "LayerConvCheck", "independent_rows"]

NUMPY_MISTAKES = ("momentum_swapped", "running_var_biased", "running_var_batch_size_only", "running_var_init_zero",
                  "first_batch_copied", "no_update", "update_twice", "update_in_eval", "batch_statistics_in_eval",
                  "eval_ignored", "momentum_ignored", "eps_ignored")


def independent_rows(steps: Sequence[tuple[Any, ...]], records: Sequence[dict[str, Any]], first: int,
                     second: int, what: str) -> None:
    """Raise CheckFailed unless example 0's eval output is the same in forwards ``first`` and ``second``."""
    a, b = as_array(records[first].get("value")), as_array(records[second].get("value"))
    if a is None or b is None or a.shape[1:] != b.shape[1:]:
        return  # reported by the step comparison
    if relative_error(a[0], b[0]) > 1e-6:
        raise CheckFailed(f"in eval mode, {what} gave example 0 a different output when the rest of the batch "
                          f"changed.\n{explain('batch_statistics_in_eval')}")


class _LayerBase(ScriptCheck):
    subjects = ("BatchNorm",)

    probe = staticmethod(probes.numpy_layer)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        from bnlab import layers
        from bnlab.grading import wire

        steps = inputs["steps"]
        for step, record in zip(steps, data):
            if isinstance(record, dict) and record.get("changed") in ("x", "dout"):
                what = "its input x" if record["changed"] == "x" else "the upstream gradient dout"
                raise CheckFailed(f"{self.names[0]}.{step[0]} changed {what} in place (e.g. `x -= self.mu` or "
                                  f"`dout *= self.gamma`): the caller's array must not change. Compute new "
                                  f"arrays instead.")
        reference = wire.loads(wire.dumps(play_numpy(layers.BatchNorm, steps)))
        models = model_records(steps, NUMPY_MISTAKES)
        compare_scripts(steps, data, reference, class_name=self.names[0], tol=1e-6, models=models)
        self.extra(steps, data)
        return f"{self.names[0]} matches bnlab's reference layer step by step ({self.summary})."

    def extra(self, steps: Sequence[tuple[Any, ...]], records: Sequence[dict[str, Any]]) -> None:
        """Further checks after the step-by-step comparison."""


@register
class LayerTrainCheck(_LayerBase):
    """Initial state, training forwards, running statistics with default and custom momentum/eps, backward."""

    name = "layer_train"
    summary = "initial state, training forwards, running statistics, backward"

    def steps(self) -> list[tuple[Any, ...]]:
        rng = case_rng(51)
        return [
            ("new", {"num_features": 3}), ("state",),
            ("forward", batch((4, 3), 52)), ("state",),
            ("backward", rng.standard_normal((4, 3))),
            ("forward", batch((6, 3), 53) * 2.0), ("state",),
            ("backward", rng.standard_normal((6, 3))),
            ("new", {"num_features": 2, "eps": 0.01, "momentum": 0.3}),
            ("forward", batch((5, 2), 54) * 0.1), ("state",),
            ("forward", batch((3, 2), 55)), ("state",),
        ]

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        # The script makes two layers; compare each part against its own reference run.
        steps = inputs["steps"]
        split = next(i for i, s in enumerate(steps) if s[0] == "new" and i > 0)
        first = type(self)(**self.options)
        first.names = self.names
        message = _LayerBase.judge(first, {"steps": steps[:split]}, data[:split])
        _LayerBase.judge(first, {"steps": steps[split:]}, data[split:])
        return message.replace("initial state", "initial state, custom eps and momentum")


@register
class LayerEvalCheck(_LayerBase):
    """eval(): running statistics used and left unchanged, per-example independence, batch of one; train() again."""

    name = "layer_eval"
    summary = "eval mode uses and keeps the running statistics, a batch of one, back to train()"

    def steps(self) -> list[tuple[Any, ...]]:
        evaluated = batch((4, 3), 63)
        changed = evaluated.copy()
        changed[1:] = batch((3, 3), 64) * 4.0 - 2.0
        return [
            ("new", {"num_features": 3}),
            ("forward", batch((5, 3), 61)), ("forward", batch((5, 3), 62) + 1.0),
            ("eval",), ("state",),
            ("forward", evaluated), ("state",),
            ("forward", changed),
            ("forward", evaluated[:1].copy()), ("state",),
            ("train",), ("forward", batch((4, 3), 65)), ("state",),
        ]

    def extra(self, steps: Sequence[tuple[Any, ...]], records: Sequence[dict[str, Any]]) -> None:
        forwards = [i for i, s in enumerate(steps) if s[0] == "forward"]
        independent_rows(steps, records, forwards[2], forwards[3], f"{self.names[0]}.forward")


@register
class LayerConvCheck(_LayerBase):
    """(N, C, H, W) input: statistics per channel over batch and positions, m = N*H*W in the unbiased factor."""

    name = "layer_conv"
    summary = "(N, C, H, W) input in training and eval mode"

    def steps(self) -> list[tuple[Any, ...]]:
        rng = case_rng(71)
        return [
            ("new", {"num_features": 2, "momentum": 0.2}),
            ("forward", batch((3, 2, 2, 3), 72)), ("state",),
            ("backward", rng.standard_normal((3, 2, 2, 3))),
            ("forward", batch((2, 2, 3, 3), 73) - 1.0), ("state",),
            ("eval",), ("forward", batch((2, 2, 2, 3), 74)), ("state",),
        ]
