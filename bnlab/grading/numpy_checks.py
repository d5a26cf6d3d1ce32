"""Checks for the numpy exercises: training forward, inference, and the staged and fused backward.

Every check feeds float64 batches whose channels have different means and scales (so a reduction over the wrong
axis shows), small batches (so the unbiased variance shows), a nearly constant feature (so a misplaced epsilon
shows), a random upstream gradient and a gamma with a zero (so a backward that is only right for ``dout = 1`` or
``gamma = 1`` shows). Reference values come from :mod:`bnlab.functional`, computed on the grader's side.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.grading import probes
from bnlab.grading.core import (
    CaseCheck,
    Check,
    CheckFailed,
    array_problem,
    as_array,
    case_rng,
    closest_mistake,
    describe,
    register,
    relative_error,
)
from bnlab.grading.diagnoses import (
    backward_dx_candidates,
    backward_param_candidates,
    explain,
    forward_candidates,
    hint_for_error,
    inference_candidates,
)

__all__ = ["ForwardCheck", "ForwardConvCheck", "ForwardOptionsCheck", "InferenceCheck", "InferenceConvCheck",
           "BackwardCheck", "BackwardConvCheck", "batch"]

TOL = 1e-5  # relative error allowed against the reference (float64 implementations reach ~1e-14)
STEP = 1e-5  # finite-difference step for the learner's own forward


def batch(shape: tuple[int, ...], seed: int, dtype: type = np.float64) -> np.ndarray:
    """A batch whose channels have clearly different means (-3 ... 4) and scales (0.5 ... 3)."""
    rng = case_rng(seed)
    channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    scale = np.linspace(0.5, 3.0, shape[1]).reshape(channel)
    mean = np.linspace(-3.0, 4.0, shape[1]).reshape(channel)
    return (rng.standard_normal(shape) * scale + mean).astype(dtype)


def _params(num_channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """gamma with a zero and a negative entry, non-zero beta."""
    rng = case_rng(seed + 1000)
    gamma = rng.uniform(0.5, 2.0, num_channels) * np.where(np.arange(num_channels) % 2, -1.0, 1.0)
    gamma[0] = 0.0 if num_channels > 2 else gamma[0]
    return gamma, rng.normal(0.0, 1.0, num_channels)


def _shape(x: np.ndarray) -> str:
    return f"{tuple(x.shape)} {'float32 ' if x.dtype == np.float32 else ''}batch"


def _changed(case: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [name for name, value in after.items()
            if not (isinstance(value, np.ndarray) and value.shape == case[name].shape
                    and np.array_equal(value, case[name], equal_nan=True))]


def _raise_call_error(fname: str, label: str, error: str) -> None:
    raise CheckFailed(f"{fname} raised {error} on {label}.{hint_for_error(error)}")


def _raise_mismatch(fname: str, label: str, problem: str, value: Any, candidates: dict[str, Any],
                    likely: str | None = None) -> None:
    """Fail with the closest catalogued mistake, or ``likely`` (a case built to expose one mistake) if none
    of the candidates is close."""
    mistake = closest_mistake(value, candidates) or likely
    hint = f"\n{explain(mistake)}" if mistake else ""
    raise CheckFailed(f"{fname} on {label}: {problem}.{hint}")


def _raise_if_mutated(fname: str, label: str, case: dict[str, Any], after: dict[str, Any]) -> None:
    changed = _changed(case, after)
    if changed:
        raise CheckFailed(f"{fname} changed its argument {', '.join(changed)} in place on {label} (e.g. "
                          f"`x -= mu` or `x /= std`): the caller's arrays must not change. Compute new arrays "
                          f"instead (xc = x - mu).")


# ---------------------------------------------------------------------------------------------------- forward


class _ForwardBase(CaseCheck):
    subjects = ("batchnorm_forward",)
    probe = staticmethod(probes.forward)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        from bnlab.functional import batchnorm_forward

        for case, record in zip(inputs["cases"], data):
            label = case["label"]
            if "error" in record:
                _raise_call_error("batchnorm_forward", label, record["error"])
            if "not_a_pair" in record:
                raise CheckFailed(f"batchnorm_forward must return a pair (out, cache); on {label} it returned "
                                  f"{describe(record['not_a_pair'])}. End it with `return out, cache`.")
            _raise_if_mutated("batchnorm_forward", label, case, record["after"])
            eps = 1e-5 if case["eps"] is None else case["eps"]
            x64 = case["x"].astype(np.float64)
            expected, _ = batchnorm_forward(x64, case["gamma"], case["beta"], eps)
            out = record["out"]
            if isinstance(out, np.ndarray) and out.dtype != case["x"].dtype and out.shape == expected.shape:
                raise CheckFailed(f"batchnorm_forward on {label}: the output has dtype {out.dtype}, but the input "
                                  f"is {case['x'].dtype}; keep the input's dtype (do not convert).")
            tol = case.get("tol") or (TOL if case["x"].dtype == np.float64 else 1e-4)
            problem = array_problem("out", out, expected, tol)
            if problem:
                candidates = forward_candidates(x64, case["gamma"], case["beta"], eps)
                if case["eps"] is not None:
                    candidates["eps_ignored"] = batchnorm_forward(x64, case["gamma"], case["beta"])[0]
                _raise_mismatch("batchnorm_forward", label, problem, out, candidates, case.get("likely"))
        return f"batchnorm_forward matches the reference on {len(data)} batches ({self.summary})."


@register
class ForwardCheck(_ForwardBase):
    """Training forward on (N, C): small batch, channels of different scales, a nearly constant feature."""

    name = "forward"
    summary = "(N, C) input, a batch of 2, a nearly constant feature"

    def cases(self) -> list[dict[str, Any]]:
        gamma, beta = _params(3, 1)
        near_constant = np.array([[1.0, 5.0], [1.0 + 1e-4, 7.0], [1.0 - 1e-4, 2.0]])
        pair = batch((2, 3), 2)
        return [
            {"label": "a (4, 3) batch", "x": batch((4, 3), 1), "gamma": np.array([1.5, -0.7, 2.0]),
             "beta": beta, "eps": None},
            {"label": "a nearly constant feature (values 1, 1 + 1e-4, 1 - 1e-4)", "x": near_constant,
             "gamma": np.ones(2), "beta": np.zeros(2), "eps": None},
            {"label": "a batch of 2", "x": pair, "gamma": np.array([1.0, 2.0, 0.5]),
             "beta": np.array([0.0, 1.0, -1.0]), "eps": None},
            {"label": "a (6, 3) batch with gamma = 0 in one channel", "x": batch((6, 3), 3), "gamma": gamma,
             "beta": beta, "eps": None},
        ]


@register
class ForwardConvCheck(_ForwardBase):
    """(N, C, H, W) and (N, C, L): one statistic per channel over batch and positions."""

    name = "forward_conv"
    summary = "(N, C, H, W) and (N, C, L) input"

    def cases(self) -> list[dict[str, Any]]:
        gamma, beta = _params(3, 4)
        return [
            {"label": "a (4, 3, 2, 3) batch", "x": batch((4, 3, 2, 3), 4), "gamma": gamma, "beta": beta, "eps": None},
            {"label": "a (2, 3, 5) batch", "x": batch((2, 3, 5), 5), "gamma": gamma, "beta": beta, "eps": None},
            {"label": "a (3, 2, 4, 5) batch", "x": batch((3, 2, 4, 5), 6), "gamma": np.array([1.5, -0.5]),
             "beta": np.array([0.3, -2.0]), "eps": None},
        ]


@register
class ForwardOptionsCheck(_ForwardBase):
    """The eps keyword is honoured and float32 input stays float32."""

    name = "forward_options"
    summary = "the eps argument, float32 input, one with a large mean, float32 gamma and beta"

    def cases(self) -> list[dict[str, Any]]:
        small = batch((5, 2), 7) * 0.1
        offset = (case_rng(9).standard_normal((16, 3)) * np.array([0.5, 1.0, 2.0]) + 3000.0).astype(np.float32)
        return [
            # float32 keeps about 7 digits: E[x^2] - E[x]^2 at a mean of 3000 loses the variance to cancellation
            # (relative error 0.3 and more), while subtracting the mean first stays within 6e-4
            {"label": "a (16, 3) float32 batch with a large mean (about 3000)", "x": offset,
             "gamma": np.array([1.0, -0.7, 1.3], np.float32), "beta": np.array([0.1, 0.2, -0.3], np.float32),
             "eps": None, "tol": 1e-3, "likely": "one_pass_variance"},
            {"label": "a (5, 2) batch with eps=0.5", "x": small, "gamma": np.array([1.0, -2.0]),
             "beta": np.array([0.5, 0.0]), "eps": 0.5},
            {"label": "a (6, 3) float32 batch", "x": batch((6, 3), 8, np.float32),
             "gamma": np.array([1.0, 0.5, 2.0], np.float32), "beta": np.array([0.0, 1.0, -1.0], np.float32),
             "eps": None},
            {"label": "a (5, 3) float64 batch with float32 gamma and beta", "x": batch((5, 3), 10),
             "gamma": np.array([1.5, -0.5, 2.0], np.float32), "beta": np.array([0.25, 1.0, -1.0], np.float32),
             "eps": None},
        ]


# -------------------------------------------------------------------------------------------------- inference


class _InferenceBase(CaseCheck):
    subjects = ("batchnorm_inference",)
    probe = staticmethod(probes.inference)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        from bnlab.functional import batchnorm_inference

        outputs = {}
        for case, record in zip(inputs["cases"], data):
            label = case["label"]
            if "error" in record:
                _raise_call_error("batchnorm_inference", label, record["error"])
            _raise_if_mutated("batchnorm_inference", label, case, record["after"])
            eps = 1e-5 if case["eps"] is None else case["eps"]
            stats = [case[k] for k in ("x", "gamma", "beta", "running_mean", "running_var")]
            expected = batchnorm_inference(*(np.asarray(a, np.float64) for a in stats), eps=eps)
            out = record["out"]
            if isinstance(out, np.ndarray) and out.dtype != case["x"].dtype and out.shape == expected.shape:
                raise CheckFailed(f"batchnorm_inference on {label}: the output has dtype {out.dtype}, but the input "
                                  f"is {case['x'].dtype}; keep the input's dtype (do not convert x to the "
                                  f"statistics' dtype).")
            problem = array_problem("out", out, expected, TOL if case["x"].dtype == np.float64 else 1e-4)
            if problem:
                _raise_mismatch("batchnorm_inference", label, problem, record["out"],
                                inference_candidates(*stats, eps))
            outputs[label] = as_array(record["out"])
        for case in inputs["cases"]:
            if "same_first_row_as" in case:
                other = outputs[case["same_first_row_as"]]
                if relative_error(outputs[case["label"]][0], other[0]) > 1e-12:
                    raise CheckFailed("batchnorm_inference gave example 0 a different output when the rest of the "
                                      "batch changed.\n" + explain("batch_statistics_in_eval"))
        return f"batchnorm_inference matches the reference on {len(data)} batches ({self.summary})."


def _running_stats(num_channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = case_rng(seed + 2000)
    return rng.uniform(-2.0, 2.0, num_channels), rng.uniform(0.3, 4.0, num_channels)


@register
class InferenceCheck(_InferenceBase):
    """Inference on (N, C): running statistics, eps inside the root, independence from the rest of the batch."""

    name = "inference"
    summary = "(N, C) input, a batch of one, one example's output independent of the others"

    def cases(self) -> list[dict[str, Any]]:
        gamma, beta = np.array([1.5, -0.7, 2.0]), np.array([0.5, 0.0, -1.0])
        mean, var = _running_stats(3, 1)
        x = batch((4, 3), 11)
        other = x.copy()
        other[1:] = batch((3, 3), 12) * 3.0 + 5.0
        common = {"gamma": gamma, "beta": beta, "running_mean": mean, "running_var": var, "eps": None}
        tiny_var = {"gamma": np.ones(2), "beta": np.zeros(2), "running_mean": np.array([1.0, 0.0]),
                    "running_var": np.array([1e-8, 1.0]), "eps": None}
        return [
            {"label": "a (4, 3) batch", "x": x, **common},
            {"label": "the same batch with examples 1-3 replaced", "x": other, "same_first_row_as": "a (4, 3) batch",
             **common},
            {"label": "a batch of one example", "x": x[:1].copy(), **common},
            {"label": "a feature whose running variance is 1e-8", "x": np.array([[1.0 + 1e-4, 2.0], [1.0, -1.0]]),
             **tiny_var},
        ]


@register
class InferenceConvCheck(_InferenceBase):
    """Inference on (N, C, H, W) and with a non-default eps."""

    name = "inference_conv"
    summary = "(N, C, H, W) input, the eps argument, float32 statistics with float64 input"

    def cases(self) -> list[dict[str, Any]]:
        mean, var = _running_stats(3, 2)
        gamma, beta = _params(3, 9)
        return [
            {"label": "a (2, 3, 2, 3) batch", "x": batch((2, 3, 2, 3), 13), "gamma": gamma, "beta": beta,
             "running_mean": mean, "running_var": var, "eps": None},
            {"label": "a (3, 3) batch with eps=0.1", "x": batch((3, 3), 14), "gamma": gamma, "beta": beta,
             "running_mean": mean, "running_var": var, "eps": 0.1},
            {"label": "a (4, 3) float64 batch with float32 running statistics, gamma and beta",
             "x": batch((4, 3), 15), "gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32),
             "running_mean": mean.astype(np.float32), "running_var": var.astype(np.float32), "eps": None},
        ]


# --------------------------------------------------------------------------------------------------- backward


class _BackwardBase(Check):
    subjects = ("batchnorm_forward", "batchnorm_backward")
    probe = staticmethod(probes.backward)
    shapes: tuple[tuple[int, ...], ...] = ()

    #: add a batch whose channel 1 is nearly constant (variance ~1e-6, below eps): only there does eps in the
    #: backward matter, so only there does a backward that drops or misplaces it fail
    nearly_constant: bool = False

    def inputs(self) -> dict[str, Any]:
        cases = []
        for index, shape in enumerate(self.shapes):
            gamma, beta = _params(shape[1], 20 + index)
            dout = case_rng(40 + index).standard_normal(shape)
            cases.append({"label": f"a {shape} batch with a random upstream gradient", "x": batch(shape, 30 + index),
                          "gamma": gamma, "beta": beta, "dout": dout})
        if self.nearly_constant:
            shape = (6, 3)
            x = batch(shape, 60)
            x[:, 1] = 2.0 + 1e-3 * case_rng(61).standard_normal(shape[0])
            gamma, beta = _params(shape[1], 62)
            gamma[1] = 1.5
            cases.append({"label": "a (6, 3) batch whose channel 1 is nearly constant (variance about 1e-6, below "
                                   "eps)", "x": x, "gamma": gamma, "beta": beta,
                          "dout": case_rng(63).standard_normal(shape)})
        return {"cases": cases, "step": STEP}

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        from bnlab.functional import batchnorm_backward, batchnorm_forward

        fname, bname = self.names
        for case, record in zip(inputs["cases"], data):
            label = case["label"]
            if "forward_error" in record:
                raise CheckFailed(f"cannot check {bname}: {fname} failed on {label}: {record['forward_error']}. "
                                  f"Get exercise 1's forward working first.")
            first = record["first"]
            if "error" in first:
                _raise_call_error(bname, label, first["error"])
            grads = first["value"]
            if not (isinstance(grads, list) and len(grads) == 3):
                raise CheckFailed(f"{bname} must return (dx, dgamma, dbeta); on {label} it returned "
                                  f"{describe(grads)}.")
            changed = _changed(case, record["after"])
            if changed:
                raise CheckFailed(f"{bname} changed {' and '.join(changed)} in place on {label} (directly or "
                                  f"through the cache, e.g. `dout *= gamma` or `xhat *= ...` on a cached array): "
                                  f"compute new arrays instead.")
            second = record["second"]
            if "error" in second or any(relative_error(np.asarray(a), np.asarray(b)) > 1e-12
                                        for a, b in zip(grads, second["value"])
                                        if as_array(a) is not None and as_array(b) is not None
                                        and np.shape(a) == np.shape(b)):
                raise CheckFailed(f"calling {bname} twice with the same cache and dout gave different results on "
                                  f"{label}: your backward modifies the cache in place (e.g. `dxhat = cache['xhat']; "
                                  f"dxhat *= ...`). Leave the cache unchanged.")
            _, ref_cache = batchnorm_forward(case["x"], case["gamma"], case["beta"])
            expected = dict(zip(("dx", "dgamma", "dbeta"), batchnorm_backward(case["dout"], ref_cache)))
            actual = dict(zip(("dx", "dgamma", "dbeta"), grads))
            self._judge_param_shapes(bname, label, case, actual, expected)
            problem = array_problem("dx", actual["dx"], expected["dx"], TOL)
            if problem:
                self._explain_dx(bname, fname, label, case, actual["dx"], record, problem)
            for name in ("dgamma", "dbeta"):
                problem = array_problem(name, actual[name], expected[name], TOL)
                if problem:
                    models = backward_param_candidates(case["x"], case["dout"], 1e-5)
                    candidates = {label: values[name] for label, values in models.items()}
                    _raise_mismatch(bname, label, problem, actual[name], candidates)
        return (f"{bname} matches the reference gradients (dx, dgamma, dbeta) on {len(data)} "
                f"{'batch' if len(data) == 1 else 'batches'} with a random upstream gradient.")

    @staticmethod
    def _judge_param_shapes(bname: str, label: str, case: dict[str, Any], actual: dict[str, Any],
                            expected: dict[str, Any]) -> None:
        x = case["x"]
        for name in ("dgamma", "dbeta"):
            value = as_array(actual[name])
            if value is None or value.shape == expected[name].shape:
                continue
            if value.shape == x.shape:
                why = (f"{name} has the shape of x, {tuple(x.shape)}: it is not summed. gamma and beta are shared "
                       f"by every example (and position), so sum over every axis but 1.")
            elif value.size == x.shape[1]:
                why = (f"{name} has shape {tuple(value.shape)}: drop the kept axes so it has gamma's shape "
                       f"({x.shape[1]},) (sum without keepdims, or .reshape(-1)).")
            else:
                summed = _summed_over(value, name, case)
                why = (f"{name} has shape {tuple(value.shape)}, expected ({x.shape[1]},)"
                       + (f": it is summed over axes {summed} only" if summed else "")
                       + f".\n{explain('param_gradient_wrong_axes')}")
            raise CheckFailed(f"{bname} on {label}: {why}")

    @staticmethod
    def _explain_dx(bname: str, fname: str, label: str, case: dict[str, Any], dx: Any, record: dict[str, Any],
                    problem: str) -> None:
        candidates = backward_dx_candidates(case["x"], case["gamma"], case["dout"], 1e-5)
        mistake = closest_mistake(dx, candidates)
        if mistake:
            raise CheckFailed(f"{bname} on {label}: {problem}.\n{explain(mistake)}")
        own = _numeric_dx(record["numeric"], case)
        actual = as_array(dx)
        if own is not None and actual is not None and actual.shape == own.shape:
            error = relative_error(actual, own)
            if error < 1e-5:
                raise CheckFailed(
                    f"{bname} on {label}: {problem}. Yet it agrees with finite differences of your own {fname} "
                    f"(relative error {error:.0e}): a gradient check passes, but the pair is not batch norm. Your "
                    f"forward and backward share a convention that batch norm does not use (e.g. the unbiased "
                    f"variance in both); only reference values catch this. Fix the forward, then the backward.")
            reference_out = _reference_forward(case)
            if array_problem("out", record.get("forward_out"), reference_out, TOL) is not None:
                raise CheckFailed(f"{bname} on {label}: {problem}. Your {fname} does not match the reference on this "
                                  f"batch either (see its own test), and the backward reads its cache: fix the "
                                  f"forward first.")
            raise CheckFailed(f"{bname} on {label}: {problem}. It also disagrees with finite differences of your own "
                              f"{fname} (relative error {error:.1e}): check each step's local derivative, and sum "
                              f"every per-channel gradient over the batch.")
        raise CheckFailed(f"{bname} on {label}: {problem}.")


def _summed_over(value: np.ndarray, name: str, case: dict[str, Any]) -> tuple[int, ...] | None:
    """The axes whose sum of the right summand (dout * xhat for dgamma, dout for dbeta) gives ``value``, if any
    set of axes does (with or without keepdims)."""
    import itertools

    x, dout = case["x"], case["dout"]
    summand = dout * _reference_xhat(case) if name == "dgamma" else dout
    for count in range(x.ndim + 1):
        for axes in itertools.combinations(range(x.ndim), count):
            for keep in (False, True):
                candidate = summand.sum(axis=axes, keepdims=keep)
                if candidate.shape == value.shape and relative_error(value, candidate) <= TOL:
                    return axes
    return None


def _reference_xhat(case: dict[str, Any]) -> np.ndarray:
    from bnlab.functional import batchnorm_forward

    return batchnorm_forward(case["x"], np.ones(case["x"].shape[1]), np.zeros(case["x"].shape[1]))[0]


def _reference_forward(case: dict[str, Any]) -> np.ndarray:
    from bnlab.functional import batchnorm_forward

    return batchnorm_forward(case["x"], case["gamma"], case["beta"])[0]


def _numeric_dx(numeric: Any, case: dict[str, Any]) -> np.ndarray | None:
    """Centred-difference dL/dx of the learner's forward for L = sum(out * dout), computed here."""
    if not isinstance(numeric, dict):
        return None
    plus, minus = as_array(numeric.get("plus")), as_array(numeric.get("minus"))
    if plus is None or minus is None or plus.shape != minus.shape or plus.shape[0] != case["x"].size:
        return None
    axes = tuple(range(1, plus.ndim))
    grads = ((plus - minus) * case["dout"][None]).sum(axis=axes) / (2 * STEP)
    return grads.reshape(case["x"].shape)


@register
class BackwardCheck(_BackwardBase):
    """A backward (staged or fused) against reference gradients on (N, C), with its own forward."""

    name = "backward"
    shapes = ((5, 4),)
    nearly_constant = True


@register
class BackwardConvCheck(_BackwardBase):
    """A backward on (N, C, H, W) and (N, C, L), and on a batch of 2."""

    name = "backward_conv"
    shapes = ((3, 2, 2, 3), (2, 3, 4), (2, 3))
