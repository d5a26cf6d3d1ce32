"""Scripts of layer operations, played on a learner's layer, on the reference and on models of mistakes.

A script is a list of steps, each a tuple:

``("new", kwargs)``            construct the layer (num_features, eps, momentum)
``("train",)``, ``("eval",)``  switch modes
``("forward", x, grad)``       out = layer(x); for torch, under ``torch.set_grad_enabled(grad)``
``("backward", dout)``         (dx, dweight, dbias) through the last forward
``("state",)``                 weight, bias, running_mean, running_var
``("names",)``                 torch only: state_dict keys and parameter names

The same player runs the learner's class (in the sandbox) and the reference (in the grader), so both are
driven identically; :func:`compare_scripts` then finds the first step where they part and asks the mistake
models (:class:`bnlab.grading.diagnoses.LayerModel`) which one parts the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bnlab.grading import wire
from bnlab.grading.core import CheckFailed, array_problem, as_array, call, closest_mistake
from bnlab.grading.diagnoses import LAYER_MISTAKES, LayerModel, explain
from bnlab.grading.probes import mode_record, play_numpy, play_torch  # noqa: F401 -- the players live there

__all__ = ["play_numpy", "play_torch", "play_model", "compare_scripts", "describe_steps", "model_records"]

Step = tuple[Any, ...]
_STATE_KEYS = ("weight", "bias", "running_mean", "running_var")


def play_model(model: LayerModel, steps: Sequence[Step]) -> list[dict[str, Any]]:
    """Play ``steps`` (after the "new" step) on a mistake model; records as the players above."""
    records: list[dict[str, Any]] = []
    for step in steps:
        kind = step[0]
        if kind in ("train", "eval"):
            records.append(mode_record(call(getattr(model, kind))))
        elif kind == "forward":
            x = np.asarray(step[1], dtype=np.float64)
            records.append(call(model.forward, x, bool(step[2]) if len(step) > 2 else True).record)
        elif kind == "backward":
            records.append(call(lambda d: list(model.backward(d)), np.asarray(step[1], dtype=np.float64)).record)
        elif kind == "state":
            records.append({"value": {k: np.array(getattr(model, k), dtype=np.float64) for k in _STATE_KEYS}})
        else:
            records.append({"value": None})
    return records


def describe_steps(steps: Sequence[Step], class_name: str) -> list[str]:
    """Human descriptions of each step: ``"forward #2 (training mode, x of shape (8, 3))"``."""
    out, mode, forwards = [], "training", 0
    for step in steps:
        kind = step[0]
        if kind == "new":
            args = ", ".join(f"{k}={v!r}" if k != "num_features" else str(v) for k, v in step[1].items())
            out.append(f"{class_name}({args})")
        elif kind in ("train", "eval"):
            mode = "training" if kind == "train" else "eval"
            out.append(f".{kind}()")
        elif kind == "forward":
            forwards += 1
            grad = "" if len(step) < 3 or step[2] else ", under torch.no_grad()"
            out.append(f"forward #{forwards} ({mode} mode{grad}, x of shape {tuple(np.shape(step[1]))})")
        elif kind == "backward":
            out.append(f"backward after forward #{forwards}")
        elif kind == "state":
            out.append(f"the layer's state after forward #{forwards}")
        else:
            out.append(kind)
    return out


def _fields(record: dict[str, Any], kind: str) -> dict[str, Any]:
    value = record.get("value")
    if kind == "backward":
        items = value if isinstance(value, list) and len(value) == 3 else [None, None, None]
        return dict(zip(("dx", "grad of weight", "grad of bias"), items))
    if kind == "state":
        return {k: (value or {}).get(k) if isinstance(value, dict) else None for k in _STATE_KEYS}
    return {"output": value}


def compare_scripts(steps: Sequence[Step], student: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]],
                    *, class_name: str, tol: float, models: dict[str, Sequence[dict[str, Any]]],
                    skip: Callable[[int, str], bool] = lambda i, field: False) -> None:
    """Raise CheckFailed at the first step where ``student`` departs from ``reference``, naming the mistake.

    ``models`` maps mistake labels to their records for the same steps; the first one reproducing the
    learner's wrong value at that step is named.
    """
    names = describe_steps(steps, class_name)
    for i, (step, mine, ref) in enumerate(zip(steps, student, reference)):
        kind = step[0]
        if "error" in mine:
            raise CheckFailed(f"{names[i]} raised {mine['error']}")
        if kind in ("new", "train", "eval", "names"):
            continue
        mine_fields, ref_fields = _fields(mine, kind), _fields(ref, kind)
        for field, expected in ref_fields.items():
            if skip(i, field):
                continue
            expected = as_array(expected)
            problem = array_problem(field, mine_fields[field], expected, tol)
            if problem is None:
                continue
            label = _best_model(i, field, steps, student, models, tol)
            if label is None and kind == "state":
                label = _local_update_model(i, field, steps, student, tol)
            hint = f"\n{explain(label)}" if label else ""
            raise CheckFailed(f"after {names[i]}: {problem}.{hint}")


def _agrees(step: Step, mine: dict[str, Any], model: dict[str, Any], tol: float) -> bool:
    """Whether a learner's record and a model's record of one step agree in every compared field."""
    if step[0] in ("new", "train", "eval", "names"):
        return True
    if "error" in mine or "error" in model:
        return "error" in mine and "error" in model
    mine_fields, model_fields = _fields(mine, step[0]), _fields(model, step[0])
    return all(array_problem(k, mine_fields[k], as_array(v), tol) is None
               for k, v in model_fields.items() if as_array(v) is not None)


def _best_model(index: int, field: str, steps: Sequence[Step], student: Sequence[dict[str, Any]],
                models: dict[str, Sequence[dict[str, Any]]], tol: float) -> str | None:
    """The mistake model reproducing the learner's ``field`` at step ``index``; ties go to the model that also
    agrees with the learner on the most later steps (``eval_ignored`` vs ``batch_statistics_in_eval``)."""
    kind = steps[index][0]
    mine = _fields(student[index], kind)[field]
    matching = [label for label, records in models.items() if "error" not in records[index]
                and closest_mistake(mine, {label: as_array(_fields(records[index], kind)[field])}, tol)]
    if len(matching) <= 1:
        return matching[0] if matching else None
    def support(label: str) -> int:
        return sum(_agrees(step, a, b, tol) for step, a, b in
                   zip(steps[index + 1:], student[index + 1:], models[label][index + 1:]))
    return max(matching, key=support)


#: mistakes in the update rule alone, which show from any starting state
_UPDATE_MISTAKES = ("momentum_swapped", "running_var_biased", "running_var_batch_size_only", "no_update",
                    "update_twice", "update_in_eval", "momentum_ignored")


def _local_update_model(index: int, field: str, steps: Sequence[Step], student: Sequence[dict[str, Any]],
                        tol: float) -> str | None:
    """The update-rule mistake that takes the learner's *own* previous state to its state at step ``index``.

    The whole-script models start from the right initial state, so they miss a layer whose first update is
    right (or specially handled) and whose later updates go wrong, e.g. momentum swapped after the first batch.
    """
    before = next((j for j in range(index - 1, -1, -1) if steps[j][0] in ("state", "new")), None)
    if before is None or steps[before][0] != "state" or not isinstance(student[before].get("value"), dict):
        return None
    previous = student[before]["value"]
    start = as_array(previous.get("running_mean")), as_array(previous.get("running_var"))
    weight, bias = as_array(previous.get("weight")), as_array(previous.get("bias"))
    if any(a is None or a.ndim != 1 for a in (*start, weight, bias)):
        return None
    kwargs = dict(next(s for s in reversed(steps[:before + 1]) if s[0] == "new")[1])
    num_features = kwargs.pop("num_features")
    training = True
    for step in steps[:before + 1]:
        training = {"train": True, "eval": False, "new": True}.get(step[0], training)
    mine = _fields(student[index], "state")[field]
    for label in _UPDATE_MISTAKES:
        model = LayerModel(num_features, **kwargs, mistake=label)
        if any(a.shape != (num_features,) for a in (*start, weight, bias)):
            return None
        model.running_mean, model.running_var = start[0].astype(np.float64), start[1].astype(np.float64)
        model.weight, model.bias = weight.astype(np.float64), bias.astype(np.float64)
        model.train(training)
        with np.errstate(all="ignore"):
            records = wire.loads(wire.dumps(play_model(model, steps[before + 1:index + 1])))
        expected = as_array(_fields(records[-1], "state")[field])
        if "error" not in records[-1] and closest_mistake(mine, {label: expected}, tol):
            return label
    return None


def model_records(steps: Sequence[Step], mistakes: Sequence[str] = LAYER_MISTAKES) -> dict[str, list[dict[str, Any]]]:
    """Records of every mistake model on ``steps`` (the "new" step gives the constructor arguments)."""
    kwargs = dict(steps[0][1])
    num_features = kwargs.pop("num_features")
    out = {}
    for label in mistakes:
        model = LayerModel(num_features, **kwargs, mistake=label)
        with np.errstate(all="ignore"):
            out[label] = wire.loads(wire.dumps(play_model(model, steps)))
    return out
