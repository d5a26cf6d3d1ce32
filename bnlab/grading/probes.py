"""The submission's side of every check: call the learner's objects on given inputs, return raw results.

These functions are all a sandboxed child needs to run a check (:mod:`bnlab.grading.child` imports this module
and nothing that judges): no reference implementation and no model of a mistake is in the process where
submitted code runs, so nothing there can be borrowed. Each probe returns plain records (see
:func:`bnlab.grading.core.call`); the checks' ``judge`` methods, in the grader, decide what they mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bnlab.grading.core import call
from bnlab.grading.wire import to_plain

__all__ = ["PROBES", "backward", "forward", "inference", "is_batchnorm", "loaded_network", "mode_record",
           "numpy_layer", "play_numpy", "play_torch", "practice_batches", "practice_evaluate", "practice_fine_tune",
           "practice_model", "practice_network", "practice_predict", "set_modes", "snapshot", "sync_combine",
           "sync_forward", "tensor_or_none", "torch_function", "torch_module", "values"]

Step = tuple[Any, ...]
_STATE_KEYS = ("weight", "bias", "running_mean", "running_var")


def forward(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 1's training forward on each case: its output, or what went wrong; the arguments after the call."""
    learner_forward, records = objects[0], []
    for case in inputs["cases"]:
        x, gamma, beta = case["x"], case["gamma"], case["beta"]
        kwargs = {} if case["eps"] is None else {"eps": case["eps"]}
        made = call(learner_forward, x, gamma, beta, **kwargs)
        record: dict[str, Any] = {"after": {"x": x, "gamma": gamma, "beta": beta}}
        if not made.ok:
            record.update(made.record)
        elif isinstance(made.raw, (tuple, list)) and len(made.raw) == 2:
            record["out"] = to_plain(made.raw[0])
        else:
            record["not_a_pair"] = to_plain(made.raw)
        records.append(record)
    return records


def inference(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 1's inference on each case: its output, or what went wrong; the arguments after the call."""
    learner_inference, records = objects[0], []
    for case in inputs["cases"]:
        args = [case[k] for k in ("x", "gamma", "beta", "running_mean", "running_var")]
        kwargs = {} if case["eps"] is None else {"eps": case["eps"]}
        made = call(learner_inference, *args, **kwargs)
        record = dict(made.record) if not made.ok else {"out": made.record["value"]}
        record["after"] = dict(zip(("x", "gamma", "beta", "running_mean", "running_var"), args))
        records.append(record)
    return records


def backward(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """A backward with the learner's own forward on each case: two calls (the cache must not change), the
    arguments after, the forward's output, and its outputs at x +- step in each entry (for finite differences)."""
    learner_forward, learner_backward = objects[0], objects[1]
    records = []
    for case in inputs["cases"]:
        x, gamma, beta, dout = case["x"], case["gamma"], case["beta"], case["dout"]
        made = call(learner_forward, x, gamma, beta)
        if not made.ok or not (isinstance(made.raw, (tuple, list)) and len(made.raw) == 2):
            records.append({"forward_error": made.record.get("error", "it did not return (out, cache)")})
            continue
        cache = made.raw[1]
        forward_out = to_plain(made.raw[0])
        given = dout.copy()
        first = call(learner_backward, given, cache)
        second = call(learner_backward, dout.copy(), cache)
        record = {"first": first.record, "second": second.record, "after": {"x": x, "dout": given},
                  "forward_out": forward_out}
        record["numeric"] = _perturbed_outputs(learner_forward, case, inputs["step"])
        records.append(record)
    return records


def _perturbed_outputs(forward: Any, case: dict[str, Any], step: float) -> Any:
    """The learner's forward outputs at x +- step in each entry (for a finite-difference dx), or None."""
    x, gamma, beta = case["x"], case["gamma"], case["beta"]
    plus, minus = [], []
    for index in range(x.size):
        for sign, store in ((1.0, plus), (-1.0, minus)):
            nudged = x.copy()
            nudged.flat[index] += sign * step
            made = call(forward, nudged, gamma.copy(), beta.copy())
            if not made.ok or not isinstance(made.raw, (tuple, list)) or len(made.raw) != 2:
                return None
            out = to_plain(made.raw[0])
            if not isinstance(out, np.ndarray) or out.shape != x.shape:
                return None
            store.append(out)
    return {"plus": np.stack(plus), "minus": np.stack(minus)}


def values(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Hand-entered answers, as plain data."""
    return [to_plain(obj) for obj in objects]


def _not_constructed(reason: str) -> dict[str, str]:
    return {"error": f"not run: the layer could not be constructed ({reason})"}


def mode_record(made: Any) -> dict[str, Any]:
    return {"value": True} if made.ok else made.record


class _Player:
    """Plays a script on a learner's (or the reference) layer class; subclasses say how to run forward/backward."""

    def __init__(self, cls: Any) -> None:
        self.cls, self.layer = cls, None

    def play(self, steps: Sequence[Step]) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for step in steps:
            kind = step[0]
            if kind == "new":
                made = call(self.cls, **step[1])
                self.layer = made.raw if made.ok else None
                records.append(mode_record(made))
            elif self.layer is None:
                records.append(_not_constructed(records[0].get("error", "?") if records else "?"))
            elif kind in ("train", "eval"):
                records.append(mode_record(call(lambda: getattr(self.layer, kind)())))
            elif kind == "state":
                records.append({**call(lambda: {k: getattr(self.layer, k, None) for k in _STATE_KEYS}).record,
                                **self.state_extra()})
            elif kind in ("forward", "backward", "names"):
                records.append(getattr(self, kind)(*step[1:]))
            else:
                raise ValueError(f"unknown step {kind!r}")
        return records

    def forward(self, x: np.ndarray, grad: bool = True) -> dict[str, Any]:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def names(self) -> dict[str, Any]:
        raise ValueError("a names step needs a torch module")

    def state_extra(self) -> dict[str, Any]:
        """More of the state than the compared fields (torch: num_batches_tracked, value and dtype)."""
        return {}


class _NumpyPlayer(_Player):
    """Gives the layer its own copy of each array and notes (``"changed": name``) when the layer edited it in
    place: a caller's x or upstream gradient must not change."""

    def forward(self, x: np.ndarray, grad: bool = True) -> dict[str, Any]:
        given = x.copy()
        return _noting_changes(call(lambda v: self.layer.forward(v), given).record, "x", given, x)

    def backward(self, dout: np.ndarray) -> dict[str, Any]:
        def run(d: np.ndarray) -> list[Any]:
            dx = self.layer.backward(d)
            return [dx, self.layer.grad["weight"], self.layer.grad["bias"]]
        given = dout.copy()
        return _noting_changes(call(run, given).record, "dout", given, dout)


def _noting_changes(record: dict[str, Any], name: str, given: np.ndarray, original: np.ndarray) -> dict[str, Any]:
    if not np.array_equal(given, original, equal_nan=True):
        record = {**record, "changed": name}
    return record


class _TorchPlayer(_Player):
    last: tuple[Any, Any] | None = None

    def state_extra(self) -> dict[str, Any]:
        tracked = getattr(self.layer, "num_batches_tracked", None)
        try:
            return {"tracked": [int(tracked), str(getattr(tracked, "dtype", type(tracked).__name__))]}
        except (TypeError, ValueError, RuntimeError):
            return {"tracked": [None, type(tracked).__name__]}

    def forward(self, x: np.ndarray, grad: bool = True) -> dict[str, Any]:
        import torch

        tensor = torch.tensor(x, requires_grad=bool(grad))

        def run() -> Any:
            with torch.set_grad_enabled(bool(grad)):
                return self.layer(tensor)
        made = call(run)
        self.last = (tensor, made.raw) if made.ok and grad else None
        return made.record

    def backward(self, dout: np.ndarray) -> dict[str, Any]:
        import torch

        def run() -> list[Any]:
            if self.last is None:
                raise RuntimeError("no differentiable forward to backpropagate through")
            inputs = [self.last[0], self.layer.weight, self.layer.bias]
            return list(torch.autograd.grad(self.last[1], inputs, torch.tensor(dout), allow_unused=True))
        return call(run).record

    def names(self) -> dict[str, Any]:
        return call(lambda: {"state_dict": list(self.layer.state_dict()),
                             "parameters": [n for n, _ in self.layer.named_parameters()]}).record


def play_numpy(cls: Any, steps: Sequence[Step]) -> list[dict[str, Any]]:
    """Play ``steps`` on a numpy layer class with the ``bnlab.layers.BatchNorm`` interface."""
    return _NumpyPlayer(cls).play(steps)


def play_torch(cls: Any, steps: Sequence[Step]) -> list[dict[str, Any]]:
    """Play ``steps`` on a torch module class with the ``torch.nn.BatchNorm2d`` interface (float32 input)."""
    return _TorchPlayer(cls).play(steps)


def tensor_or_none(value: Any) -> Any:
    import torch

    return None if value is None else torch.tensor(value)


def torch_function(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 4's autograd.Function on each case: output and gradients, or what went wrong; x and the
    running statistics after the call."""
    import torch

    function, records = objects[0], []
    is_function = isinstance(function, type) and issubclass(function, torch.autograd.Function)
    own_backward = is_function and function.backward is not torch.autograd.Function.backward
    if not own_backward:
        return [{"not_a_function": {"subclass": is_function, "name": getattr(function, "__name__", "?")}}
                for _ in inputs["cases"]]
    for case in inputs["cases"]:
        x = torch.tensor(case["x"], requires_grad=True)
        weight = torch.tensor(case["weight"], requires_grad=True)
        bias = torch.tensor(case["bias"], requires_grad=True)
        mean, var = tensor_or_none(case["running_mean"]), tensor_or_none(case["running_var"])

        def run() -> list[Any]:
            out = function.apply(x, mean, var, weight, bias, case["training"], case["momentum"], case["eps"])
            node.append(type(out.grad_fn).__name__ if getattr(out, "grad_fn", None) is not None else None)
            grads = torch.autograd.grad(out, (x, weight, bias), torch.tensor(case["dout"]), allow_unused=True)
            return [out, *grads]
        node: list[Any] = []
        made = call(run)
        record = dict(made.record)
        record["node"] = node[0] if node else None  # the autograd node of the output: the Function's own?
        record["own_node"] = f"{function.__name__}Backward"
        record["after"] = to_plain({"x": x, "running_mean": mean, "running_var": var})
        records.append(record)
    return records


def numpy_layer(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 3's layer class driven through the scripted steps."""
    return play_numpy(objects[0], inputs["steps"])


def torch_module(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 4's module class driven through the scripted steps."""
    return play_torch(objects[0], inputs["steps"])


# ------------------------------------------------------------------------------ exercise 5: BN in practice
#
# The probes build exercise 5's small batch norm MLP with torch alone (:func:`practice_network`, which the
# grader's judges use too), load the state the grader trained (``inputs["state"]``), hand it to the learner's
# function and report what came back and what the call left behind: every parameter and buffer, and every
# module's ``training`` flag. Judging happens in the grader.


def practice_network(arch: str, sizes: Sequence[int]) -> Any:
    """Exercise 5's network: ``(in, hidden, classes)`` sizes, two hidden layers Linear (no bias) ->
    BatchNorm1d -> ReLU and an output Linear. ``arch`` ``"flat"``: one nn.Sequential of seven modules;
    ``"nested"``: each hidden layer its own nn.Sequential inside a trunk (batch norm layers two levels down)."""
    from torch import nn

    d, h, k = (int(v) for v in sizes)

    def hidden(i: int, o: int) -> list[Any]:
        return [nn.Linear(i, o, bias=False), nn.BatchNorm1d(o), nn.ReLU()]
    if arch == "flat":
        return nn.Sequential(*hidden(d, h), *hidden(h, h), nn.Linear(h, k))
    if arch == "nested":
        return nn.Sequential(nn.Sequential(nn.Sequential(*hidden(d, h)), nn.Sequential(*hidden(h, h))),
                             nn.Linear(h, k))
    raise ValueError(f"unknown architecture {arch!r}")


def is_batchnorm(module: Any) -> bool:
    from torch import nn

    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def set_modes(model: Any, mode: str) -> Any:
    """``"train"``, ``"eval"`` or ``"bn_eval"`` (the model in training mode, its batch norm layers in eval
    mode: frozen statistics, as fine-tuning leaves them)."""
    model.train(mode != "eval")
    if mode == "bn_eval":
        for module in model.modules():
            if is_batchnorm(module):
                module.eval()
    return model


def loaded_network(inputs: dict[str, Any], mode: str = "train") -> Any:
    """:func:`practice_network` with the grader's state (``inputs["state"]``), in ``mode`` (see :func:`set_modes`)."""
    import torch

    model = practice_network(inputs["arch"], inputs["sizes"])
    model.load_state_dict({name: torch.tensor(value) for name, value in inputs["state"].items()})
    return set_modes(model, mode)


def snapshot(model: Any) -> dict[str, Any]:
    """What a call left behind: every entry of the state dict, and every module's ``training`` flag (in
    ``named_modules`` order)."""
    def take() -> dict[str, Any]:
        return {"state": {str(name): value for name, value in model.state_dict().items()},
                "modes": [[str(name), bool(module.training)] for name, module in model.named_modules()]}
    made = call(take)
    return made.record["value"] if made.ok else {"error": made.record["error"]}


def _module_info(module: Any) -> dict[str, Any]:
    """A called module, as plain data: its type and what the structural rules look at."""
    from torch import nn

    info: dict[str, Any] = {"type": type(module).__name__}
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        info.update(kind="weight", bias=module.bias is not None,
                    inputs=int(getattr(module, "in_features", getattr(module, "in_channels", 0))),
                    outputs=int(getattr(module, "out_features", getattr(module, "out_channels", 0))))
    elif is_batchnorm(module):
        info.update(kind="batchnorm", features=int(module.num_features), affine=bool(module.affine),
                    tracks=bool(module.track_running_stats))
    elif isinstance(module, nn.modules.dropout._DropoutNd):
        info.update(kind="dropout")
    else:
        info.update(kind="other")
    return info


def practice_model(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 5's ``make_model`` on each case: the modules its network calls, in order (forward hooks on its
    leaves and batch norm layers, one eval-mode forward of the case's batch), and the output's shape."""
    import torch

    make_model, records = objects[0], []
    for case in inputs["cases"]:
        made = call(make_model, case["in_features"], case["hidden"], case["classes"])
        if not made.ok:
            records.append(made.record)
            continue
        model = made.raw
        if not isinstance(model, torch.nn.Module):
            records.append({"not_a_module": type(model).__name__})
            continue
        calls: list[dict[str, Any]] = []

        def run() -> list[int]:
            leaves = [m for m in model.modules() if not list(m.children()) or is_batchnorm(m)]
            handles = [m.register_forward_hook(lambda m, args, out: calls.append(_module_info(m))) for m in leaves]
            try:
                model.eval()
                with torch.no_grad():
                    out = model(torch.tensor(case["x"]))
            finally:
                for handle in handles:
                    handle.remove()
            return list(getattr(out, "shape", ()))
        ran = call(run)
        records.append({"calls": calls, **ran.record})
    return records


def _materialized(value: Any) -> Any:
    """A generator or other one-shot iterator of batches as a list (what an epoch loop would see)."""
    if value is not None and not isinstance(value, (list, tuple, dict, str, np.ndarray)) and \
            hasattr(value, "__next__"):
        return list(value)
    return value


def practice_batches(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 5's ``make_batches(n, batch_size, rng)`` on each case, twice with ``default_rng(seed)`` and once
    with ``default_rng(other_seed)``: the batches (plain lists of indices) or what went wrong."""
    make_batches, records = objects[0], []
    for case in inputs["cases"]:
        record = {}
        for key, seed in (("first", case["seed"]), ("again", case["seed"]), ("other", case["other_seed"])):
            rng = np.random.default_rng(seed)
            record[key] = call(lambda: _materialized(make_batches(case["n"], case["batch_size"], rng))).record
        records.append(record)
    return records


def practice_evaluate(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 5's ``evaluate(model, x, y, batch_size)`` on each case: a fresh network with the grader's state
    in the case's mode, the test examples in the case's order; what it returned and what it left behind."""
    import torch

    evaluate, records = objects[0], []
    x, y = inputs["x"], inputs["y"]
    for case in inputs["cases"]:
        model = loaded_network(inputs, case["mode"])
        index = case["index"]
        made = call(evaluate, model, torch.tensor(x[index]), torch.tensor(y[index]), case["batch_size"])
        records.append({**made.record, "after": snapshot(model)})
    return records


def practice_predict(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 5's ``predict_one(model, x1)`` on each case: one network in the case's mode, asked about the
    case's examples one after the other (x1 of shape (D,)); every answer, then what the calls left behind."""
    import torch

    predict_one, records = objects[0], []
    for case in inputs["cases"]:
        model = loaded_network(inputs, case["mode"])
        answers = [call(predict_one, model, torch.tensor(inputs["x"][i])).record for i in case["index"]]
        records.append({"answers": answers, "after": snapshot(model)})
    return records


def practice_fine_tune(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 5's ``fine_tune(model, x, y, steps, lr)`` on each case: a network with the grader's state in
    training mode; what the call raised, if anything, and what it left behind."""
    import torch

    fine_tune, records = objects[0], []
    for case in inputs["cases"]:
        model = loaded_network(inputs, "train")
        made = call(fine_tune, model, torch.tensor(case["x"]), torch.tensor(case["y"]), case["steps"], case["lr"])
        record = {"error": made.record["error"]} if not made.ok else {}
        records.append({**record, "after": snapshot(model)})
    return records


def sync_combine(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 5's ``combine_statistics(counts, means, m2s)`` on each case: its (mean, var), or what went
    wrong; the arguments after the call."""
    combine, records = objects[0], []
    for case in inputs["cases"]:
        args = [case[k].copy() for k in ("counts", "means", "m2s")]
        made = call(combine, *args)
        records.append({**made.record, "after": dict(zip(("counts", "means", "m2s"), args))})
    return records


def sync_forward(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
    """Exercise 5's ``sync_batchnorm_forward(parts, gamma, beta, eps)`` on each case: its outputs (one per
    worker), or what went wrong; the arguments after the call."""
    forward_fn, records = objects[0], []
    for case in inputs["cases"]:
        parts = [part.copy() for part in case["parts"]]
        gamma, beta = case["gamma"].copy(), case["beta"].copy()
        kwargs = {} if case["eps"] is None else {"eps": case["eps"]}
        made = call(lambda: _materialized(forward_fn(parts, gamma, beta, **kwargs)))
        records.append({**made.record, "after": {"parts": parts, "gamma": gamma, "beta": beta}})
    return records


#: every probe by name: what a plan names and a child runs
PROBES = {function.__name__: function for function in (forward, inference, backward, values, numpy_layer,
                                                        torch_module, torch_function, practice_model,
                                                        practice_batches, practice_evaluate, practice_predict,
                                                        practice_fine_tune, sync_combine, sync_forward)}
