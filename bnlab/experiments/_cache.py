"""Where experiment runs are looked up before anything trains: memory, shipped package data, the user cache.

One *run* is one seed of one experiment config; its result is a flat ``dict[str, np.ndarray]``. A run's key
hashes the experiment name, its parameters (the config with ``seed`` instead of ``seeds``), the bnlab version,
:data:`SCHEMA` (the layout of the cache itself), the torch version and the data set; the parameters include the
experiment's ``version`` (bumped whenever its code changes what it measures), so a changed library never
answers with stale numbers.

Lookup order, first hit wins:

1. this process's memory;
2. **shipped** results: ``bnlab/experiments/data/<experiment>.json.gz``, written by
   ``bnlab build cache`` for every point of the default grids (a few hundred runs, well under a
   megabyte each), so a fresh clone answers every default slider position without training;
3. the **user cache**: ``$BNLAB_CACHE_DIR`` or ``$XDG_CACHE_HOME/bnlab/experiments`` (default
   ``~/.cache/bnlab/experiments``), one ``.npz`` per run, written after every live run. Safe to delete at any
   time (:func:`clear_user_cache`): it only holds runs that can be recomputed.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import bnlab

__all__ = [
    "CACHE_ENV",
    "SCHEMA",
    "NotCachedError",
    "cache_key",
    "cached_run",
    "clear_user_cache",
    "is_cached",
    "lookup",
    "shipped_path",
    "user_cache_dir",
    "write_shipped",
]

SCHEMA = 1
CACHE_ENV = "BNLAB_CACHE_DIR"
DATASET_ID = "mnist-subset/split0/global"
SHIPPED_DIR = Path(__file__).resolve().parent / "data"

Arrays = dict[str, np.ndarray]

_memory: dict[str, Arrays] = {}
_shipped: dict[str, dict[str, Arrays]] = {}  # experiment -> key -> arrays, loaded once per process


class NotCachedError(LookupError):
    """A run was asked for with ``cached_only=True`` and no cache holds it."""


def _plain(params: Any) -> dict[str, Any]:
    if is_dataclass(params):
        params = asdict(params)
    if not isinstance(params, Mapping):
        raise TypeError(f"run parameters must be a dataclass or a mapping, got {type(params).__name__}")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def cache_key(experiment: str, params: Mapping[str, Any] | Any) -> str:
    """A 20-hex-digit key for one run: experiment, parameters, library/schema/torch versions and data set."""
    payload = {
        "experiment": experiment,
        "params": _plain(params),
        "bnlab": bnlab.__version__,
        "schema": SCHEMA,
        "torch": torch.__version__.split("+")[0],
        "data": DATASET_ID,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def user_cache_dir() -> Path:
    """The on-disk user cache (created lazily; safe to delete)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "bnlab" / "experiments"


def clear_user_cache() -> int:
    """Delete every run in the user cache (and forget the in-memory copies); returns the number of files removed."""
    _memory.clear()
    directory = user_cache_dir()
    removed = 0
    if directory.is_dir():
        for path in directory.glob("*.npz"):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def shipped_path(experiment: str) -> Path:
    return SHIPPED_DIR / f"{experiment}.json.gz"


def _load_shipped(experiment: str) -> dict[str, Arrays]:
    if experiment not in _shipped:
        runs: dict[str, Arrays] = {}
        path = shipped_path(experiment)
        if path.is_file():
            with gzip.open(path, "rt") as handle:
                payload = json.load(handle)
            for run in payload["runs"]:
                runs[run["key"]] = {name: np.asarray(value, dtype=np.float64)
                                    for name, value in run["arrays"].items()}
        _shipped[experiment] = runs
    return _shipped[experiment]


def _user_path(experiment: str, key: str) -> Path:
    return user_cache_dir() / f"{experiment}-{key}.npz"


def lookup(experiment: str, params: Mapping[str, Any] | Any) -> Arrays | None:
    """The cached arrays of one run, or None if no cache holds it (nothing is computed)."""
    key = cache_key(experiment, params)
    if key in _memory:
        return _memory[key]
    found = _load_shipped(experiment).get(key)
    if found is None:
        path = _user_path(experiment, key)
        if path.is_file():
            try:
                with np.load(path) as stored:
                    found = {name: stored[name] for name in stored.files}
            except (OSError, ValueError):  # a half-written or corrupt file: recompute it
                found = None
    if found is not None:
        _memory[key] = found
    return found


def is_cached(experiment: str, params: Mapping[str, Any] | Any) -> bool:
    return lookup(experiment, params) is not None


def _write_user(experiment: str, key: str, arrays: Arrays) -> None:
    directory = user_cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as handle:
            np.savez(handle, **arrays)
        os.replace(handle.name, _user_path(experiment, key))
    except OSError:  # a read-only home still runs experiments, it just does not remember them
        pass


def cached_run(experiment: str, params: Mapping[str, Any] | Any, compute: Callable[[], Arrays], *,
               cached_only: bool = False) -> Arrays:
    """The arrays of one run from the first cache that holds it, else ``compute()`` (then stored in the caches).

    Raises:
        NotCachedError: nothing cached and ``cached_only`` is true.
    """
    found = lookup(experiment, params)
    if found is not None:
        return found
    if cached_only:
        raise NotCachedError(f"{experiment} run {_plain(params)} is not cached; run it live (cached_only=False)")
    arrays = {name: np.asarray(value, dtype=np.float64) for name, value in compute().items()}
    key = cache_key(experiment, params)
    _memory[key] = arrays
    _write_user(experiment, key, arrays)
    return arrays


def write_shipped(experiment: str, runs: Iterable[tuple[Mapping[str, Any] | Any, Arrays]],
                  path: Path | None = None) -> Path:
    """Write ``(params, arrays)`` pairs as the shipped results of ``experiment`` (used by the build tool).

    Floats are stored with 6 significant digits, far below the run-to-run tolerance the tests allow.
    """
    def rounded(value: np.ndarray) -> Any:
        value = np.asarray(value, dtype=np.float64)
        out = np.vectorize(lambda v: float(f"{v:.6g}") if np.isfinite(v) else None, otypes=[object])(value)
        return out.tolist() if value.ndim else (float(f"{float(value):.6g}") if np.isfinite(value) else None)

    payload = {"experiment": experiment, "bnlab": bnlab.__version__, "schema": SCHEMA,
               "torch": torch.__version__.split("+")[0], "data": DATASET_ID, "runs": []}
    for params, arrays in runs:
        payload["runs"].append({"key": cache_key(experiment, params), "params": _plain(params),
                                "arrays": {name: rounded(value) for name, value in arrays.items()}})
    path = path or shipped_path(experiment)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, separators=(",", ":")).encode()
    with path.open("wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9,
                                               mtime=0) as handle:
        handle.write(text)  # no file name, mtime 0: rebuilding the same numbers gives the same bytes
    _shipped.pop(experiment, None)
    return path


def shipped_runs(experiment: str) -> list[dict[str, Any]]:
    """The raw shipped records of ``experiment`` (key, params, arrays as lists); [] if none are shipped."""
    path = shipped_path(experiment)
    if not path.is_file():
        return []
    with gzip.open(path, "rt") as handle:
        return json.load(handle)["runs"]
