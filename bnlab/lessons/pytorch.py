"""Lecture 6's computations: the numbers behind its checked cells on gradients, memory, speed and conventions.

* :func:`jacobian_error`: the largest difference between the Jacobian autograd builds from a function's
  backward and a centred finite-difference Jacobian of its forward (a gradient check that prints a number).
* :func:`saved_tensors`: what autograd keeps for backward while a forward runs, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` (tensors that share storage counted once).
* :func:`batch_sized_traffic`: how many times a forward + backward reads or writes a tensor of the input's size,
  and how many tensor operations it dispatches, counted op by op.
* :func:`time_against_copy_study`: forward + backward of ``bnlab.nn``, of any further implementations a lecture
  passes in (the notebook's own ``Function``, its operations called without autograd), and of torch's kernel
  (NCHW and channels_last), timed with a copy of the batch in the same run, so that times read as
  pass-equivalents.
* :func:`convention_sheet`: the running-statistics conventions of PyTorch, Keras 3, CS231n, d2l and the paper,
  rendered from :data:`bnlab.running_stats.CONVENTIONS` so the table cannot drift from the code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bnlab._validation import check_float, check_int
from bnlab.running_stats import CONVENTIONS
from bnlab.timing import CopyControlled, time_against_copy

__all__ = ["CHANNEL_AXIS", "PAPER", "ForwardBackward", "SavedTensors", "Traffic", "batch_sized_traffic",
           "convention_sheet", "jacobian_error", "saved_tensors", "time_against_copy_study"]


# ------------------------------------------------------------------------------------------- gradient check


def jacobian_error(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], step: float = 1e-3) -> float:
    """max |J_analytic - J_numerical| over every input of ``fn``, in ``fn``'s units.

    Args:
        fn: maps the tensors ``inputs`` to one output tensor; its backward is what is checked.
        inputs: float64 tensors (any shapes), the point at which to differentiate.
        step: the finite-difference step h. The centred difference errs by O(h^2) (truncation) plus
            O(float eps / h) (rounding): at h = 1e-3 on batch norm the first dominates, so the result does not
            depend on the last bits, and a correct backward shows it by shrinking 100x when h shrinks 10x.

    Returns:
        The largest absolute difference between ``torch.autograd.functional.jacobian(fn, inputs)`` (built from
        fn's backward, one vector-Jacobian product per output entry) and the centred differences
        (fn(x + h e_i) - fn(x - h e_i)) / 2h, one pair of forward calls per input entry.
    """
    inputs = tuple(t.detach() for t in inputs)
    for t in inputs:
        if t.dtype != torch.float64:
            raise TypeError(f"jacobian_error needs float64 inputs (float32 differences are too coarse), "
                            f"got {t.dtype}")
    step = check_float(step, "step", 0.0, inclusive=False)
    analytic = torch.autograd.functional.jacobian(fn, inputs)
    worst = 0.0
    with torch.no_grad():
        for k, tensor in enumerate(inputs):
            columns = []
            for i in range(tensor.numel()):
                nudge = torch.zeros(tensor.numel(), dtype=tensor.dtype)
                nudge[i] = step
                nudge = nudge.view(tensor.shape)
                plus = fn(*inputs[:k], tensor + nudge, *inputs[k + 1:])
                minus = fn(*inputs[:k], tensor - nudge, *inputs[k + 1:])
                columns.append(((plus - minus) / (2 * step)).reshape(-1))
            numerical = torch.stack(columns, dim=1)  # (output entries, input entries)
            worst = max(worst, (analytic[k].reshape(numerical.shape) - numerical).abs().max().item())
    return worst


# -------------------------------------------------------------------------------------- saved for backward


@dataclass(frozen=True)
class SavedTensors:
    """The distinct storages autograd keeps for backward after one forward.

    Attributes:
        shapes: shape of the (first) saved tensor on each distinct storage, in the order first saved.
        nbytes: bytes of each of those storages (the memory the graph keeps alive).
        input_nbytes: bytes of the input ``x`` (the unit for :meth:`times_input`).
        batch_numel: number of elements of ``x``.
    """

    shapes: tuple[tuple[int, ...], ...]
    nbytes: tuple[int, ...]
    input_nbytes: int
    batch_numel: int

    @property
    def total_bytes(self) -> int:
        """Bytes kept alive for backward, every storage counted once."""
        return sum(self.nbytes)

    @property
    def batch_sized(self) -> int:
        """How many of the saved storages hold as many elements as x (the ones that cost memory)."""
        return sum(math.prod(shape) == self.batch_numel for shape in self.shapes)

    @property
    def mib(self) -> float:
        """total_bytes in MiB (2**20 bytes)."""
        return self.total_bytes / 2**20

    @property
    def times_input(self) -> float:
        """total_bytes as a multiple of the input's size."""
        return self.total_bytes / self.input_nbytes


def saved_tensors(fn: Callable[..., torch.Tensor], x: torch.Tensor, *others: torch.Tensor) -> SavedTensors:
    """Run ``fn(x, *others)`` once and count what autograd saves for its backward.

    A ``torch.autograd.graph.saved_tensors_hooks`` pack hook sees every tensor a graph node (or an
    ``autograd.Function``'s ``save_for_backward``) saves, inputs included: if ``x`` itself is saved it counts,
    because saving it keeps it alive until backward. Tensors sharing one storage (x and a view of it, or one
    intermediate saved by two nodes) are counted once, by ``untyped_storage().data_ptr()``.

    Args:
        fn: the forward to inspect, returning one tensor.
        x: the batch, (N, C, ...); it and ``others`` should require grad where gradients are wanted (a node
            saves only what its backward needs for the inputs that require grad).
        others: further inputs (gamma, beta, ...).

    Returns:
        A :class:`SavedTensors`; nothing is run backward.
    """
    seen: dict[int, tuple[tuple[int, ...], int]] = {}
    keep = []  # hold the saved tensors so no storage is freed (and its address reused) while counting

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen.setdefault(storage.data_ptr(), (tuple(tensor.shape), storage.nbytes()))
        keep.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = fn(x, *others)
    del out
    keep.clear()
    return SavedTensors(tuple(shape for shape, _ in seen.values()), tuple(n for _, n in seen.values()),
                        x.numel() * x.element_size(), x.numel())


# ------------------------------------------------------------------------------------------ memory traffic


@dataclass(frozen=True)
class Traffic:
    """Tensor operations and batch-sized memory accesses of one forward + backward.

    Attributes:
        ops: aten operations dispatched, views and allocations excluded (each costs a fixed per-call overhead).
        reads, writes: operands / results with as many elements as the input (each is a pass over memory of
            the input's size, assuming an element-wise or reduction kernel touches each operand once).
        names: the counted operations in order, e.g. ``("mean.dim", "sub.Tensor", ...)``.
        per_op: ``(name, reads, writes)`` of each counted operation, in the same order.
    """

    ops: int
    reads: int
    writes: int
    names: tuple[str, ...]
    per_op: tuple[tuple[str, int, int], ...] = ()

    @property
    def accesses(self) -> int:
        """reads + writes."""
        return self.reads + self.writes


class _CountOps(TorchDispatchMode):
    """Record every aten operation that computes (not views, not bare allocations) and its batch-sized operands."""

    def __init__(self, batch_numel: int) -> None:
        super().__init__()
        self.batch_numel = batch_numel
        self.names: list[str] = []
        self.per_op: list[tuple[str, int, int]] = []
        self.reads = 0
        self.writes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        name = func.name().split("::")[-1]
        if func.is_view or name.startswith("empty"):
            return result

        def batch_sized(values) -> int:
            flat = values if isinstance(values, (list, tuple)) else [values]
            return sum(isinstance(v, torch.Tensor) and v.numel() == self.batch_numel for v in flat)

        reads, writes = batch_sized(list(args) + list((kwargs or {}).values())), batch_sized(result)
        self.names.append(name)
        self.per_op.append((name, reads, writes))
        self.reads += reads
        self.writes += writes
        return result


def batch_sized_traffic(fn: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor, seed: int = 0) -> Traffic:
    """Count the operations and batch-sized reads/writes of ``fn(x, weight, bias)`` forward + backward.

    The backward is ``torch.autograd.grad`` with a random upstream gradient for x, weight and bias. Every aten
    operation is seen by a ``TorchDispatchMode`` (``torch.utils._python_dispatch``, the mechanism behind torch's
    own ``FlopCounterMode``). For a chain of element-wise ops and reductions, reads + writes is the number of
    passes over memory of x's size. A fused kernel (torch's ``native_batch_norm``) counts as one op with a few
    operands, but may read its input more than once inside: do not read its count as its traffic.

    Args:
        fn: ``fn(x, weight, bias) -> out``, out shaped like x.
        x: the batch (N, C, ...), leaf tensor; weight, bias: (C,) leaf tensors.
        seed: for the upstream gradient.
    """
    generator = torch.Generator().manual_seed(seed)
    upstream = torch.randn(x.shape, generator=generator, dtype=x.dtype)
    inputs = [t.detach().requires_grad_() for t in (x, weight, bias)]
    with _CountOps(x.numel()) as counter:
        out = fn(*inputs)
        torch.autograd.grad(out, inputs, upstream, allow_unused=True)
    return Traffic(len(counter.names), counter.reads, counter.writes, tuple(counter.names), tuple(counter.per_op))


# ------------------------------------------------------------------------------------------------- timing


def _forward_backward(function: Callable[..., torch.Tensor], x: torch.Tensor, weight: torch.Tensor,
                      bias: torch.Tensor, upstream: torch.Tensor) -> Callable[[], object]:
    """A function running ``function(x, None, None, weight, bias, training=True)`` and its backward."""
    x = x.detach().requires_grad_()

    def run():
        out = function(x, None, None, weight, bias, training=True)
        return torch.autograd.grad(out, (x, weight, bias), upstream)
    return run


# An implementation timed by :func:`time_against_copy_study`: ``run(x, weight, bias, upstream)`` computes one
# training-mode forward of x (N, C, ...) with weight and bias (C,) and its backward for the upstream gradient.
ForwardBackward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], object]


def _bound(run: ForwardBackward, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
           upstream: torch.Tensor) -> Callable[[], object]:
    """``run`` with its four arguments fixed: a function of no arguments to time."""
    return lambda: run(x, weight, bias, upstream)


def _torch_implementations(shape: tuple[int, ...], seed: int,
                           extra: Mapping[str, ForwardBackward]) -> tuple[torch.Tensor, dict]:
    """The float32 batch of ``shape`` and the timed functions of :func:`time_against_copy_study` on it."""
    import torch.nn.functional as F

    from bnlab.nn import batch_norm

    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator)
    weight = (torch.rand(shape[1], generator=generator) + 0.5).requires_grad_()
    bias = torch.randn(shape[1], generator=generator).requires_grad_()
    upstream = torch.randn(shape, generator=generator)
    functions = {"bnlab.nn": _forward_backward(batch_norm, x, weight, bias, upstream)}
    for name, run in extra.items():
        functions[name] = _bound(run, x.detach().requires_grad_(), weight, bias, upstream)
    functions["torch native"] = _forward_backward(F.batch_norm, x, weight, bias, upstream)
    if len(shape) == 4:
        last = torch.channels_last
        functions["torch native, channels_last"] = _forward_backward(
            F.batch_norm, x.contiguous(memory_format=last), weight, bias, upstream.contiguous(memory_format=last))
    tiny = torch.ones(1)
    functions["one tiny tensor op"] = lambda: tiny * 2
    return x, functions


def time_against_copy_study(shapes: Sequence[tuple[int, ...]] = ((128, 100), (256, 1024), (64, 64, 32, 32)),
                            repeats: int = 5, rounds: int = 3, seed: int = 0,
                            extra: Mapping[str, ForwardBackward] | None = None
                            ) -> dict[tuple[int, ...], CopyControlled]:
    """Forward + backward of ``bnlab.nn.batch_norm``, of ``extra`` and of torch's kernel, timed against a copy.

    float32, training mode, weight and bias requiring grad, gradients by ``torch.autograd.grad`` with a random
    upstream gradient, at the current torch thread count. Per shape the names are ``"bnlab.nn"``, then the names
    of ``extra`` (each called as ``run(x, weight, bias, upstream)`` with x requiring grad: it must run one
    forward and its backward), ``"torch native"`` (the input as given, NCHW for images), for 4-D shapes
    ``"torch native, channels_last"`` (the same batch and upstream gradient stored channels last), and
    ``"one tiny tensor op"`` (multiplying a one-element tensor by 2: the fixed cost of dispatching any
    operation).

    Returns:
        ``{shape: CopyControlled}`` (:class:`bnlab.timing.CopyControlled`): machine- and load-dependent, show it,
        never check it.
    """
    repeats, rounds = check_int(repeats, "repeats"), check_int(rounds, "rounds")
    extra = dict(extra or {})
    reserved = {"bnlab.nn", "torch native", "torch native, channels_last", "one tiny tensor op", "copy"}
    if reserved & set(extra):
        raise ValueError(f"extra implementations need names of their own; {sorted(reserved & set(extra))} "
                         f"are taken by the study")
    for name, run in extra.items():
        if not callable(run):
            raise TypeError(f"extra[{name!r}] must be a function run(x, weight, bias, upstream), got "
                            f"{type(run).__name__}")
    results = {}
    for shape in shapes:
        shape = tuple(check_int(n, "shape entry") for n in shape)
        if len(shape) < 2:
            raise ValueError(f"each shape must be (N, C) or (N, C, *spatial), got {shape!r}")
        x, functions = _torch_implementations(shape, seed, extra)
        results[shape] = time_against_copy(functions, x, repeats, rounds)
    return results


# ---------------------------------------------------------------------------------------- convention sheet

PAPER = {
    "name": "Ioffe & Szegedy 2015 (the paper)",
    "momentum": "none",
    "newest": "no running average: after training, equal weights",
    "variance": "unbiased",
    "eps": "not given",
    "initial_var": "-",
}

# Which axis holds the channels (the statistics are per channel, reduced over every other axis).
CHANNEL_AXIS: dict[str, str] = {
    "pytorch": "dim 1: (N, C), (N, C, L), (N, C, H, W)",
    "keras": "axis=-1, the last: (N, C), (N, H, W, C)",
    "cs231n": "last for (N, D); spatial_batchnorm_forward takes (N, C, H, W)",
    "d2l": "dim 1, as PyTorch",
    "paper": "per activation; per feature map for convolutions",
}


def convention_sheet() -> str:
    """The conventions table as markdown, one row per code base.

    Rows come from :data:`bnlab.running_stats.CONVENTIONS` (PyTorch, Keras 3, CS231n, d2l) plus :data:`PAPER`.
    Columns: the default momentum in the code's own meaning, w (the weight of the newest batch in the running
    average that momentum means there), the batch variance fed to the running variance, eps, the running
    variance before any batch, and the channel axis (:data:`CHANNEL_AXIS`). Each convention's source is in
    ``CONVENTIONS[name].source`` (lecture 5's table cites them).
    """
    rows = []
    for key, conv in CONVENTIONS.items():
        meaning = "= momentum" if conv.momentum_is == "new" else "= 1 - momentum"
        rows.append({"key": key, "name": conv.name, "momentum": f"{conv.momentum:g}",
                     "newest": f"{conv.weight_of_new():.2g} {meaning}", "variance": conv.variance,
                     "eps": f"{conv.eps:g}", "initial_var": f"{conv.initial_var:g}"})
    rows.append({"key": "paper", **PAPER})
    lines = [("| code | momentum | w, weight of the newest batch | running var gets | eps | running var at start | "
              "channel axis |"),
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['momentum']} | {row['newest']} | {row['variance']} | "
                     f"{row['eps']} | {row['initial_var']} | {CHANNEL_AXIS.get(row['key'], '?')} |")
    return "\n".join(lines)
