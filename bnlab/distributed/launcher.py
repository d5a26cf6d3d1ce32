"""Run a library function on N local CPU processes joined by ``torch.distributed`` (gloo), and always end them.

A :class:`ProcessGroupPool` starts ``world_size`` processes once and keeps them (starting one costs an
interpreter and an ``import torch``, a few seconds), so a notebook pays that once and then runs
many small functions on every rank::

    with ProcessGroupPool(2) as pool:                           # 2 processes, ranks 0 and 1
        results = pool.run(local_statistics, x, (32, 32))       # [rank 0's return value, rank 1's]

How it is wired:

* **Spawn, not fork.** The processes are started with the ``spawn`` method: a fresh interpreter each, which is
  safe from a Jupyter kernel (forking a process with threads and an initialized torch is not). A spawned
  process cannot see functions defined in the notebook, so the function given to :meth:`ProcessGroupPool.run`
  must be importable, defined in a module (``bnlab.distributed.workers`` holds the course's); a function from
  ``__main__`` is refused with a clear error before anything is sent. In a plain script (not a notebook), the
  code that creates the pool must sit under ``if __name__ == "__main__":``: a spawned process imports the
  script's main module, and without the guard it would try to start a pool of its own (multiprocessing stops it
  with "An attempt has been made to start a new process before the current process has finished its
  bootstrapping phase").
* **Rendezvous.** The pool's process binds a ``torch.distributed.TCPStore`` to 127.0.0.1, port 0: the
  operating system picks a free port and the store keeps it bound for the pool's lifetime, so no other program
  can take it between choosing and using it. Each rank connects to that store (``MASTER_ADDR=127.0.0.1`` and
  ``MASTER_PORT`` are set in its environment too) and calls ``init_process_group("gloo", rank, world_size)``.
* **Tasks and results** travel as ordinary pickles (bytes) through one queue per rank and one shared result
  queue; tensors come back as ordinary tensors, never as shared-memory handles.
* **Every rank runs the same call** ``fn(*args, **kwargs)``; a function reads its rank with
  ``torch.distributed.get_rank()`` and takes its own share of the arguments.

The processes always end:

* ``close()`` (also on leaving the ``with`` block, on garbage collection and at interpreter exit) asks each rank
  to leave the process group and exit, then terminates (SIGTERM) and kills (SIGKILL) what is still there.
* A rank that raises: the pool is closed at once (the other ranks may be blocked in a collective waiting for
  it) and :class:`WorkerError` names the rank, its exception and its traceback.
* A rank that does not answer within ``timeout`` seconds (a hang, a deadlock): the pool is closed and
  :class:`WorkerTimeout` names the ranks that did not answer. A rank that dies without answering (a crash)
  raises :class:`WorkerError` with its exit code.
* KeyboardInterrupt (Jupyter's interrupt button) while waiting: the pool is closed, then the interrupt goes on.
  The ranks ignore SIGINT themselves, so an interrupt sent to the whole process group cannot leave half of
  them in a collective.
* If the pool's own process dies (a killed kernel), each rank notices within a second (it watches the parent's
  sentinel in a background thread) and exits: no orphans.

After a failure the pool cannot be used again (:meth:`ProcessGroupPool.run` raises :class:`PoolClosedError`
saying why); start a new one.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Self

from bnlab._validation import check_float, check_int

__all__ = ["PoolClosedError", "ProcessGroupPool", "WorkerError", "WorkerTimeout", "process_running",
           "run_distributed"]

HOST = "127.0.0.1"
_POLL_S = 0.05  # how often the waiting parent checks that every rank is still alive
_STOP_GRACE_S = 3.0  # how long close() lets ranks leave the group politely before SIGTERM


class WorkerError(RuntimeError):
    """A rank raised (or died) while running a task; the pool has been closed.

    Attributes:
        rank: the rank that failed first.
        exc_type: the name of its exception class (``"ValueError"``), or ``"exit"`` for a rank that died.
        exc_message: the exception's message (or the exit code).
        remote_traceback: the rank's formatted traceback ("" for a rank that died).
        function: the qualified name of the function that was running.
    """

    def __init__(self, rank: int, exc_type: str, exc_message: str, remote_traceback: str, function: str):
        self.rank, self.exc_type, self.exc_message = rank, exc_type, exc_message
        self.remote_traceback, self.function = remote_traceback, function
        detail = f"\n\n--- traceback on rank {rank} ---\n{remote_traceback}" if remote_traceback else ""
        super().__init__(f"rank {rank} failed in {function}: {exc_type}: {exc_message}; every process of the "
                         f"pool has been ended{detail}")


class WorkerTimeout(TimeoutError):
    """Some ranks did not answer in time; the pool has been closed. ``ranks``: those that did not answer."""

    def __init__(self, ranks: Sequence[int], seconds: float, function: str):
        self.ranks, self.seconds, self.function = tuple(ranks), seconds, function
        listed = ", ".join(str(r) for r in self.ranks)
        super().__init__(f"rank(s) {listed} did not finish {function} within {seconds:g} s (a hang, or a "
                         f"collective that a rank never joined); every process of the pool has been ended")


class PoolClosedError(RuntimeError):
    """:meth:`ProcessGroupPool.run` on a pool that was closed (by ``close()`` or by an earlier failure)."""


def process_running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended: a zombie (ended, not yet reaped by its parent) counts as
    ended. Reads ``/proc/<pid>/stat`` on Linux; elsewhere probes with signal 0 (which cannot see zombies)."""
    pid = check_int(pid, "pid", 1)
    if os.path.isdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]  # the field after "(command name)"
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return False
        return state not in ("Z", "X", "x")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------- the rank's side


def _exit_when_parent_dies() -> None:
    """Start a daemon thread that ends this process as soon as its parent process is gone."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="bnlab-parent-watch", daemon=True).start()


def _resolve(module: str, qualname: str) -> Callable[..., Any]:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _serve(rank: int, world_size: int, port: int, tasks: Any, results: Any, threads: int,
           collective_timeout: float) -> None:
    """The loop each rank runs: join the process group, then run tasks until told to stop (None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what an interrupt ends
    _exit_when_parent_dies()
    os.environ.update(MASTER_ADDR=HOST, MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size))
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(threads)
        timeout = datetime.timedelta(seconds=collective_timeout)
        store = dist.TCPStore(HOST, port, world_size, is_master=False, timeout=timeout)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world_size, timeout=timeout)
    except BaseException as error:  # noqa: BLE001 - everything goes back to the parent
        results.put((rank, -1, "error", (type(error).__name__, str(error), traceback.format_exc())))
        return
    results.put((rank, -1, "ready", os.getpid()))
    while True:
        task = tasks.get()
        if task is None:
            break
        task_id, module, qualname, payload = task
        try:
            args, kwargs = pickle.loads(payload)
            answer = pickle.dumps(_resolve(module, qualname)(*args, **kwargs))
            results.put((rank, task_id, "ok", answer))
        except BaseException as error:  # noqa: BLE001
            results.put((rank, task_id, "error", (type(error).__name__, str(error), traceback.format_exc())))
    dist.destroy_process_group()


# ----------------------------------------------------------------------------------------- the parent's side


def _end_processes(processes: Sequence[Any], queues: Sequence[Any], settings: dict[str, float]) -> None:
    """Ask every live process to stop, wait up to ``settings["grace"]`` s, then SIGTERM, then SIGKILL; close the
    queues (``queues``: one task queue per process, then the result queue).

    A plain function of its arguments (no reference to the pool), so that ``weakref.finalize`` can call it
    when the pool is garbage-collected or the interpreter exits.
    """
    started = [process for process in processes if process.pid is not None]
    grace = settings["grace"]
    for process, task_queue in zip(processes, queues):
        if process.pid is not None and process.is_alive() and grace > 0:
            with contextlib.suppress(Exception):  # a broken queue: the signals below still work
                task_queue.put_nowait(None)
    deadline = time.monotonic() + grace
    for process in started:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in started:
        if process.is_alive():
            process.terminate()
    for process in started:
        process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join(5.0)
    for each in queues:
        each.cancel_join_thread()  # never block the parent on data nobody will read
        each.close()


def _qualified_name(fn: Callable[..., Any]) -> tuple[str, str]:
    """(module, qualname) of an importable function; a clear error for one a spawned process cannot import."""
    if not callable(fn):
        raise TypeError(f"run() needs a function to run on every rank, got {type(fn).__name__}")
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module in (None, "__main__", "__mp_main__") or "<locals>" in qualname or "<lambda>" in qualname:
        raise TypeError(
            f"the function run on the ranks must be importable by a freshly spawned Python process, that is "
            f"defined at the top level of a module (for example bnlab.distributed.workers); got "
            f"{qualname or fn!r} from {module or 'an unknown module'}. Functions defined in a notebook cell or "
            f"inside another function cannot be imported there: move it into a module")
    try:
        if _resolve(module, qualname) is not fn:
            raise AttributeError
    except (ImportError, AttributeError):
        raise TypeError(f"{module}.{qualname} cannot be imported by that name, so a spawned process cannot find "
                        f"it; define it at the top level of its module") from None
    return module, qualname


class ProcessGroupPool:
    """``world_size`` local CPU processes in one gloo process group, started once, running functions on demand.

    Args:
        world_size: number of processes (ranks), at least 1 (default 2).
        threads: torch threads per process (default 1: the processes share the machine's cores).
        timeout: default seconds :meth:`run` waits for every rank before ending the pool (a hang).
        start_timeout: seconds to wait for every process to start and join the group.

    Raises at start: :class:`WorkerError` if a rank cannot join the group, :class:`WorkerTimeout` if one does not
    join in time (the processes are ended either way).
    """

    def __init__(self, world_size: int = 2, *, threads: int = 1, timeout: float = 120.0,
                 start_timeout: float = 120.0) -> None:
        self.world_size = check_int(world_size, "world_size", 1, kind="a positive number of processes")
        self.threads = check_int(threads, "threads", 1)
        self.timeout = check_float(timeout, "timeout", 0.0, inclusive=False)
        start_timeout = check_float(start_timeout, "start_timeout", 0.0, inclusive=False)
        self.closed_because: str | None = None
        self._next_task = 0
        self.pids: tuple[int, ...] = ()

        import torch.distributed as dist

        # The rendezvous store: port 0 lets the OS pick a free port, and the store holds it until close().
        self._store = dist.TCPStore(HOST, 0, self.world_size, is_master=True, wait_for_workers=False,
                                    timeout=datetime.timedelta(seconds=start_timeout))
        self.port = int(self._store.port)
        context = multiprocessing.get_context("spawn")
        self._tasks = [context.Queue() for _ in range(self.world_size)]
        self._results = context.Queue()
        self._processes = [
            context.Process(target=_serve, name=f"bnlab-rank-{rank}", daemon=True,
                            args=(rank, self.world_size, self.port, self._tasks[rank], self._results, self.threads,
                                  max(self.timeout, start_timeout)))
            for rank in range(self.world_size)]
        # Ends the processes however the pool goes away: close(), garbage collection or interpreter exit.
        self._ending = {"grace": _STOP_GRACE_S}
        self._finalizer = weakref.finalize(self, _end_processes, self._processes, [*self._tasks, self._results],
                                           self._ending)
        try:
            for process in self._processes:
                process.start()
            answers = self._collect(-1, start_timeout, "joining the process group")
        except BaseException as error:
            self._fail(f"it failed to start ({type(error).__name__})")
            raise
        self.pids = tuple(int(answers[rank]) for rank in range(self.world_size))

    # ------------------------------------------------------------------------------------------- public

    @property
    def closed(self) -> bool:
        return self.closed_because is not None

    def alive(self) -> list[bool]:
        """Whether each rank's process is still running, by rank."""
        return [process.is_alive() for process in self._processes]

    def run(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any) -> list[Any]:
        """Run ``fn(*args, **kwargs)`` on every rank at once; returns the ranks' return values, by rank.

        ``fn`` must be importable (module level); its arguments and return value must pickle. Raises
        :class:`WorkerError` (a rank raised or died), :class:`WorkerTimeout` (no answer within ``timeout``
        seconds, default the pool's) or :class:`PoolClosedError`; after the first two the pool is closed.
        """
        if self.closed:
            raise PoolClosedError(f"this ProcessGroupPool is closed ({self.closed_because}); start a new one")
        module, qualname = _qualified_name(fn)
        seconds = self.timeout if timeout is None else check_float(timeout, "timeout", 0.0, inclusive=False)
        payload = pickle.dumps((args, kwargs))
        self._next_task += 1
        task_id = self._next_task
        try:
            for task_queue in self._tasks:
                task_queue.put((task_id, module, qualname, payload))
            answers = self._collect(task_id, seconds, f"{module}.{qualname}")
        except BaseException as error:
            self._fail(f"{type(error).__name__} while running {qualname}")
            raise
        return [pickle.loads(answers[rank]) for rank in range(self.world_size)]

    def close(self, reason: str = "close() was called") -> None:
        """End every process (each rank leaves the group and exits; SIGTERM, then SIGKILL for any still there
        after a few seconds) and release the port. Safe to call twice."""
        if self.closed_because is None:
            self.closed_because = reason
        self._finalizer()
        self._store = None

    def _fail(self, reason: str) -> None:
        """Close after a failure: no polite stop (a rank may be stuck in a collective), SIGTERM at once."""
        self._ending["grace"] = 0.0
        self.close(reason=reason)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(reason="its with-block ended")

    def __repr__(self) -> str:
        state = f"closed: {self.closed_because}" if self.closed else f"pids {list(self.pids)}"
        return f"ProcessGroupPool(world_size={self.world_size}, gloo on {HOST}:{self.port}, {state})"

    # ------------------------------------------------------------------------------------------ private

    def _collect(self, task_id: int, seconds: float, what: str) -> dict[int, Any]:
        """Wait for every rank's answer to ``task_id``; raise on an error, a dead rank or the deadline."""
        answers: dict[int, Any] = {}
        deadline = time.monotonic() + seconds
        while len(answers) < self.world_size:
            try:
                rank, answered, status, value = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                for rank, process in enumerate(self._processes):
                    if rank not in answers and not process.is_alive():
                        raise WorkerError(rank, "exit", f"the process exited with code {process.exitcode} "
                                          f"without an answer", "", what)
                if time.monotonic() > deadline:
                    missing = [r for r in range(self.world_size) if r not in answers]
                    raise WorkerTimeout(missing, seconds, what) from None
                continue
            if answered != task_id:
                continue  # a late answer to an earlier task: cannot happen after a failure closed the pool
            if status == "error":
                exc_type, message, remote = value
                raise WorkerError(rank, exc_type, message, remote, what)
            answers[rank] = value
        return answers


def run_distributed(fn: Callable[..., Any], *args: Any, world_size: int = 2, timeout: float = 120.0,
                    **kwargs: Any) -> list[Any]:
    """Start a :class:`ProcessGroupPool`, run ``fn(*args, **kwargs)`` on every rank once, end the processes.

    Returns the ranks' return values by rank. Errors as :meth:`ProcessGroupPool.run`.
    """
    with ProcessGroupPool(world_size, timeout=timeout) as pool:
        return pool.run(fn, *args, **kwargs)
