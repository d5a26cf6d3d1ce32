"""The running-statistics update rules of the frameworks and the paper, side by side.

* PyTorch: ``running = (1 - momentum) * running + momentum * batch_stat``, momentum 0.1 by default; the weight
  of the *newest* batch.
* Keras / TensorFlow: ``moving = momentum * moving + (1 - momentum) * batch_stat``, momentum 0.99 by default;
  the weight of the *old* average. Keras momentum k is PyTorch momentum 1 - k.
* The paper (Algorithm 2): the population statistics are plain averages over training batches, every batch with
  the same weight -- PyTorch's ``momentum=None``.
"""

from __future__ import annotations

import numpy as np

CONVENTIONS = ("pytorch", "keras")


def ema_update(running: np.ndarray, batch_stat: np.ndarray, momentum: float, convention: str = "pytorch") -> np.ndarray:
    """One exponential-moving-average step of a running statistic under a framework's momentum convention.

    Args:
        running: the current running value(s), any shape.
        batch_stat: this batch's statistic, same shape (for the variance: the unbiased batch variance).
        momentum: in [0, 1], meaning what ``convention`` says it means.
        convention: "pytorch" (momentum weights the new batch) or "keras" (momentum weights the old average).

    Returns:
        The updated running value(s).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
    weight_of_new = momentum if convention == "pytorch" else 1.0 - momentum
    return (1.0 - weight_of_new) * np.asarray(running) + weight_of_new * np.asarray(batch_stat)


def pytorch_momentum(keras_momentum: float) -> float:
    """The PyTorch momentum equivalent to a Keras/TensorFlow one: 1 - keras_momentum (0.99 -> 0.01)."""
    return 1.0 - keras_momentum
