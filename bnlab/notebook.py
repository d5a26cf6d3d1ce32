"""Set-up and display helpers for the lecture notebooks."""

from __future__ import annotations

import inspect
from typing import Any

import matplotlib as mpl
import numpy as np
import torch


def setup(threads: int = 1) -> None:
    """Make a notebook's numbers reproducible and its figures consistent.

    Pins torch to ``threads`` threads (results and timings then do not depend on the machine's core count),
    prints arrays with 4 significant decimals, and sets the course's figure style.
    """
    torch.set_num_threads(threads)
    np.set_printoptions(precision=4, suppress=True, floatmode="maxprec")
    mpl.rcParams.update({
        "figure.figsize": (8.0, 3.6),
        "figure.dpi": 90,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "legend.frameon": False,
    })


def source_header(obj: Any) -> str:
    """The first line of a :func:`show_source` listing: ``# <file relative to the package root> : <qualname>``."""
    module = inspect.getmodule(obj)
    path = module.__name__.replace(".", "/") + ".py"
    return f"# {path} : {obj.__qualname__}  (the library's current source)"


def show_source(obj: Any) -> Any:
    """Display the source code of a bnlab function or class, highlighted, so a lecture can read the real code.

    The listing starts with :func:`source_header`, which names the file and the object, so a reader can find
    it and ``tests/test_notebooks.py`` can check that every stored listing is still the current source.
    """
    from IPython.display import Code

    return Code(f"{source_header(obj)}\n{inspect.getsource(obj)}", language="python")
