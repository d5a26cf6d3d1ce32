"""The grader's view of the classic mistakes: the catalogue itself lives in :mod:`bnlab.mistakes`.

This module re-exports what the checks use from it, and adds hints for exceptions a learner's code raised.
"""

from __future__ import annotations

from bnlab.mistakes import (
    EXPLANATIONS,
    LAYER_MISTAKES,
    LayerModel,
    backward_dx_candidates,
    backward_param_candidates,
    eval_backward_candidates,
    explain,
    forward_candidates,
    inference_candidates,
)

__all__ = ["EXPLANATIONS", "explain", "forward_candidates", "inference_candidates", "backward_dx_candidates",
           "backward_param_candidates", "eval_backward_candidates", "LayerModel", "LAYER_MISTAKES", "hint_for_error"]


def hint_for_error(error: str) -> str:
    """A hint for an exception a learner's code raised, or "" when the message speaks for itself."""
    hints = [
        ("NotImplementedError", "This is still the exercise's placeholder: replace `raise NotImplementedError()` "
                                "with your code."),
        ("Blocked", "Graded code may not use the course's reference implementation or torch's own batch norm."),
        ("could not be broadcast", "A per-channel statistic has a shape that does not broadcast against the "
                                   "batch: reduce over every axis but 1 and keep the reduced axes "
                                   "(keepdims=True), so mu has shape (1, C) or (1, C, 1, 1)."),
        ("NameError", "A name is not defined where your code runs: did you import numpy as np, and define "
                      "everything in the notebook itself?"),
        ("SystemExit", "Graded code must not end the process: remove sys.exit() / exit()."),
        ("MemoryError", "The code ran out of memory: it is graded with a memory limit."),
        ("TimeLimit", "The code ran past its time limit (an endless loop?)."),
    ]
    return next((f"\n{hint}" for key, hint in hints if key in error), "")
