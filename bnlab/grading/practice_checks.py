"""Checks for exercise 5, batch norm in practice: the slips of lecture 12 in a short training script, and the
synchronized statistics of lecture 13.

Part A checks run the learner's ``make_model``, ``make_batches``, ``evaluate``, ``predict_one`` and
``fine_tune`` in the probe, on a small batch norm MLP (:func:`bnlab.grading.probes.practice_network`) whose
weights and running statistics the grader trained in :meth:`inputs` (every random draw from
:func:`~bnlab.grading.core.case_rng`, so grading draws a new network and new data each run). The probe reports
what each call returned and what it left behind -- every parameter, buffer and ``training`` flag -- and the
judges below compare that with the same network run the right way in the grader. A judge names **every** slip
still present, one message per kind (:data:`EXPLANATIONS`), not only the first.

Part B checks ``combine_statistics`` (Chan et al.'s parallel variance from the workers' summaries only) and
``sync_batchnorm_forward`` against full-batch batch norm (:func:`bnlab.functional.batchnorm_forward` on the
concatenated parts), and name the classic mistakes by reproducing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bnlab.grading import probes
from bnlab.grading.core import (
    CaseCheck,
    Check,
    CheckFailed,
    as_array,
    case_rng,
    describe,
    register,
    relative_error,
)
from bnlab.grading.diagnoses import hint_for_error

__all__ = ["EXPLANATIONS", "SIZES", "ModelCheck", "ModelSizesCheck", "BatchesCheck", "BatchesSizesCheck",
           "EvaluateCheck", "EvaluateModesCheck", "PredictCheck", "PredictModesCheck", "FineTuneCheck",
           "FineTuneNestedCheck", "CombineCheck", "CombineMoreCheck", "SyncForwardCheck", "SyncForwardMoreCheck",
           "base_network", "combine_candidates"]

#: every slip exercise 5's checks name, with what the learner is told (the observation comes first)
EXPLANATIONS: dict[str, str] = {
    # make_model
    "bias_before_batchnorm": "A bias right before batch norm is dead weight: BN subtracts the batch mean, and the "
        "bias with it (its gradient is 0; lecture 12, section 7). Build that Linear with bias=False: beta does "
        "its job.",
    "batchnorm_on_output": "Batch norm after the output layer normalizes the logits: every class's score gets "
        "batch mean beta and spread gamma whatever the network computes, which caps the confidence (lecture 12, "
        "section 8), and in training mode every logit depends on the batch. End with the output Linear.",
    "dropout_before_batchnorm": "Dropout feeds a batch norm layer: in eval mode the input variance drops below the "
        "running_var it stored (variance shift). Put dropout after the last batch norm.",
    # make_batches
    "batch_of_one": "A batch of one example: in training mode BatchNorm1d raises ValueError (a channel needs two "
        "values for a variance), which ends the epoch. Drop the remainder n % batch_size (what "
        "DataLoader(drop_last=True) does) or merge it into the previous batch.",
    "short_batch": "A short batch trains silently on statistics of a few examples: a pair normalizes to +-1, and "
        "one update on it costs a median 0.17 of accuracy in lecture 12 (batches of 4 are no better). Drop the "
        "remainder or merge it into the previous batch, so that no batch is smaller than batch_size.",
    "examples_lost": "More examples are left out than the remainder n % batch_size: every full batch belongs in the "
        "epoch (e.g. range(0, n - batch_size, batch_size) skips the last full one).",
    "not_a_partition": "Each index must lie in range(n) and appear at most once per epoch.",
    "not_shuffled": "The batches come in stored order: a data set stored sorted by class then gives batches of one "
        "class, whose statistics remove the class signal. Shuffle with rng.permutation(n).",
    "ignores_rng": "The batches do not follow the rng passed in: draw the permutation from it (rng.permutation(n)), "
        "not from np.random or a generator of your own, so that a seed reproduces an epoch and epochs differ.",
    # evaluate, predict_one
    "eval_forgotten": "The model ran in training mode: every batch norm layer normalized by the statistics of the "
        "batch it was given, so a prediction depends on its batch-mates (class-sorted batches fall to chance) "
        "and a batch of one raises. Call model.eval() before the forward passes.",
    "statistics_changed": "A training-mode forward updates the running statistics whether or not gradients are "
        "on: torch.no_grad() turns off gradients, not training mode (and the damage stays in every checkpoint "
        "saved afterwards). In eval mode nothing changes.",
    "mode_not_restored": "Leave the model in the mode you found it: remember every module's flag first, "
        "modes = [(m, m.training) for m in model.modules()], and restore each at the end "
        "(for m, mode in modes: m.training = mode). model.train() forces training mode on every module, also on "
        "batch norm layers that a fine-tuning loop keeps in eval mode.",
    "weights_changed": "Evaluating must not change the parameters (no backward, no optimizer step).",
    "batch_statistics": "The predictions came from batch statistics: one example repeated (or padded with others) "
        "in training mode is a batch whose statistics describe that batch, not the data (a repeated example "
        "normalizes to beta in every unit). In eval mode a batch of one is fine: it uses the running statistics.",
    # fine_tune
    "statistics_updated": "Frozen batch norm means frozen statistics: the layers must normalize with their running "
        "statistics and never update them. requires_grad_(False) freezes only gamma and beta; eval() on the "
        "batch norm layers freezes the statistics, but a loop that calls model.train() switches them back, so "
        "put them in eval mode after every model.train() (inside the loop), or make their train() keep eval mode.",
    "batch_statistics_used": "The batch norm layers normalized each batch of two by its own statistics during the "
        "steps (the running statistics came out unchanged, but the forwards did not use them): batches of two "
        "normalize to +-1. Put the batch norm layers in eval mode for every forward of the loop.",
    "not_trained": "fine_tune must train the rest of the network: `steps` SGD updates of every trainable "
        "parameter.",
    # synchronized statistics
    "local_statistics": "Each worker normalized its part by its own statistics (plain BN under data parallelism): "
        "the output then depends on how the batch is split, and a worker with one example outputs beta. Combine "
        "every worker's (n_k, mean_k, M_k) and normalize each part with the global mean and variance.",
    "unweighted_mean": "The workers' means (or variances) are averaged without weights: a worker with one example "
        "counts as much as one with a hundred. Weight each by its count: mean = sum_k n_k mean_k / n.",
    "no_between_term": "The variance lacks the between-worker term: sum_k M_k / n is the spread around each "
        "worker's own mean. Chan et al.: M = sum_k M_k + sum_k n_k (mean_k - mean)^2, var = M / n.",
    "unbiased_variance": "The variance is divided by n - 1: the forward normalizes with the biased variance M / n "
        "(the unbiased one belongs in running_var only).",
}

#: (in_features, hidden, classes) of the network the visible checks use
SIZES = (64, 32, 10)
STEPS, BATCH, LR = 120, 32, 0.1  # how the grader trains the base network
TIE = 1e-4  # logits closer than this (top two) may swap between processes: such examples are not counted
TOL = 1e-6  # relative error allowed in the synchronized statistics (float64)
COUNT_TOL = 1e-3  # in examples: an accuracy computed in float32 (0.95 -> 0.9499999881) is still exact


def _report(name: str, problems: dict[str, str]) -> CheckFailed:
    """One failure naming every problem found: ``{kind: observation}``, explained from :data:`EXPLANATIONS`
    (kinds not in it carry their whole message), in the catalogue's order."""
    order = list(EXPLANATIONS)
    kinds = sorted(problems, key=lambda k: order.index(k) if k in order else len(order))
    parts = [problems[k] + (f"\n{EXPLANATIONS[k]}" if k in EXPLANATIONS else "") for k in kinds]
    if len(parts) == 1:
        return CheckFailed(f"{name}: {parts[0]}")
    body = "\n".join(f"({i}) {part}" for i, part in enumerate(parts, start=1))
    return CheckFailed(f"{name} has {len(parts)} problems:\n{body}")


# ----------------------------------------------------------------------------------------- the base network


def _problem(rng: np.random.Generator, d: int, k: int) -> Any:
    """A draw(n) -> (x float32 (n, d), y int64 (n,)) for a 10-class Gaussian problem whose features have
    different offsets and scales (so running statistics matter)."""
    centres = rng.normal(0.0, 0.5, (k, d))
    offset, scale = rng.normal(0.0, 2.0, d), rng.uniform(0.5, 2.0, d)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, k, n)
        x = (centres[y] + rng.normal(0.0, 1.0, (n, d))) * scale + offset
        return x.astype(np.float32), y.astype(np.int64)
    return draw


def base_network(seed: int, arch: str = "flat", sizes: Sequence[int] = SIZES, n_test: int = 201,
                 n_tune: int = 0) -> dict[str, Any]:
    """Probe inputs for the network checks: the architecture, its state after :data:`STEPS` SGD steps in
    training mode (running statistics at momentum 0.1 included) on a problem drawn from ``case_rng(seed)``, a
    test set of ``n_test`` examples and ``n_tune`` more for fine-tuning (``x_tune``, ``y_tune``)."""
    import torch
    import torch.nn.functional as F

    rng = case_rng(seed)
    d, _, k = sizes
    draw = _problem(rng, d, k)
    model = probes.practice_network(arch, sizes)
    with torch.no_grad():
        for parameter in (p for p in model.parameters() if p.dim() == 2):
            bound = 1.0 / np.sqrt(parameter.shape[1])
            parameter.copy_(torch.tensor(rng.uniform(-bound, bound, tuple(parameter.shape)), dtype=torch.float32))
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.copy_(torch.tensor(rng.uniform(-0.1, 0.1, module.bias.shape), dtype=torch.float32))
    params = list(model.parameters())
    model.train()
    for _ in range(STEPS):
        xb, yb = draw(BATCH)
        loss = F.cross_entropy(model(torch.tensor(xb)), torch.tensor(yb))
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for parameter, grad in zip(params, grads):
                parameter -= LR * grad
    state = {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}
    x, y = draw(n_test)
    out = {"arch": arch, "sizes": [int(s) for s in sizes], "state": state, "x": x, "y": y}
    if n_tune:
        out["x_tune"], out["y_tune"] = draw(n_tune)
    return out


def _logits(inputs: dict[str, Any], x: np.ndarray, state: dict[str, np.ndarray] | None = None,
            mode: str = "eval") -> np.ndarray:
    """The network's logits for x in one forward (eval mode: the running statistics)."""
    import torch

    model = probes.loaded_network(inputs if state is None else {**inputs, "state": state}, mode)
    with torch.no_grad():
        return model(torch.tensor(x)).numpy()


def _ties(logits: np.ndarray) -> np.ndarray:
    """Rows whose two largest logits are within :data:`TIE` (their argmax may differ between processes)."""
    if logits.shape[1] < 2:
        return np.zeros(logits.shape[0], bool)
    top = np.sort(logits, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0] < TIE


def _training_mode_accuracy(inputs: dict[str, Any], case: dict[str, Any]) -> float | None:
    """The accuracy ``evaluate`` returns when it forgets eval(): each batch normalized by its own statistics
    (None when a batch of one would raise). Running statistics updated on the way change no training-mode
    output."""
    import torch

    x, y = inputs["x"][case["index"]], inputs["y"][case["index"]]
    size, correct = case["batch_size"], 0
    if len(x) % size == 1 or size == 1:
        return None
    model = probes.loaded_network(inputs, "train")
    with torch.no_grad():
        for start in range(0, len(x), size):
            logits = model(torch.tensor(x[start:start + size])).numpy()
            correct += int((logits.argmax(axis=1) == y[start:start + size]).sum())
    return correct / len(x)


def _kinds(inputs: dict[str, Any]) -> dict[str, str]:
    """Every state-dict key of the network: ``"statistic"`` (a batch norm buffer), ``"affine"`` (gamma or beta)
    or ``"weight"`` (a Linear's parameters)."""
    model = probes.practice_network(inputs["arch"], inputs["sizes"])
    norms = {name for name, module in model.named_modules() if probes.is_batchnorm(module)}
    kinds = {}
    for key in model.state_dict():
        owner, _, leaf = key.rpartition(".")
        if owner in norms:
            kinds[key] = "affine" if leaf in ("weight", "bias") else "statistic"
        else:
            kinds[key] = "weight"
    return kinds


def _state_changes(inputs: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, list[str]], str | None]:
    """``({kind: [changed keys]}, problem)``: which entries of the state differ from the grader's (bit for bit),
    and a problem when the state could not be read or holds other entries."""
    if "error" in after or not isinstance(after.get("state"), dict):
        return {}, f"its state could not be read afterwards ({after.get('error', 'no state')})"
    before, state = inputs["state"], after["state"]
    if set(state) != set(before):
        return {}, (f"afterwards the model's state_dict has other entries than before (added "
                    f"{sorted(set(state) - set(before))[:4]}, missing {sorted(set(before) - set(state))[:4]}): "
                    f"change the given model's values, never its layers")
    changed: dict[str, list[str]] = {}
    for key, kind in _kinds(inputs).items():
        value = _like(state.get(key), before[key])
        if value is None or not np.array_equal(value, before[key]):
            changed.setdefault(kind, []).append(key)
    return changed, None


def _like(value: Any, reference: np.ndarray) -> np.ndarray | None:
    """``value`` as an array of ``reference``'s shape (the wire sends a 0-d array, num_batches_tracked, as shape
    (1,)), or None if it does not have as many entries."""
    array = as_array(value)
    if array is None or array.size != reference.size:
        return None
    return array.reshape(reference.shape)


def _statistics_moved(inputs: dict[str, Any], after: dict[str, Any], keys: list[str]) -> str:
    """``"running_mean of layer 1 moved by up to 0.41 running std; num_batches_tracked +3"``."""
    before, state, parts = inputs["state"], after["state"], []
    means = [k for k in keys if k.endswith("running_mean")]
    if means:
        moved = max(float(np.max(np.abs(_like(state[k], before[k]) - before[k]) / np.sqrt(before[k.replace(
            "running_mean", "running_var")]))) for k in means)
        parts.append(f"running_mean moved by up to {moved:.2g} running std")
    variances = [k for k in keys if k.endswith("running_var")]
    if variances:
        ratio = max(float(np.max(np.abs(_like(state[k], before[k]) / before[k] - 1))) for k in variances)
        parts.append(f"running_var by up to {ratio:.0%}")
    tracked = [k for k in keys if k.endswith("num_batches_tracked")]
    if tracked:
        key = tracked[0]
        parts.append(f"num_batches_tracked +{int(np.max(_like(state[key], before[key]) - before[key]))}")
    return ", ".join(parts) or ", ".join(keys[:3])


def _mode_problem(inputs: dict[str, Any], mode: str, after: dict[str, Any], what: str) -> str | None:
    """What changed in the modules' ``training`` flags, or None."""
    expected = probes.set_modes(probes.practice_network(inputs["arch"], inputs["sizes"]), mode)
    want = [[name, module.training] for name, module in expected.named_modules()]
    got = after.get("modes")
    if got == want:
        return None
    norms = [name for name, module in expected.named_modules() if probes.is_batchnorm(module)]
    flags = dict(map(tuple, got)) if isinstance(got, list) and all(isinstance(g, list) and len(g) == 2
                                                                     for g in got) else {}
    top = flags.get("")
    if mode == "train" and top is False:
        return (f"{what} came in training mode and left in eval mode: the training steps after it would run in "
                f"eval mode (nothing learns the statistics any more)")
    if mode == "eval" and top is True:
        return f"{what} came in eval mode and left in training mode"
    if mode == "bn_eval" and any(flags.get(n) is True for n in norms):
        return (f"{what} came with its batch norm layers frozen in eval mode inside a model in training mode (as "
                f"fine-tuning leaves it) and left them in training mode")
    return f"{what} left the modules in other modes than it found them ({describe(got)})"


def _scalar(value: Any) -> float | None:
    array = as_array(value)
    if array is None or array.size != 1 or not np.isfinite(array).all():
        return None
    return float(array.reshape(()))


# ------------------------------------------------------------------------------------------------ make_model


def _describe_call(info: dict[str, Any]) -> str:
    if info.get("kind") == "weight":
        return f"{info['type']}({info['inputs']} -> {info['outputs']}{'' if info['bias'] else ', bias=False'})"
    if info.get("kind") == "batchnorm":
        return f"{info['type']}({info['features']})"
    return str(info.get("type"))


class _ModelBase(CaseCheck):
    subjects = ("make_model",)
    needs_torch = True
    probe = staticmethod(probes.practice_model)
    #: (in_features, hidden, classes) of each case, and the seed of the batches it runs
    shapes: tuple[tuple[int, int, int], ...] = ()
    seed = 500

    def cases(self) -> list[dict[str, Any]]:
        rng = case_rng(self.seed)
        return [{"in_features": d, "hidden": h, "classes": k, "x": rng.standard_normal((8, d)).astype(np.float32)}
                for d, h, k in self.shapes]

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        name = self.names[0]
        problems: dict[str, str] = {}
        for case, record in zip(inputs["cases"], data):
            d, h, k = case["in_features"], case["hidden"], case["classes"]
            call_text = f"{name}({d}, {h}, {k})"
            if "error" in record and "calls" not in record:
                raise CheckFailed(f"{call_text} raised {record['error']}.{hint_for_error(record['error'])}")
            if "not_a_module" in record:
                raise CheckFailed(f"{call_text} returned a {record['not_a_module']}, not a torch.nn.Module: return "
                                  f"the network (e.g. an nn.Sequential).")
            calls = record["calls"]
            if "error" in record:
                problems.setdefault("raised", f"{call_text} builds a network that raised {record['error']} on a "
                                              f"({len(case['x'])}, {d}) batch in eval mode: build its layers from "
                                              f"the arguments ({d} inputs, {h} hidden units, {k} classes)")
                continue
            for index, (this, following) in enumerate(zip(calls, calls[1:])):
                if this.get("kind") == "weight" and this.get("bias") and following.get("kind") == "batchnorm":
                    problems.setdefault("bias_before_batchnorm", f"in {call_text}, {_describe_call(this)} has a bias "
                                                                 f"and feeds {_describe_call(following)}")
                if this.get("kind") == "dropout":
                    later = next((c for c in calls[index + 1:] if c.get("kind") != "weight"), None)
                    if later is not None and later.get("kind") == "batchnorm":
                        problems.setdefault("dropout_before_batchnorm", f"in {call_text}, {this['type']} feeds "
                                                                        f"{_describe_call(later)}")
            if calls and calls[-1].get("kind") == "batchnorm":
                problems.setdefault("batchnorm_on_output", f"in {call_text} the last module called is "
                                                           f"{_describe_call(calls[-1])}, after the output layer")
            structure = _structure_problem(calls, d, h, k)
            if structure:
                problems.setdefault("architecture", f"{call_text} calls {', '.join(map(_describe_call, calls))}; "
                                                    f"expected {structure}")
            shape = record.get("value")
            if not problems and shape != [len(case["x"]), k]:
                problems["output_shape"] = (f"{call_text} maps a ({len(case['x'])}, {d}) batch to shape {shape}, "
                                            f"expected [{len(case['x'])}, {k}]")
        if problems:
            raise _report(name, problems)
        return f"{name} builds Linear -> BatchNorm1d -> ReLU twice and an output Linear, without the slips " \
               f"({self.summary})."


def _structure_problem(calls: list[dict[str, Any]], d: int, h: int, k: int) -> str | None:
    """None when the calls are the task's network once the named slips are set aside (biases before batch norm
    and a batch norm after the output layer); else the expected network, in words."""
    kept = calls[:-1] if calls and calls[-1].get("kind") == "batchnorm" and len(calls) > 1 and \
        calls[-2].get("kind") == "weight" else calls
    expected = [("weight", d, h), ("batchnorm", h), ("ReLU",), ("weight", h, h), ("batchnorm", h), ("ReLU",),
                ("weight", h, k)]

    def shape(info: dict[str, Any]) -> tuple[Any, ...]:
        if info.get("kind") == "weight":
            return ("weight", info.get("inputs"), info.get("outputs"))
        if info.get("kind") == "batchnorm":
            return ("batchnorm", info.get("features"))
        return (info.get("type"),)
    if [shape(c) for c in kept] == expected and all(c.get("type") == "Linear" for c in kept if c["kind"] == "weight") \
            and all(c.get("type") == "BatchNorm1d" and c.get("affine") and c.get("tracks")
                    for c in kept if c["kind"] == "batchnorm"):
        return None
    return (f"Linear({d} -> {h}, bias=False), BatchNorm1d({h}), ReLU, Linear({h} -> {h}, bias=False), "
            f"BatchNorm1d({h}), ReLU, Linear({h} -> {k}) (batch norm with its defaults)")


@register
class ModelCheck(_ModelBase):
    """make_model(64, 32, 10): no bias right before batch norm, no batch norm on the output, the task's layers."""

    name = "practice_model"
    summary = "64 inputs, 32 hidden units, 10 classes"
    shapes, seed = ((64, 32, 10),), 501


@register
class ModelSizesCheck(_ModelBase):
    """make_model with other sizes: the arguments are used."""

    name = "practice_model_sizes"
    summary = "other sizes: 20 inputs, 48 hidden units, 5 classes; 7, 3, 2"
    shapes, seed = ((20, 48, 5), (7, 3, 2)), 502


# ---------------------------------------------------------------------------------------------- make_batches


def _batches(value: Any) -> list[np.ndarray] | None:
    """The batches as 1-D integer arrays, or None if the value is not a sequence of index batches."""
    if isinstance(value, np.ndarray):
        value = list(value) if value.ndim == 2 else None
    if not isinstance(value, list):
        return None
    out = []
    for batch in value:
        array = as_array(batch)
        if array is None or array.ndim != 1 or (array.size and not np.all(array == np.round(array))):
            return None
        out.append(array.astype(np.int64))
    return out


class _BatchesBase(CaseCheck):
    subjects = ("make_batches",)
    needs_torch = True
    probe = staticmethod(probes.practice_batches)
    #: (n, batch_size) of each case, and the seed of the generators' seeds
    sizes: tuple[tuple[int, int], ...] = ()
    seed = 510

    def cases(self) -> list[dict[str, Any]]:
        rng = case_rng(self.seed)
        return [{"n": n, "batch_size": b, "seed": int(rng.integers(2**31)), "other_seed": int(rng.integers(2**31))}
                for n, b in self.sizes]

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        name = self.names[0]
        problems: dict[str, str] = {}
        for case, record in zip(inputs["cases"], data):
            n, size = case["n"], case["batch_size"]
            call_text = f"{name}({n}, {size}, rng)"
            first = record["first"]
            if "error" in first:
                raise CheckFailed(f"{call_text} raised {first['error']}.{hint_for_error(first['error'])}")
            batches = _batches(first["value"])
            if batches is None:
                raise CheckFailed(f"{call_text} returned {describe(first['value'])}: return a list of batches, each "
                                  f"a 1-D array (or list) of example indices.")
            flat = np.concatenate(batches) if batches else np.zeros(0, np.int64)
            lengths = [len(b) for b in batches]
            if flat.size and (flat.min() < 0 or flat.max() >= n or len(np.unique(flat)) != flat.size):
                problems.setdefault("not_a_partition", f"{call_text} returned indices outside range({n}) or "
                                                       f"repeated ones")
                continue
            short = [length for length in lengths if length < size]
            if 1 in short:
                problems.setdefault("batch_of_one", f"{call_text} returned batches of sizes {_sizes(lengths)}, one "
                                                    f"of them a single example")
            elif short:
                problems.setdefault("short_batch", f"{call_text} returned batches of sizes {_sizes(lengths)}, with "
                                                   f"a batch of {min(short)}")
            long = sorted(length for length in lengths if length > size)
            if long and (len(long) > 1 or long[0] >= 2 * size):
                problems.setdefault("sizes", f"{call_text} returned batches of sizes {_sizes(lengths)}: every batch "
                                             f"holds batch_size examples; only one may hold more, the remainder "
                                             f"merged into it (fewer than 2 * batch_size)")
            if flat.size < n - n % size:
                problems.setdefault("examples_lost", f"{call_text} covers {flat.size} of {n} examples (dropping the "
                                                     f"remainder leaves {n - n % size})")
            if flat.size > 2 and np.all(np.diff(flat) > 0):
                problems.setdefault("not_shuffled", f"{call_text} returned the indices in increasing order")
            again, other = _batches(record["again"].get("value")), _batches(record["other"].get("value"))
            same = again is not None and len(again) == len(batches) and all(
                np.array_equal(a, b) for a, b in zip(again, batches))
            alike = other is not None and len(other) == len(batches) and all(
                np.array_equal(a, b) for a, b in zip(other, batches))
            if not same or (alike and flat.size > 2 and not np.all(np.diff(flat) > 0)):
                problems.setdefault("ignores_rng", f"{call_text} with " + (
                    "two generators of the same seed returned different batches" if not same else
                    "generators of different seeds returned the same batches"))
        if problems:
            raise _report(name, problems)
        return f"{name} shuffles with the given rng and never makes a batch smaller than batch_size " \
               f"({self.summary})."


def _sizes(lengths: list[int]) -> str:
    if len(lengths) <= 6:
        return str(lengths)
    return f"[{', '.join(map(str, lengths[:2]))}, ..., {', '.join(map(str, lengths[-2:]))}]"


@register
class BatchesCheck(_BatchesBase):
    """make_batches with remainders of 1, 2, 0 and 6 examples."""

    name = "practice_batches"
    summary = "n = 65, 66, 64 with batch_size 16, and n = 70 with batch_size 8"
    sizes, seed = ((65, 16), (66, 16), (64, 16), (70, 8)), 511


@register
class BatchesSizesCheck(_BatchesBase):
    """make_batches on other sizes."""

    name = "practice_batches_sizes"
    summary = "n = 101 with batch_size 10, 9 with 4, 1000 with 64"
    sizes, seed = ((101, 10), (9, 4), (1000, 64)), 512


# ------------------------------------------------------------------------------------------------- evaluate


def _order(y: np.ndarray, order: str, n: int) -> np.ndarray:
    index = np.arange(n)
    return index if order == "shuffled" else np.argsort(y[:n], kind="stable")


class _NetworkCheck(Check):
    """A check on a network the grader trained (:func:`base_network`); its inputs hold the network and
    ``cases`` (one probe record each)."""

    needs_torch = True
    #: seed of the base network, its architecture, how many extra examples are drawn for fine-tuning
    base_seed, arch, n_tune = 520, "flat", 0

    def inputs(self) -> dict[str, Any]:
        base = base_network(self.base_seed, self.arch, n_tune=self.n_tune)
        return {**base, "cases": self.cases_for(base)}

    def cases_for(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        raise NotImplementedError


#: (label, order, number of test examples, batch size, mode the model comes in)
_EVALUATE_CASES = {
    "visible": (("200 examples in shuffled batches of 50", "shuffled", 200, 50, "train"),
                ("200 examples sorted by class, in batches of 2", "class-sorted", 200, 2, "train"),
                ("201 examples in batches of 200 (the last batch holds one)", "shuffled", 201, 200, "train")),
    "modes": (("a model in eval mode, 200 examples sorted by class in batches of 4", "class-sorted", 200, 4, "eval"),
              ("a model whose batch norm layers are frozen in eval mode, 201 examples in batches of 50",
               "shuffled", 201, 50, "bn_eval"),
              ("a model in training mode, 120 examples sorted by class in batches of 8", "class-sorted", 120, 8,
               "train")),
}


class _EvaluateBase(_NetworkCheck):
    subjects = ("evaluate",)
    probe = staticmethod(probes.practice_evaluate)
    which = "visible"

    def cases_for(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"label": label, "index": _order(base["y"], order, n), "batch_size": size, "mode": mode}
                for label, order, n, size, mode in _EVALUATE_CASES[self.which]]

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        name = self.names[0]
        problems: dict[str, str] = {}
        logits = _logits(inputs, inputs["x"])
        forgotten: list[tuple[float, str]] = []  # (how far from the eval-mode accuracy, what was seen)
        for case, record in zip(inputs["cases"], data):
            label, index = case["label"], case["index"]
            y, mine = inputs["y"][index], logits[index]
            n = len(index)
            if "error" in record:
                if "more than 1 value per channel" in record["error"]:
                    forgotten.append((0.0, f"on {label} it raised {record['error']}"))
                else:
                    raise CheckFailed(f"{name} raised {record['error']} on {label}.{hint_for_error(record['error'])}")
            else:
                value = _scalar(record["value"])
                correct = int((mine.argmax(axis=1) == y).sum())
                slack = int(_ties(mine).sum())
                if value is None:
                    raise CheckFailed(f"{name} returned {describe(record['value'])} on {label}: return the accuracy, "
                                      f"a number (the fraction of examples whose largest logit is the label).")
                if abs(value * n - correct) > slack + COUNT_TOL:
                    train = _training_mode_accuracy(inputs, case)
                    if train is not None and abs(value - train) * n <= slack + COUNT_TOL:
                        forgotten.append((abs(value - correct / n), f"on {label} it returned {value:.3f}, where the "
                                                                    f"accuracy in eval mode is {correct / n:.3f} (in "
                                                                    f"training mode {train:.3f})"))
                    elif abs(value - correct) <= slack + COUNT_TOL:
                        problems.setdefault("value", f"on {label} it returned {value:g}, the number of correct "
                                                     f"examples: return the fraction, {correct / n:.4f}")
                    elif abs(value - 100 * correct / n) <= 100 * (slack + COUNT_TOL) / n:
                        problems.setdefault("value", f"on {label} it returned {value:g}, a percentage: return the "
                                                     f"fraction, {correct / n:.4f}")
                    else:
                        problems.setdefault("value", f"on {label} it returned {value:.4f}, expected {correct / n:.4f} "
                                                     f"(the fraction of the {n} examples whose largest eval-mode "
                                                     f"logit is the label)")
            _judge_after(inputs, case["mode"], record["after"], f"on {label}", name, problems)
        if forgotten:  # the most telling value, and a batch of one that raised
            shown = [max(forgotten)[1]] + [text for gap, text in forgotten if gap == 0.0][:1]
            problems["eval_forgotten"] = "; ".join(dict.fromkeys(shown))
        if problems:
            raise _report(name, problems)
        return f"{name} returns the eval-mode accuracy in any order and batch size, and leaves the model as it " \
               f"found it ({self.summary})."


def _judge_after(inputs: dict[str, Any], mode: str, after: dict[str, Any], where: str, name: str,
                 problems: dict[str, str]) -> None:
    """Note what a call that must change nothing changed: running statistics, parameters, modes."""
    changed, problem = _state_changes(inputs, after)
    if problem:
        problems.setdefault("state", f"{where} {problem}")
        return
    if changed.get("statistic"):
        problems.setdefault("statistics_changed", f"{where} the running statistics changed "
                                                  f"({_statistics_moved(inputs, after, changed['statistic'])})")
    if changed.get("weight") or changed.get("affine"):
        keys = changed.get("weight", []) + changed.get("affine", [])
        problems.setdefault("weights_changed", f"{where} the parameters changed ({', '.join(keys[:3])})")
    moved = _mode_problem(inputs, mode, after, f"the model given to {name}")
    if moved:
        problems.setdefault("mode_not_restored", moved)


@register
class EvaluateCheck(_EvaluateBase):
    """evaluate on a model in training mode: shuffled and class-sorted batches, a last batch of one."""

    name = "practice_evaluate"
    summary = "shuffled batches of 50, class-sorted batches of 2, a last batch of one"
    base_seed = 521


@register
class EvaluateModesCheck(_EvaluateBase):
    """evaluate on a model in eval mode and on one whose batch norm layers are frozen in eval mode."""

    name = "practice_evaluate_modes"
    summary = "a model in eval mode, one with frozen batch norm layers, class-sorted batches of 4 and 8"
    base_seed, which = 522, "modes"


# ---------------------------------------------------------------------------------------------- predict_one


class _PredictBase(_NetworkCheck):
    subjects = ("predict_one",)
    probe = staticmethod(probes.practice_predict)
    modes: tuple[str, ...] = ("train",)

    def cases_for(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"mode": mode, "index": np.arange(12 * i, 12 * i + 12)} for i, mode in enumerate(self.modes)]

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        name = self.names[0]
        problems: dict[str, str] = {}
        describe_mode = {"train": "a model in training mode", "eval": "a model in eval mode",
                         "bn_eval": "a model whose batch norm layers are frozen in eval mode"}
        for case, record in zip(inputs["cases"], data):
            where = f"on {describe_mode[case['mode']]}"
            logits = _logits(inputs, inputs["x"][case["index"]])
            expected, ties = logits.argmax(axis=1), _ties(logits)
            answers = record["answers"]
            if not isinstance(answers, list) or len(answers) != len(case["index"]):
                raise CheckFailed(f"the grading probe sent back {describe(answers)} for {len(case['index'])} "
                                  f"examples: the run was tampered with or broke, so this check cannot pass.")
            errors = [a["error"] for a in answers if "error" in a]
            if errors:
                if any("more than 1 value per channel" in e for e in errors):
                    problems.setdefault("eval_forgotten", f"{where} it raised {errors[0]}")
                else:
                    raise CheckFailed(f"{name} raised {errors[0]} {where}.{hint_for_error(errors[0])}")
            else:
                values = [_scalar(a["value"]) for a in answers]
                if any(v is None or v != round(v) for v in values):
                    bad = next(a["value"] for a, v in zip(answers, values) if v is None or v != round(v))
                    raise CheckFailed(f"{name} returned {describe(bad)} {where}: return the predicted class, an "
                                      f"int (the index of the largest logit).")
                got = np.array(values, dtype=np.int64)
                wrong = (got != expected) & ~ties
                if wrong.any():
                    constant = len(set(got.tolist())) == 1 and len(set(expected.tolist())) > 1
                    problems.setdefault("batch_statistics" if constant else "value",
                                        f"{where} it answered {got.tolist()} for {len(got)} examples; the eval-mode "
                                        f"predictions are {expected.tolist()}"
                                        + ("" if constant else " (a prediction uses the running statistics: "
                                           "model.eval(), then the argmax of the logits of x1.unsqueeze(0))"))
            _judge_after(inputs, case["mode"], record["after"], where, name, problems)
        if problems:
            raise _report(name, problems)
        return f"{name} gives the eval-mode prediction and leaves the model as it found it ({self.summary})."


@register
class PredictCheck(_PredictBase):
    """predict_one on a model in training mode, twelve examples one after the other."""

    name = "practice_predict"
    summary = "twelve examples, one at a time, a model in training mode"
    base_seed = 531


@register
class PredictModesCheck(_PredictBase):
    """predict_one on a model in eval mode, on one whose batch norm layers are frozen in eval mode, and on one in
    training mode."""

    name = "practice_predict_modes"
    summary = "a model in eval mode, one with frozen batch norm layers, one in training mode"
    base_seed, modes = 532, ("eval", "bn_eval", "train")


# ------------------------------------------------------------------------------------------------ fine_tune


def fine_tuned(inputs: dict[str, Any], case: dict[str, Any], frozen: bool, affine: bool) -> dict[str, np.ndarray]:
    """The state after ``case["steps"]`` plain SGD steps on batches x[2t:2t+2] (mean cross-entropy), with the
    batch norm layers in eval mode (``frozen``) or training mode, and gamma/beta trained (``affine``) or not."""
    import torch
    import torch.nn.functional as F

    model = probes.loaded_network(inputs, "bn_eval" if frozen else "train")
    params = [p for m in model.modules() for p in m.parameters(recurse=False)
              if affine or not probes.is_batchnorm(m)]
    x, y = torch.tensor(case["x"]), torch.tensor(case["y"])
    for step in range(case["steps"]):
        loss = F.cross_entropy(model(x[2 * step:2 * step + 2]), y[2 * step:2 * step + 2])
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for parameter, grad in zip(params, grads):
                parameter -= case["lr"] * grad
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def _same_state(state: dict[str, Any], reference: dict[str, np.ndarray], keys: list[str], tol: float) -> bool:
    for key in keys:
        value, ref = _like(state.get(key), reference[key]), reference[key]
        if value is None or not np.all(np.isfinite(ref)):
            return False
        if np.max(np.abs(value - ref), initial=0.0) > tol * (1.0 + np.max(np.abs(ref), initial=0.0)):
            return False
    return True


class _FineTuneBase(_NetworkCheck):
    subjects = ("fine_tune",)
    probe = staticmethod(probes.practice_fine_tune)
    #: (steps, lr) of each case
    runs: tuple[tuple[int, float], ...] = ()

    def cases_for(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        out, start = [], 0
        for steps, lr in self.runs:
            out.append({"steps": steps, "lr": lr, "x": base["x_tune"][start:start + 2 * steps],
                        "y": base["y_tune"][start:start + 2 * steps]})
            start += 2 * steps
        return out

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        name = self.names[0]
        problems: dict[str, str] = {}
        kinds = _kinds(inputs)
        for case, record in zip(inputs["cases"], data):
            call_text = f"{name}(model, x, y, steps={case['steps']}, lr={case['lr']})"
            if "error" in record:
                raise CheckFailed(f"{call_text} raised {record['error']}.{hint_for_error(record['error'])}")
            after = record["after"]
            changed, problem = _state_changes(inputs, after)
            if problem:
                raise CheckFailed(f"{call_text}: {problem}.")
            if not changed.get("weight"):
                problems.setdefault("not_trained", f"{call_text} left the Linear layers' weights unchanged")
                continue
            if changed.get("statistic"):
                how = ("gamma and beta stayed fixed, so only requires_grad_(False) froze anything"
                       if not changed.get("affine") else "gamma and beta trained too")
                problems.setdefault("statistics_updated", f"{call_text} changed the running statistics "
                                                          f"({_statistics_moved(inputs, after, changed['statistic'])}"
                                                          f"; {how}): the batch norm layers ran in training mode")
                continue
            trained = [k for k, kind in kinds.items() if kind != "statistic"]
            state = after["state"]
            if any(_same_state(state, fine_tuned(inputs, case, True, affine), trained, 1e-4)
                   for affine in (True, False)):
                continue
            if any(_same_state(state, fine_tuned(inputs, case, False, affine), trained, 1e-3)
                   for affine in (True, False)):
                problems.setdefault("batch_statistics_used", f"{call_text} trained the weights as if batch norm "
                                                             f"used the statistics of each batch of two")
                continue
            reference = fine_tuned(inputs, case, True, bool(changed.get("affine")))
            errors = {k: relative_error(_like(state[k], reference[k]), reference[k]) for k in trained}
            worst = max(errors, key=errors.get)
            problems.setdefault("differs", f"{call_text}: after it, {worst} differs from {case['steps']} plain SGD "
                                           f"steps with frozen batch norm (relative error {errors[worst]:.1e}). Use "
                                           f"batch t = x[2t:2t+2], the mean cross-entropy (F.cross_entropy), and "
                                           f"p -= lr * p.grad for every trainable parameter, `steps` times")
        if problems:
            raise _report(name, problems)
        return f"{name} trains with the batch norm statistics frozen ({self.summary})."


@register
class FineTuneCheck(_FineTuneBase):
    """fine_tune on the flat network: ten steps in batches of two."""

    name = "practice_fine_tune"
    summary = "10 steps in batches of two, the running statistics unchanged"
    base_seed, n_tune, runs = 541, 20, ((10, 0.05),)


@register
class FineTuneNestedCheck(_FineTuneBase):
    """fine_tune on a network whose batch norm layers sit inside nested nn.Sequential blocks."""

    name = "practice_fine_tune_nested"
    summary = "batch norm layers nested two levels down, 6 steps at lr 0.1"
    base_seed, arch, n_tune, runs = 542, "nested", 12, ((6, 0.1),)


# ------------------------------------------------------------------------------------ synchronized statistics


def combine_candidates(counts: np.ndarray, means: np.ndarray, m2s: np.ndarray
                       ) -> tuple[dict[tuple[str, ...], np.ndarray],
                                  dict[tuple[str, ...], dict[tuple[str, ...], np.ndarray]]]:
    """What right and wrong ways of combining the workers' summaries give: ``(means, variances)``, where
    ``means`` maps the mistakes a rule makes (``()`` for the right one) to a mean, and ``variances`` maps the
    mean rule's mistakes to ``{variance rule's mistakes: variance}``."""
    with np.errstate(all="ignore"):
        counts = np.asarray(counts, np.float64)
        w = counts[:, None]
        n = counts.sum()
        active = counts > 0
        mean_rules = {(): (w * means).sum(0) / n,
                      ("unweighted_mean",): means[active].mean(0)}
        if not active.all():
            mean_rules[("unweighted_mean", "empty")] = means.mean(0)
        within = m2s.sum(0)
        own_var, own_unbiased = m2s[active] / w[active], m2s[active] / (w[active] - 1)
        variances: dict[tuple[str, ...], dict[tuple[str, ...], np.ndarray]] = {}
        for rule, mean in mean_rules.items():
            total = within + (w * (means - mean) ** 2).sum(0)
            variances[rule] = {
                (): total / n,
                ("unbiased_variance",): total / (n - 1),
                ("no_between_term",): within / n,
                ("no_between_term", "unbiased_variance"): within / (n - 1),
                ("no_between_term", "unweighted_mean"): own_var.mean(0),
                ("no_between_term", "unweighted_mean", "unbiased_variance"): own_unbiased.mean(0),
            }
    return mean_rules, variances


def _summaries(parts: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = np.array([len(p) for p in parts], np.float64)
    means = np.array([p.mean(0) if len(p) else np.zeros(p.shape[1]) for p in parts])
    m2s = np.array([((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(p.shape[1]) for p in parts])
    return counts, means, m2s


def _matching(value: np.ndarray, candidates: dict[Any, np.ndarray]) -> Any:
    for label, candidate in candidates.items():
        if candidate.shape == value.shape and np.all(np.isfinite(candidate)) and \
                relative_error(value, candidate) <= TOL:
            return label
    return None


def _explained(name: str, observation: str, labels: Sequence[str], otherwise: str) -> CheckFailed:
    """One observation and the explanation of every mistake in ``labels`` (``otherwise`` when none is known)."""
    named = [label for label in dict.fromkeys(labels) if label in EXPLANATIONS]
    return CheckFailed(f"{name}: {observation}.\n" + ("\n".join(EXPLANATIONS[label] for label in named)
                                                     if named else otherwise))


def _parts(rng: np.random.Generator, sizes: Sequence[int], c: int, near_constant: bool = False) -> list[np.ndarray]:
    """One (n_k, C) part per worker; workers' means differ (so the between-worker term matters), channels have
    different scales; ``near_constant``: the last channel varies by 1e-4 within a worker, 3e-3 between them."""
    parts = []
    for k, size in enumerate(sizes):
        part = rng.standard_normal((size, c)) * np.linspace(0.5, 3.0, c) + np.linspace(-2.0, 3.0, c) + 1.5 * k
        if near_constant:
            part[:, -1] = 1.0 + 3e-3 * k + 1e-4 * rng.standard_normal(size)
        parts.append(part)
    return parts


class _CombineBase(CaseCheck):
    subjects = ("combine_statistics",)
    probe = staticmethod(probes.sync_combine)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        name = self.names[0]
        for case, record in zip(inputs["cases"], data):
            label = case["label"]
            if "error" in record:
                raise CheckFailed(f"{name} raised {record['error']} on {label}.{hint_for_error(record['error'])}")
            if any(not np.array_equal(record["after"][k], case[k]) for k in ("counts", "means", "m2s")):
                raise CheckFailed(f"{name} changed its arguments in place on {label}: compute new arrays instead.")
            value = record["value"]
            if not (isinstance(value, list) and len(value) == 2):
                raise CheckFailed(f"{name} returned {describe(value)} on {label}: return the pair (mean, var), each "
                                  f"of shape (C,).")
            means, variances = combine_candidates(case["counts"], case["means"], case["m2s"])
            mean, var = as_array(value[0]), as_array(value[1])
            c = case["means"].shape[1]
            for what, array, returned in (("mean", mean, value[0]), ("var", var, value[1])):
                if array is None or array.shape != (c,):
                    raise CheckFailed(f"{name} on {label}: {what} should have shape ({c},), got {describe(returned)}.")
                if not np.all(np.isfinite(array)):
                    empty = " An empty worker (n_k = 0) adds nothing: never divide by its count." \
                        if np.any(case["counts"] == 0) else ""
                    raise CheckFailed(f"{name} on {label}: {what} contains NaN or inf.{empty}")
            mean_rule = _matching(mean, means)
            var_rule = _matching(var, variances[mean_rule]) if mean_rule is not None else None
            if var_rule is None:  # a variance rule around another mean than the one returned
                var_rule = next((r for rule in variances.values() if (r := _matching(var, rule)) is not None), None)
            if mean_rule == () and var_rule == ():
                continue
            found = [f"{what} differs from the reference (relative error {relative_error(got, want):.1e})"
                     for what, got, want, rule in (("mean", mean, means[()], mean_rule),
                                                   ("var", var, variances[()][()], var_rule)) if rule != ()]
            raise _explained(name, f"on {label}, {' and '.join(found)}", (mean_rule or ()) + (var_rule or ()),
                             "The global mean is sum_k n_k mean_k / n, the variance (sum_k M_k + sum_k n_k "
                             "(mean_k - mean)^2) / n.")
        return f"{name} combines the workers' summaries exactly ({self.summary})."


def _combine_case(label: str, rng: np.random.Generator, sizes: Sequence[int], c: int = 3) -> dict[str, Any]:
    counts, means, m2s = _summaries(_parts(rng, sizes, c))
    return {"label": label, "counts": counts.astype(np.int64), "means": means, "m2s": m2s}


@register
class CombineCheck(_CombineBase):
    """Two workers of unequal size, then three."""

    name = "sync_combine"
    summary = "workers of 5 and 2 examples; of 6, 3 and 9"

    def cases(self) -> list[dict[str, Any]]:
        rng = case_rng(551)
        return [_combine_case("two workers with 5 and 2 examples", rng, (5, 2)),
                _combine_case("three workers with 6, 3 and 9 examples", rng, (6, 3, 9), 4)]


@register
class CombineMoreCheck(_CombineBase):
    """A worker with one example, and an empty worker."""

    name = "sync_combine_more"
    summary = "a worker with one example, an empty worker"

    def cases(self) -> list[dict[str, Any]]:
        rng = case_rng(552)
        return [_combine_case("workers with 4, 1 and 7 examples", rng, (4, 1, 7)),
                _combine_case("workers with 3, 0 (an empty worker) and 5 examples", rng, (3, 0, 5), 2)]


class _SyncForwardBase(CaseCheck):
    subjects = ("sync_batchnorm_forward",)
    probe = staticmethod(probes.sync_forward)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        from bnlab.functional import batchnorm_forward

        name = self.names[0]
        for case, record in zip(inputs["cases"], data):
            label, parts = case["label"], case["parts"]
            if "error" in record:
                raise CheckFailed(f"{name} raised {record['error']} on {label}.{hint_for_error(record['error'])}")
            after = record["after"]
            kept = [np.array_equal(a, b) for a, b in zip(after["parts"], parts)]
            kept += [np.array_equal(after[k], case[k]) for k in ("gamma", "beta")]
            if not all(kept):
                raise CheckFailed(f"{name} changed its arguments in place on {label}: compute new arrays instead.")
            eps = 1e-5 if case["eps"] is None else case["eps"]
            sizes = [len(p) for p in parts]
            whole = np.concatenate(parts)
            expected = batchnorm_forward(whole, case["gamma"], case["beta"], eps)[0]
            value = record["value"]
            outputs = [as_array(v) for v in value] if isinstance(value, list) else None
            if outputs is None or len(outputs) != len(parts) or any(
                    o is None or o.shape != p.shape for o, p in zip(outputs, parts)):
                shapes = [tuple(p.shape) for p in parts]
                raise CheckFailed(f"{name} returned {describe(value)} on {label}: return a list with one output per "
                                  f"worker, shaped like its part ({shapes}).")
            got = np.concatenate(outputs)
            if not np.all(np.isfinite(got)):
                raise CheckFailed(f"{name} on {label}: the outputs contain NaN or inf.")
            error = relative_error(got, expected)
            if error <= TOL * 10:
                continue
            labels = _matching(got, _forward_candidates(parts, case["gamma"], case["beta"], eps))
            where = np.unravel_index(int(np.argmax(np.abs(got - expected))), got.shape)
            worker = int(np.searchsorted(np.cumsum(sizes), where[0], side="right"))
            raise _explained(name, f"on {label}, the outputs differ from batch norm of the whole batch (relative error "
                                   f"{error:.1e}); e.g. worker {worker}, channel {where[1]}: you have "
                                   f"{got[where]:.6g}, expected {expected[where]:.6g}", labels or (),
                             "Each worker sends (n_k, mean_k, M_k); every worker combines them into the global mean "
                             "and biased variance and normalizes its own part with them.")
        return f"{name} equals batch norm of the concatenated batch on every worker ({self.summary})."


def _forward_candidates(parts: Sequence[np.ndarray], gamma: np.ndarray, beta: np.ndarray, eps: float
                        ) -> dict[tuple[str, ...], np.ndarray]:
    """The concatenated outputs each classic mistake gives, by its labels."""
    with np.errstate(all="ignore"):
        out = {("local_statistics",): np.concatenate([gamma * (p - p.mean(0)) / np.sqrt(p.var(0) + eps) + beta
                                                      for p in parts])}
        counts, means, m2s = _summaries(parts)
        mean_rules, variances = combine_candidates(counts, means, m2s)
        whole = np.concatenate(parts)
        for mean_rule, mean in mean_rules.items():
            for var_rule, var in variances[mean_rule].items():
                if mean_rule == () and var_rule == ():
                    continue
                out[tuple(dict.fromkeys(mean_rule + var_rule))] = gamma * (whole - mean) / np.sqrt(var + eps) + beta
    return out


def _forward_case(label: str, rng: np.random.Generator, sizes: Sequence[int], c: int, eps: float | None = None,
                  near_constant: bool = False) -> dict[str, Any]:
    gamma = rng.uniform(0.5, 2.0, c) * np.where(np.arange(c) % 2, -1.0, 1.0)
    return {"label": label, "parts": _parts(rng, sizes, c, near_constant), "gamma": gamma,
            "beta": rng.normal(0.0, 1.0, c), "eps": eps}


@register
class SyncForwardCheck(_SyncForwardBase):
    """Two workers of unequal size."""

    name = "sync_forward"
    summary = "two workers with 5 and 3 examples"

    def cases(self) -> list[dict[str, Any]]:
        rng = case_rng(561)
        return [_forward_case("two workers with 5 and 3 examples", rng, (5, 3), 3)]


@register
class SyncForwardMoreCheck(_SyncForwardBase):
    """Three workers, one of them with a single example; a nearly constant channel; another eps."""

    name = "sync_forward_more"
    summary = "three workers, one with a single example, a nearly constant channel, eps = 1e-3"

    def cases(self) -> list[dict[str, Any]]:
        rng = case_rng(562)
        return [_forward_case("three workers with 4, 1 and 6 examples and a nearly constant channel", rng, (4, 1, 6),
                              3, near_constant=True),
                _forward_case("two workers with 2 and 7 examples, eps = 1e-3", rng, (2, 7), 2, eps=1e-3)]
