"""The grader's side of a sandboxed run: build the plan, run it in a child process, collect what it sends.

Children are forked from a multiprocessing fork server that has numpy and torch imported already, so a
submission starts in milliseconds instead of the seconds a fresh ``import torch`` takes. Every child gets its
own scratch directory, process group, memory limit and time limit; the grader reads its messages (JSON only)
until it reports ``done``, dies, or runs out of time, and then kills its whole process group.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import multiprocessing
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bnlab.grading import wire
from bnlab.grading.core import CHECKS, Check
from bnlab.grading.notebooks import Master, cell_role, grade_id_of, strip_cell_source
from bnlab.grading.zygote import MAX_FRAME, read_frame, write_frame

__all__ = ["Limits", "RunResult", "Sandbox", "bubblewrap_problem", "build_plan", "make_check", "run_plan",
           "sandbox_for_this_thread"]

_MAX_TOTAL_BYTES = 32 * 1024 * 1024  # all messages of one submission (an honest one sends well under 1 MB)
_PRELOAD = ["numpy", "torch", "bnlab.grading.child"]
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Limits:
    """Per-submission limits: whole run, each notebook cell, each check, extra memory, output kept."""

    timeout: float = 60.0
    cell_seconds: float = 20.0
    check_seconds: float = 20.0
    memory_mb: int = 1024
    output_chars: int = 20_000
    file_bytes: int = 4 * 1024 * 1024


@dataclass
class RunResult:
    """What came back from one child: its messages, how it ended, and where it was last."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    timed_out: bool = False
    exitcode: int | None = None
    last_where: str = ""
    seconds: float = 0.0

    @property
    def finished(self) -> bool:
        return any(m.get("type") == "done" for m in self.messages)


def make_check(name: str, names: tuple[str, ...], options: dict[str, Any]) -> Check:
    """An instance of the registered check ``name`` with the test cell's options and the learner's names."""
    check = CHECKS[name](**options)
    check.names = tuple(names)
    return check


def build_plan(master: Master, submission: Any, limits: Limits) -> tuple[dict[str, Any], dict[tuple[str, int], Check]]:
    """The child's work list for one submission, and the checks (with their inputs) by (grade_id, index).

    Code comes from the submission's cells, except locked cells (the master's version runs) and test cells
    (never run: the master's checks run in their place). Test cells the submission lost run at the end;
    locked cells it lost run first.
    """
    tests = {t.grade_id: t for t in master.tests}
    test_sources = {strip_cell_source(t.source) for t in master.tests}
    present = {grade_id_of(c) for c in submission.cells}
    items: list[dict[str, Any]] = [
        {"kind": "code", "label": f"setup cell {gid}", "source": source}
        for gid, source in master.locked.items() if gid not in present]
    checks: dict[tuple[str, int], Check] = {}
    emitted: set[str] = set()

    def test_item(grade_id: str) -> dict[str, Any]:
        calls = []
        for index, call in enumerate(tests[grade_id].calls):
            check = make_check(call.check, call.names, call.options)
            # every check's inputs are drawn afresh for each grading run: a table of answers for the inputs a
            # learner's notebook shows (or the public checks' code would draw) earns nothing, visible or hidden
            check.salt = secrets.randbits(62)
            checks[(grade_id, index)] = check
            calls.append({"check": call.check, "probe": check.probe.__name__, "names": list(call.names),
                          "inputs": wire.dumps(check.frozen_inputs()).decode()})
        emitted.add(grade_id)
        return {"kind": "test", "label": f"test cell {grade_id}", "grade_id": grade_id, "calls": calls}

    for number, cell in enumerate(submission.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        gid = grade_id_of(cell)
        if gid in tests:
            if gid not in emitted:
                items.append(test_item(gid))
        elif gid in master.locked and cell_role(cell) != "solution":
            items.append({"kind": "code", "label": f"cell {number}", "source": master.locked[gid]})
        elif strip_cell_source(cell.source) not in test_sources:
            items.append({"kind": "code", "label": f"cell {number}", "source": str(cell.source)})
    items += [test_item(gid) for gid in tests if gid not in emitted]
    plan = {"exercise": master.exercise, "items": items, "allow_torch": master.needs_torch,
            "block_torch_norm": master.needs_torch and master.blocks_torch_norm,
            "cell_seconds": limits.cell_seconds, "check_seconds": limits.check_seconds,
            "memory_mb": limits.memory_mb, "output_chars": limits.output_chars, "file_bytes": limits.file_bytes}
    return plan, checks


_context: Any = None
_context_lock = threading.Lock()


def _forkserver() -> Any:
    """The fork-server context, started once with numpy, torch and the child module imported."""
    with _context_lock:
        return _context or _start_forkserver()


def _start_forkserver() -> Any:
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        saved = {key: os.environ.get(key) for key in _THREAD_ENV}
        os.environ.update({key: "1" for key in _THREAD_ENV})
        try:
            from multiprocessing import forkserver

            forkserver.ensure_running()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        _context = ctx
    return _context


BWRAP = shutil.which("bwrap")
ISOLATION_HELP = ("install Debian's bubblewrap (sudo apt-get install bubblewrap) so that each submission runs "
                  "in its own sandbox")


def bubblewrap_problem() -> str | None:
    """None when bubblewrap can sandbox here; otherwise what is missing and how to get it."""
    if BWRAP is None:
        return f"bubblewrap (bwrap) is not installed: {ISOLATION_HELP}"
    probe = subprocess.run([BWRAP, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"],
                           capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return (f"bubblewrap cannot create a sandbox here ({probe.stderr.strip()[:200]}); unprivileged user "
                f"namespaces may be disabled")
    return None


def _read_result(fd: int, result: RunResult, deadline: float) -> None:
    """Collect a sandboxed run's relayed messages until its end frame (or the grader's own deadline)."""
    total = 0
    while True:
        frame = read_frame(fd, deadline)
        if frame is None:
            raise EOFError("the sandbox closed its channel")
        kind, payload = frame
        if kind == b"E":
            end = json.loads(payload.decode())
            result.exitcode, result.timed_out = end.get("exitcode"), bool(end.get("timed_out"))
            return
        total += len(payload)
        if total > _MAX_TOTAL_BYTES:
            continue
        _accept(result, payload)


#: the largest message a child may send (the largest honest one, a backward probe's records, is about 60 kB)
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024
_MAX_TEXT = 500  # characters of any text a child sends (an error, a place)
_MESSAGE_TYPES = ("at", "probe", "cell_error", "blocked", "done")


def _accept(result: RunResult, raw: bytes) -> bool:
    """Keep one message of a child if it is well formed; True when it is the ``done`` message.

    Everything here came from the submission's process, so nothing is trusted: a message over
    :data:`_MAX_MESSAGE_BYTES`, not JSON (or nested deeper than the parser goes), of an unknown type or with
    fields of the wrong types is dropped; texts are cut to :data:`_MAX_TEXT` characters; a probe's data stays
    encoded until its check is judged."""
    if len(raw) > _MAX_MESSAGE_BYTES:
        return False
    try:
        message = json.loads(raw.decode())
    except Exception:  # noqa: BLE001 -- bad UTF-8, bad JSON, RecursionError: dropped
        return False
    message = _valid_message(message)
    if message is None:
        return False
    result.messages.append(message)
    if message["type"] == "at":
        result.last_where = message["where"]
    return message["type"] == "done"


def _valid_message(message: Any) -> dict[str, Any] | None:
    """The message with only its known fields, of the right types and lengths; None if it is not one."""
    if not isinstance(message, dict) or message.get("type") not in _MESSAGE_TYPES:
        return None
    kind = message["type"]

    def text(key: str) -> str | None:
        value = message.get(key)
        return value[:_MAX_TEXT] if isinstance(value, str) else None

    if kind == "probe":
        if not isinstance(message.get("grade_id"), str) or type(message.get("index")) is not int:
            return None
        kept = {"type": kind, "grade_id": message["grade_id"][:_MAX_TEXT], "index": message["index"]}
        if isinstance(message.get("missing"), list):
            kept["missing"] = [str(name)[:100] for name in message["missing"][:20]]
        elif text("error") is not None:
            kept["error"] = text("error")
        elif "data" in message:
            kept["data"] = message["data"]
        else:
            return None
        return kept
    if kind == "done":
        counts = {key: message.get(key) for key in ("stdout_chars", "stderr_chars")}
        return {"type": kind, **{key: value for key, value in counts.items() if type(value) is int}}
    where = text("where")
    if where is None:
        return None
    if kind == "at":
        return {"type": kind, "where": where}
    if kind == "cell_error":
        return {"type": kind, "where": where, "error": text("error") or "?"}
    names = message.get("names")
    if not isinstance(names, list):
        return None
    return {"type": kind, "where": where, "names": [str(name)[:200] for name in names[:20]]}


def _needed_under_tmp() -> list[str]:
    """The folders the sandbox needs that lie under /tmp, which it replaces by an empty one: Python's
    installation and the project holding bnlab (its other folders are hidden again by ``hidden``)."""
    import bnlab

    needed = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    needed.add(os.path.dirname(os.path.dirname(os.path.realpath(bnlab.__file__))))
    under = sorted(p for p in needed if p.startswith("/tmp/"))
    return [p for p in under if not any(p.startswith(q + os.sep) for q in under)]  # outermost only


class Sandbox:
    """One bubblewrap sandbox with a zygote inside (:mod:`bnlab.grading.zygote`), grading one submission at a
    time.

    What a submission sees: the file system read-only, except its own scratch folder; the directories in
    ``hidden`` (masters with their hidden tests, the folders of the class's submissions) replaced by empty
    ones; its own pid namespace (no other process of the machine, not the grader); no network; a new
    session (no terminal to inject into). Everything it starts is killed when its grading ends, and the whole
    sandbox dies with the grader.
    """

    def __init__(self, hidden: tuple[str, ...] = (), torch: bool = True) -> None:
        self.hidden, self.torch = hidden, torch
        self.scratch = tempfile.mkdtemp(prefix="bnlab-sandbox-")
        args = [BWRAP, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/",
                "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for path in _needed_under_tmp():  # a course (or its Python) that lives in /tmp: back, read-only
            args += ["--ro-bind", path, path]
        for path in sorted(set(hidden)):
            if os.path.isdir(path):
                args += ["--tmpfs", path]
        args += ["--bind", self.scratch, self.scratch, "--chdir", self.scratch,
                 sys.executable, "-I", "-m", "bnlab.grading.zygote"]  # -I: the scratch root is not on sys.path
        args += ["--torch"] if torch else []
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",  # nothing of the grader's own
               **{key: "1" for key in _THREAD_ENV}}
        self.process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        ready = read_frame(self.process.stdout.fileno(), time.monotonic() + 120)
        if ready is None or ready[0] != b"R":
            self.close()
            raise RuntimeError("the grading sandbox did not start")

    def run(self, plan: dict[str, Any], workdir_name: str, limits: Limits) -> RunResult:
        """Run ``plan`` in a fresh scratch folder; never raises for anything the submission does."""
        workdir = os.path.join(self.scratch, workdir_name)
        os.mkdir(workdir)
        result = RunResult()
        start = time.monotonic()
        request = {"plan": plan, "workdir": workdir, "timeout": limits.timeout}
        try:
            write_frame(self.process.stdin.fileno(), b"Q", json.dumps(request).encode())
            _read_result(self.process.stdout.fileno(), result, start + limits.timeout + 15)
        except (TimeoutError, EOFError, OSError, ValueError):
            result.timed_out = result.timed_out or time.monotonic() - start >= limits.timeout
            self.close()  # a sandbox that stopped answering is not reused
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        result.seconds = time.monotonic() - start
        return result

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        _kill_group(self.process.pid)
        with contextlib.suppress(Exception):
            self.process.wait(5)
        shutil.rmtree(self.scratch, ignore_errors=True)


_sandboxes = threading.local()


def sandbox_for_this_thread(hidden: tuple[str, ...], torch: bool = True) -> Sandbox:
    """This grading thread's sandbox with (``torch``) or without torch in memory: started on first use,
    restarted when it died or hides other paths. A thread keeps one of each kind."""
    kind = "with_torch" if torch else "numpy_only"
    current = getattr(_sandboxes, kind, None)
    if current is None or not current.alive or current.hidden != hidden:
        if current is not None:
            current.close()
        current = Sandbox(hidden, torch)
        setattr(_sandboxes, kind, current)
        _opened.append(current)
    return current


_opened: list[Sandbox] = []


@atexit.register
def close_sandboxes() -> None:
    """Stop every sandbox this process started."""
    while _opened:
        _opened.pop().close()


def run_plan(plan: dict[str, Any], workdir: str, limits: Limits) -> RunResult:
    """Run ``plan`` in a fresh child in ``workdir``, without bubblewrap (each child still gets its own
    process group, limits and scratch folder; see :class:`Sandbox` for what the sandbox adds); never raises
    for anything the submission does."""
    from bnlab.grading import child

    ctx = _forkserver()
    reader, writer = ctx.Pipe(duplex=False)
    process = ctx.Process(target=child.main, args=(plan, writer, workdir), name="bnlab-grade")
    result = RunResult()
    with _context_lock, _no_main_module():
        process.start()  # the first start waits for the fork server's imports; the clock starts after it
    start = time.monotonic()
    writer.close()
    total = 0
    try:
        while True:
            remaining = limits.timeout - (time.monotonic() - start)
            if remaining <= 0:
                result.timed_out = True
                break
            if not reader.poll(min(remaining, 1.0)):
                if not process.is_alive() and not reader.poll(0):
                    break
                continue
            try:
                raw = reader.recv_bytes(MAX_FRAME)
            except (EOFError, OSError):
                break
            total += len(raw)
            if total > _MAX_TOTAL_BYTES:
                break
            if _accept(result, raw):
                break
    finally:
        _kill_group(process.pid)
        process.join(5)
        reader.close()
    result.exitcode = process.exitcode
    result.seconds = time.monotonic() - start
    return result


@contextlib.contextmanager
def _no_main_module() -> Iterator[None]:
    """Hide the grader's ``__main__`` while a child is launched.

    multiprocessing re-imports the parent's main script in every child it starts (so that functions defined
    there can be unpickled). Our target lives in bnlab.grading.child, so that import would only cost time and
    run an instructor's script where submissions run; a stand-in module without ``__file__`` skips it.
    """
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = saved


def _kill_group(pid: int | None) -> None:
    if pid is None:
        return
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
