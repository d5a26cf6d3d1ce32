"""Checks for answers a learner enters by hand: derivation checkpoints (numbers) and multiple choice.

The checkpoints use one tiny batch, :data:`TINY` (3 examples, 2 features), which the exercise notebook shows.
Reference numbers are computed from it on the grader's side with :mod:`bnlab.functional`; the correct
multiple-choice letters live only in the hidden part of the master's test cells, never in this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bnlab.grading import probes
from bnlab.grading.core import Check, CheckFailed, as_array, describe, register
from bnlab.grading.diagnoses import EXPLANATIONS

__all__ = ["TINY", "tiny_reference", "CheckpointCheck", "JacobianCheck", "ChoiceCheck"]

#: the tiny example of exercise 2 (eps = 1e-5)
TINY = {
    "x": np.array([[1.0, 4.0], [3.0, 0.0], [8.0, 2.0]]),
    "gamma": np.array([3.0, -1.0]),
    "beta": np.array([0.5, 0.0]),
    "dout": np.array([[1.0, 2.0], [-1.0, 0.0], [2.0, -1.0]]),
}
EPS = 1e-5
RTOL, ATOL = 2e-3, 2e-4  # hand-entered numbers: four significant digits are enough


def tiny_reference(unbiased: bool = False, use_gamma: bool = True) -> dict[str, np.ndarray]:
    """dL/dvar, dL/dmu (per feature) and feature 0's Jacobian dy_i/dx_j for :data:`TINY`."""
    x, dout = TINY["x"], TINY["dout"]
    gamma = TINY["gamma"] if use_gamma else np.ones(2)
    m = x.shape[0]
    xc = x - x.mean(axis=0)
    var = (xc**2).sum(axis=0) / (m - 1 if unbiased else m)
    std = np.sqrt(var + EPS)
    dxhat = dout * gamma
    dvar = (dxhat * xc).sum(axis=0) * -0.5 * std**-3
    dmu = -(dxhat / std).sum(axis=0) + dvar * (-2.0 / m) * xc.sum(axis=0)
    xhat = xc[:, 0] / std[0]
    jacobian = gamma[0] / (m * std[0]) * (m * np.eye(m) - np.ones((m, m)) - np.outer(xhat, xhat))
    return {"dvar": dvar, "dmu": dmu, "jacobian": jacobian}


def _close(actual: np.ndarray, expected: np.ndarray) -> bool:
    return actual.shape == expected.shape and bool(np.allclose(actual, expected, rtol=RTOL, atol=ATOL))


def _numbers(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    actual = as_array(value)
    if actual is None:
        raise CheckFailed(f"{name} should hold numbers (an array or a list of shape {shape}), got {describe(value)}.")
    if actual.shape != shape:
        raise CheckFailed(f"{name} should have shape {shape} (one value per feature / entry), got {actual.shape}.")
    if not np.all(np.isfinite(actual)):
        raise CheckFailed(f"{name} contains NaN or inf.")
    return actual.astype(np.float64)


def _match_hint(actual: np.ndarray, candidates: dict[str, np.ndarray], messages: dict[str, str]) -> str:
    label = next((k for k, v in candidates.items() if _close(actual, v)), None)
    return f"\nLikely mistake -- {messages[label]}" if label else ""


class _ValueCheck(Check):
    """Probe: hand back the values of the learner's variables."""

    probe = staticmethod(probes.values)


@register
class CheckpointCheck(_ValueCheck):
    """dL/dvar and dL/dmu of the tiny example, both features."""

    name = "checkpoint"
    subjects = ("dL_dvar", "dL_dmu")

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        ref = tiny_reference()
        messages = {
            "gamma": "gamma is missing: the gradient reaching xhat is dL/dxhat = dout * gamma, and both dL/dvar "
                     "and dL/dmu start from it.",
            "sign": "the sign is flipped: d(1/sqrt(v))/dv = -1/2 v^(-3/2), and d xc / d mu = -1.",
            "half": "the factor -1/2 from differentiating (var + eps)^(-1/2) is missing.",
            "power": "the power is wrong: d/dvar (var + eps)^(-1/2) = -1/2 (var + eps)^(-3/2), not ^(-1/2).",
            "unbiased": "you used the unbiased variance (divide by m - 1); the training forward divides by m.",
            "mean": "you averaged instead of summing: mu is used by every example, so dL/dmu sums their "
                    "contributions.",
        }
        dvar = _numbers(self.names[0], data[0], (2,))
        dmu = _numbers(self.names[1], data[1], (2,))
        no_gamma, unbiased = tiny_reference(use_gamma=False), tiny_reference(unbiased=True)
        x = TINY["x"]
        var = x.var(axis=0) + EPS
        if not _close(dvar, ref["dvar"]):
            hint = _match_hint(dvar, {"gamma": no_gamma["dvar"], "sign": -ref["dvar"], "half": -2 * ref["dvar"],
                                      "power": ref["dvar"] * var, "unbiased": unbiased["dvar"]}, messages)
            raise CheckFailed(f"{self.names[0]} = {np.round(dvar, 4)} is not dL/dvar for the tiny example "
                              f"(check feature by feature; 4 significant digits are enough).{hint}")
        if not _close(dmu, ref["dmu"]):
            hint = _match_hint(dmu, {"gamma": no_gamma["dmu"], "sign": -ref["dmu"], "mean": ref["dmu"] / 3,
                                     "unbiased": unbiased["dmu"]}, messages)
            raise CheckFailed(f"{self.names[1]} = {np.round(dmu, 4)} is not dL/dmu for the tiny example.{hint}")
        return "Checkpoint passed: dL/dvar and dL/dmu are right for both features."


@register
class JacobianCheck(_ValueCheck):
    """The 3 x 3 Jacobian dy_i/dx_j of feature 0 of the tiny example."""

    name = "jacobian"
    subjects = ("J",)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        ref = tiny_reference()["jacobian"]
        J = _numbers(self.names[0], data[0], (3, 3))
        if _close(J, ref):
            return "Checkpoint passed: the Jacobian is right (note that it is symmetric and its rows sum to 0)."
        gamma, x = TINY["gamma"][0], TINY["x"][:, 0]
        std = np.sqrt(x.var() + EPS)
        xhat = (x - x.mean()) / std
        candidates = {
            "constant_statistics": gamma / std * np.eye(3),
            "mean": gamma / (3 * std) * (3 * np.eye(3) - np.outer(xhat, xhat)),
            "variance": gamma / (3 * std) * (3 * np.eye(3) - np.ones((3, 3))),
            "gamma": ref / gamma,
            "unbiased": tiny_reference(unbiased=True)["jacobian"],
        }
        messages = {
            "constant_statistics": EXPLANATIONS["constant_statistics"] + " The Jacobian is then diagonal; the "
                                   "true one has off-diagonal entries: every y_i depends on every x_j.",
            "mean": "the term from the mean is missing: d mu / d x_j = 1/m contributes -1/m to every entry.",
            "variance": "the term from the variance is missing: it contributes -xhat_i * xhat_j / m.",
            "gamma": "gamma is missing: y = gamma * xhat + beta, so every entry carries a factor gamma.",
            "unbiased": EXPLANATIONS["unbiased_variance"],
        }
        hint = _match_hint(J, candidates, messages)
        if not hint and _close(J.T, ref):
            hint = "\nLikely mistake -- rows and columns are swapped: J[i, j] = dy_i / dx_j."
        raise CheckFailed(f"{self.names[0]} is not the Jacobian dy_i/dx_j of feature 0 (largest difference "
                          f"{np.abs(J - ref).max():.3g}).{hint}")


@register
class ChoiceCheck(_ValueCheck):
    """A multiple-choice answer: a letter among ``options``; right if it equals ``correct`` (hidden)."""

    name = "choice"
    subjects = ("answer",)

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        options = str(self.options.get("options", "abcd"))
        if not isinstance(data, list) or len(data) != 1:
            raise CheckFailed("the grading probe sent back something other than one answer")
        value = data[0]
        name = self.names[0]
        letter = value.strip().lower() if isinstance(value, str) else None
        if letter is None or len(letter) != 1 or letter not in options:  # one letter: "" and "abcd" are not
            listed = ", ".join(repr(o) for o in options)
            raise CheckFailed(f"{name} should be one of the letters {listed} (a string), got {describe(value)}.")
        correct = self.options.get("correct")
        if correct is None:
            return f"{name} = {value.strip().lower()!r} is a valid choice (it is marked when the exercise is graded)."
        if value.strip().lower() != str(correct).lower():
            why = self.options.get("why", "")
            raise CheckFailed(f"{name}: {value.strip().lower()!r} is not the right answer."
                              + (f" {why}" if why else ""))
        return f"{name}: right."
