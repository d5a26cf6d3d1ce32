"""The process that lives inside a bubblewrap sandbox and forks one child per submission.

Started by :class:`bnlab.grading.sandbox.Sandbox` as ``bwrap ... python -I -m bnlab.grading.zygote [--torch]``:
it imports numpy (with ``--torch`` also torch: only the zygotes of exercises whose checks use torch have it) and the
child module once (so a submission starts in milliseconds, not the 1.5 s a fresh sandboxed ``import torch``
takes), makes itself non-dumpable (no submission may open its pipes through /proc), then serves requests on
stdin/stdout:

* request (grader -> zygote): one frame holding JSON ``{"plan": ..., "workdir": ..., "timeout": s}``;
* replies (zygote -> grader): ``M`` frames, each one message the child sent (relayed as bytes, never parsed
  here), then one ``E`` frame with JSON ``{"exitcode": ..., "timed_out": ...}``.

A frame is a 1-byte kind, a 4-byte big-endian length and the payload. The child writes its messages as
length-prefixed frames on its own pipe; whatever it writes, it can only produce ``M`` frames, never the end.
After each submission the zygote kills every other process in the sandbox's pid namespace (``kill(-1)``
spares only itself and bubblewrap's init), so nothing a submission started outlives its grading.
"""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import sys
import time
from typing import Any

__all__ = ["FdConnection", "read_frame", "write_frame", "MAX_FRAME"]

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">cI")


def write_frame(fd: int, kind: bytes, payload: bytes) -> None:
    """Write one frame (``kind`` is one byte) to ``fd``, all of it."""
    data = _HEADER.pack(kind, len(payload)) + payload
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, size: int, deadline: float | None = None) -> bytes | None:
    chunks, missing = [], size
    while missing:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, deadline: float | None = None) -> tuple[bytes, bytes] | None:
    """One frame ``(kind, payload)`` from ``fd``; None at end of file. Raises TimeoutError past ``deadline``
    (a ``time.monotonic()`` value) and ValueError for a frame over :data:`MAX_FRAME`."""
    header = _read_exactly(fd, _HEADER.size, deadline)
    if header is None:
        return None
    kind, size = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    payload = _read_exactly(fd, size, deadline)
    return None if payload is None else (kind, payload)


class FdConnection:
    """What :func:`bnlab.grading.child.main` sends through: ``send_bytes`` writes an ``M`` frame to a pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send_bytes(self, data: bytes) -> None:
        write_frame(self.fd, b"M", bytes(data))


def _serve_one(request: dict[str, Any]) -> None:
    from bnlab.grading import child

    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the submission's process
        try:
            os.close(reader)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the grader's channel is not the child's to write
            child.main(request["plan"], FdConnection(writer), request["workdir"])
        finally:
            os._exit(70)
    os.close(writer)
    deadline = time.monotonic() + float(request["timeout"])
    timed_out = False
    try:
        while True:
            try:
                frame = read_frame(reader, deadline)
            except TimeoutError:
                timed_out = True
                break
            except (ValueError, OSError):
                break
            if frame is None:
                break
            write_frame(1, b"M", frame[1])
    finally:
        os.close(reader)
        _kill_everything_else()
    exitcode = _reap(pid)
    write_frame(1, b"E", json.dumps({"exitcode": exitcode, "timed_out": timed_out}).encode())


def _kill_everything_else() -> None:
    """SIGKILL every process of the sandbox but this one and its init (detached children included)."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(pid: int) -> int | None:
    """Collect every dead child; the submission's exit code (negative: killed by that signal)."""
    code = None
    while True:
        try:
            waited, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return code
        if waited == pid:
            code = os.waitstatus_to_exitcode(status)


def _not_dumpable() -> None:
    """Make this process (and the submissions forked from it) non-dumpable: then no other process of the
    sandbox may open its /proc entries, such as /proc/<zygote>/fd/0 and /fd/1 -- the pipes that carry the
    next submission's code in and every result out."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_dumpable = 4
    if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def main() -> None:
    """Serve requests; with ``--torch`` torch is imported first (the PyTorch exercise). Without it torch is
    never in the process, so a numpy exercise cannot dig it out of memory."""
    import importlib

    import numpy  # noqa: F401 -- imported once here, inherited by every submission's process

    if "--torch" in sys.argv[1:]:
        importlib.import_module("torch")
    from bnlab.grading import child  # noqa: F401

    _not_dumpable()

    write_frame(1, b"R", b"ready")
    while True:
        frame = read_frame(0)
        if frame is None:
            return
        _serve_one(json.loads(frame[1].decode()))


if __name__ == "__main__":
    sys.exit(main())
