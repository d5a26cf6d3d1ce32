"""The machinery every check shares: the Check protocol, calling submitted code safely, comparing arrays.

A check has three parts, so that the same check serves a learner's notebook and the batch grader alike:

``inputs()``  (grader side) chooses the data, deterministically;
``probe()``   (submission side) calls the learner's functions on that data and returns only raw results;
``judge()``   (grader side) compares the raw results with reference values and names the likely mistake.

In a notebook all three run in the learner's kernel (:func:`run_in_process`). In ``bnlab grade`` the probe runs
in a sandboxed child process and the results cross back as plain JSON (:mod:`bnlab.grading.wire`), so nothing a
submission does to numpy or torch in its own process can change a verdict.
"""

from __future__ import annotations

import contextlib
import contextvars
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from bnlab.grading import wire
from bnlab.grading.wire import Opaque

__all__ = ["case_rng", "salted",
           "Check", "CaseCheck", "ScriptCheck", "CheckFailed", "TimeLimit", "Blocked", "CHECKS", "register", "call",
           "Call",
           "run_in_process", "as_array", "array_problem", "closest_mistake", "describe_exception"]

CHECKS: dict[str, type[Check]] = {}


_salt: contextvars.ContextVar[int] = contextvars.ContextVar("bnlab_grading_salt", default=0)


def case_rng(seed: int) -> np.random.Generator:
    """The generator a check draws its inputs from. Salt 0 (a learner's notebook, the visible checks): the same
    inputs every time, so the notebook and the grader agree. Under :func:`salted` (hidden checks while
    grading): mixed with a secret drawn per grading run, so no submission can know the inputs in advance (a
    table of precomputed outputs keyed by input earns nothing)."""
    salt = _salt.get()
    return np.random.default_rng(seed if salt == 0 else [seed, salt])


@contextlib.contextmanager
def salted(salt: int) -> Iterator[None]:
    """Draw check inputs with ``salt`` inside the block (0: the fixed inputs)."""
    token = _salt.set(int(salt))
    try:
        yield
    finally:
        _salt.reset(token)


class CheckFailed(AssertionError):
    """A check found a mistake; the message says which one and what to do about it.

    In a notebook, IPython shows only the message (its ``_render_traceback_`` hook), in red, without the
    grading internals' frames: what was expected, what came, the likely mistake and a hint.
    """

    def _render_traceback_(self) -> list[str]:
        lines = str(self).splitlines() or [""]
        return [f"\x1b[1;31m\u2718 check failed:\x1b[0m {lines[0]}", *lines[1:]]


class TimeLimit(BaseException):
    """Raised inside a submission's process when a cell or a check runs past its time limit."""


class Blocked(ImportError):
    """Raised when graded code reaches for something it may not use (the reference answers, torch's own BN)."""


def register(cls: type[Check]) -> type[Check]:
    """Class decorator: make a check available to the grader under ``cls.name``."""
    if cls.name in CHECKS:
        raise ValueError(f"two checks named {cls.name!r}")
    CHECKS[cls.name] = cls
    return cls


class Check:
    """One graded property of a learner's code. Subclasses set ``name`` and implement the three parts.

    Constructor keyword arguments are the options a test cell passes (``checks.choice(a, correct="b")``); they
    stay on the grader's side: the probe sees only ``inputs()``.
    """

    name: ClassVar[str] = ""
    #: what the learner's objects are called, in order, for messages ("batchnorm_forward", ...)
    subjects: ClassVar[tuple[str, ...]] = ()
    needs_torch: ClassVar[bool] = False
    #: True when the learner must write batch norm without torch's own: while grading, torch's normalization
    #: (kernels and Python decompositions) is then blocked in the submission's process (exercise 4). An exercise
    #: that uses ``nn.BatchNorm1d`` legitimately (exercise 5) leaves it False.
    blocks_torch_norm: ClassVar[bool] = False
    #: what the check covers, for its success message
    summary: ClassVar[str] = ""

    def __init__(self, **options: Any) -> None:
        self.options = options
        #: the learner's names for the subjects, as the test cell passes them (for messages)
        self.names: tuple[str, ...] = self.subjects

    def inputs(self) -> dict[str, Any]:
        """Data for the probe (numpy arrays, numbers, lists, dicts), the same on every call with one salt."""
        return {}

    #: mixed into every input a check draws (see :func:`case_rng`); set by the grader for hidden checks
    salt: int = 0

    def frozen_inputs(self) -> dict[str, Any]:
        """:meth:`inputs` drawn once with this check's :attr:`salt`, then kept (probe and judge see the same)."""
        if not hasattr(self, "_frozen"):
            with salted(self.salt):
                self._frozen = self.inputs()
        return self._frozen

    @staticmethod
    def probe(objects: Sequence[Any], inputs: dict[str, Any]) -> Any:
        """Call the learner's objects on ``inputs``; return raw results only (see :func:`call`)."""
        raise NotImplementedError

    def judge(self, inputs: dict[str, Any], data: Any) -> str:
        """Return a one-line success message or raise :class:`CheckFailed` naming the likely mistake."""
        raise NotImplementedError


class CaseCheck(Check):
    """A check whose inputs are a list of cases (dicts of arrays and options) from :meth:`cases`."""

    def cases(self) -> list[dict[str, Any]]:
        """The cases, the same on every call."""
        raise NotImplementedError

    def inputs(self) -> dict[str, Any]:
        return {"cases": self.cases()}


class ScriptCheck(Check):
    """A check whose input is a script of layer operations from :meth:`steps` (see ``layer_script``)."""

    def steps(self) -> list[tuple[Any, ...]]:
        """The script, the same on every call."""
        raise NotImplementedError

    def inputs(self) -> dict[str, Any]:
        return {"steps": self.steps()}


@dataclass
class Call:
    """The outcome of calling submitted code: ``raw`` for further use in the probe, ``record`` for the judge."""

    raw: Any
    record: dict[str, Any]

    @property
    def ok(self) -> bool:
        return "error" not in self.record


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No warnings and no numpy floating-point messages: a graded cell must not write to stderr."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def describe_exception(exc: BaseException) -> str:
    """``"ValueError: message (cell 4, line 7: xc = x - mu)"``: the error and where in the notebook it arose."""
    if isinstance(exc, SystemExit):
        text = f"SystemExit: the code called sys.exit({exc.code!r})"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if len(text) > 400:
        text = text[:400] + " ..."
    where = ""
    # lookup_lines=False: no source file is read (a grading child may not open the grader's); only a notebook
    # cell's line is looked up, from the cells the child registered with linecache
    frames = traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__), lookup_lines=False)
    for frame in reversed(frames):
        if frame.filename.startswith("<cell "):
            line = (frame.line or "").strip()
            where = f" ({frame.filename[1:-1]}, line {frame.lineno}" + (f": {line}" if line else "") + ")"
            break
    return text + where


def call(fn: Any, *args: Any, **kwargs: Any) -> Call:
    """Call submitted code; never raises (except on a time limit or a keyboard interrupt)."""
    try:
        with quiet():
            raw = fn(*args, **kwargs)
    except (TimeLimit, KeyboardInterrupt):
        raise
    except BaseException as exc:  # noqa: BLE001 -- SystemExit from a learner's function is a result too
        return Call(None, {"error": describe_exception(exc)})
    return Call(raw, {"value": wire.to_plain(raw)})


def run_in_process(check: Check, *objects: Any) -> str:
    """Run a check in this process (a learner's notebook, nbgrader): raises CheckFailed or returns the message.

    The probe gets its own copy of the inputs and its results pass through the same conversion as in the
    sandbox, so a verdict here equals the batch grader's.
    """
    check.names = tuple(getattr(obj, "__name__", default) if callable(obj) else default
                        for obj, default in zip(objects, check.subjects)) or check.names
    inputs = check.inputs()
    probe_inputs = wire.loads(wire.dumps(inputs))
    data = check.probe(list(objects), probe_inputs)
    return check.judge(inputs, wire.loads(wire.dumps(data)))


# ------------------------------------------------------------------------------------------ comparing results


def as_array(value: Any) -> np.ndarray | None:
    """A numeric numpy array from a returned value (array, nested list of numbers, number), or None."""
    if isinstance(value, Opaque) or value is None or isinstance(value, str):
        return None
    try:
        array = np.asarray(value, dtype=np.float64) if not isinstance(value, np.ndarray) else value
    except (TypeError, ValueError):
        return None
    return array if array.dtype.kind in "biuf" else None


def describe(value: Any) -> str:
    """A short description of a returned value for messages: ``an array of shape (4, 3)``, ``None``."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, Opaque):
        return f"a {value}"
    if isinstance(value, list):
        return f"a sequence of {len(value)} items"
    return repr(value) if value is None or isinstance(value, (int, float, bool)) else type(value).__name__


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """max|a - b| / max(max|a|, max|b|); inf if either is not finite (same definition as bnlab.gradcheck)."""
    from bnlab.gradcheck import rel_error

    return rel_error(a, b)


def array_problem(name: str, value: Any, expected: np.ndarray, tol: float) -> str | None:
    """None if ``value`` is an array matching ``expected`` to relative error ``tol``; else what is wrong."""
    actual = as_array(value)
    if actual is None:
        return f"{name} should be an array of shape {tuple(expected.shape)}, got {describe(value)}"
    if actual.shape != expected.shape:
        return f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}"
    if not np.all(np.isfinite(actual)):
        return f"{name} contains NaN or inf"
    error = relative_error(actual, expected)
    if error <= tol:
        return None
    index = np.unravel_index(int(np.argmax(np.abs(actual - expected))), expected.shape)
    return (f"{name} differs from the reference (relative error {error:.1e}); e.g. at index "
            f"{tuple(int(i) for i in index)} you have {actual[index]:.6g}, expected {expected[index]:.6g}")


def closest_mistake(value: Any, candidates: dict[str, np.ndarray | None], tol: float = 1e-6) -> str | None:
    """The first candidate label whose array ``value`` reproduces (to relative error ``tol``), else None."""
    actual = as_array(value)
    if actual is None:
        return None
    for label, candidate in candidates.items():
        if candidate is None or candidate.shape != actual.shape or not np.all(np.isfinite(candidate)):
            continue
        if relative_error(actual, candidate) <= tol:
            return label
    return None


def first_error(records: Sequence[dict[str, Any]]) -> str | None:
    """The first ``error`` among probe records, or None."""
    return next((r["error"] for r in records if isinstance(r, dict) and "error" in r), None)
