"""The submission's side of a sandboxed grading run (runs in a forked child process, never in the grader).

:func:`main` sets limits (memory, file size, its own process group) and sends stdout/stderr to a file; then it
guards the process: the course's reference code is neither in it (the child imports only the probes, which
call the learner's code and judge nothing) nor loadable or readable from disk, torch is out of the numpy
exercises and torch's own normalization out of the one where the learner writes it (the plan's
``block_torch_norm``; exercise 5 uses ``nn.BatchNorm1d`` as it is), and an audit hook (which cannot be removed)
refuses new processes, the garbage collector's object lists, tracing and ctypes. Then it runs the plan: the
submission's code cells in order, and, at each test cell's place, the probes of that cell's checks. Each result
is sent to the grader as soon as it exists, as JSON bytes, so a submission that later hangs or kills its process
keeps the marks it had earned. Nothing here judges anything.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.abc
import io
import json
import linecache
import os
import re
import resource
import signal
import sys
import types
from typing import Any

from IPython.core.inputtransformer2 import TransformerManager

from bnlab.grading import wire
from bnlab.grading.core import Blocked, TimeLimit, describe_exception
from bnlab.grading.probes import PROBES

__all__ = ["main"]

_BLOCKED_ALWAYS = ("bnlab",)
_TORCH_MODULES = ("torch", "functorch", "torchvision")


class _CappedText(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.kept, self.count = limit, [], 0

    def write(self, text: str) -> int:
        text = str(text)
        room = self.limit - sum(len(t) for t in self.kept) if self.count < self.limit else 0
        if room > 0:
            self.kept.append(text[:room])
        self.count += len(text)
        return len(text)

    def writable(self) -> bool:
        return True


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == package or name.startswith(package + ".") for package in packages)


class _ImportNotes(importlib.abc.MetaPathFinder):
    """Refuses imports of the blocked packages that bypass the audited import statement
    (``importlib.import_module``), so that the instructor's notes name them. (The audit hook is the guard; a
    submission may remove this finder, which only loses the note: the course's files cannot be read.)"""

    def __init__(self, blocked: tuple[str, ...], attempts: list[str]) -> None:
        self.blocked, self.attempts = blocked, attempts

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if _under(name, self.blocked):
            self.attempts.append(f"import of {name}")
            raise Blocked(f"import of {name!r} is not allowed while grading")
        return None


def _stub_checks() -> None:
    """``from bnlab.grading import checks`` and ``checks.forward(f)`` in a learner's own cell (a test line pasted
    into a solution) do nothing while grading, instead of failing the cell: the master's test cells run the
    real checks, on the grader's side."""
    stubs = {name: types.ModuleType(name) for name in ("bnlab", "bnlab.grading", "bnlab.grading.checks")}
    stubs["bnlab"].__path__, stubs["bnlab.grading"].__path__ = [], []
    stubs["bnlab"].grading, stubs["bnlab.grading"].checks = stubs["bnlab.grading"], stubs["bnlab.grading.checks"]
    stubs["bnlab.grading.checks"].__getattr__ = _stub_check
    sys.modules.update(stubs)


def _stub_check(name: str) -> Any:
    """``checks.NAME``: a function that does nothing; a dunder (``__file__``, ``__spec__``: what code that walks
    sys.modules asks every module, as ``import torch._dynamo`` does) is missing, as on any module."""
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    return lambda *args, **kwargs: None


def _blocked_function(qualified: str, attempts: list[str], named_by_caller: bool = False) -> Any:
    """A function that records an attempt on ``qualified`` and raises Blocked (``named_by_caller``: the name is
    its first argument)."""
    def blocked(*args: Any, **kwargs: Any) -> Any:
        name = str(args[0]) if named_by_caller and args else qualified
        attempts.append(name)
        raise Blocked(f"{name} (torch's own normalization) is blocked while grading this exercise: "
                      f"write the computation yourself")
    return blocked


_TORCH_NORM_OPS = ("batch_norm", "instance_norm", "group_norm", "layer_norm", "rms_norm")


def _blank_own_sources() -> None:
    """Give the source files of the loaded bnlab modules (the grading machinery: zygote, child, probes) empty
    entries in linecache, as if they had none. Their frames are on the stack under every cell, and code that
    formats the stack -- ``traceback.format_stack()``, which ``torch.manual_seed`` calls -- would otherwise try
    to open them, be refused, and be reported as an attempt on the course's files."""
    import bnlab

    package = os.path.dirname(os.path.realpath(bnlab.__file__)) + os.sep
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if isinstance(filename, str) and os.path.realpath(filename).startswith(package):
            linecache.cache[filename] = (0, None, [], filename)  # mtime None: checkcache never reloads it


def _hide_modules(packages: tuple[str, ...]) -> None:
    """Remove ``packages`` from sys.modules (the import blocker then refuses them)."""
    for name in list(sys.modules):
        if _under(name, packages):
            del sys.modules[name]


#: torch modules that hold normalization written in Python from primitive ops (decompositions, references):
#: no aten norm op runs, so the blocked kernels would not see them
_TORCH_PYTHON_NORM_MODULES = ("torch._decomp.decompositions", "torch._refs", "torch._refs.nn.functional")
_TORCH_PYTHON_NORM_PACKAGES = ("torch._decomp", "torch._refs", "torch._prims")


def _blocked_code(function: types.FunctionType) -> types.CodeType:
    """A code object that raises, with the same free variables as ``function``'s (so it can replace it)."""
    free = function.__code__.co_freevars
    name = f"{function.__module__}.{function.__qualname__}"
    message = f"{name} (torch's own normalization) is blocked while grading this exercise: write the computation " \
              f"yourself"
    source = ("def outer():\n" + "".join(f"    {v} = None\n" for v in free)
              + "    def blocked(*args, **kwargs):\n" + (f"        ({', '.join(free)},)\n" if free else "")
              + f"        {_REPORT_BLOCKED}({name!r})\n"  # records the attempt and raises Blocked
              + f"        raise RuntimeError({message!r})\n    return blocked\n")
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 -- our own template
    return namespace["outer"]().__code__


#: a builtin through which a blocked Python function reports (its own module's globals are torch's)
_REPORT_BLOCKED = "_bnlab_blocked_normalization"


def _block_python_norms(attempts: list[str]) -> None:
    """Make every Python function of torch that computes a normalization raise instead, in place (its
    ``__code__`` is replaced), so that every reference to it -- module attributes, decomposition tables,
    ``__wrapped__`` chains, closures -- reaches the blocked version. (A submission that replaces the reporting
    builtin only gets a function that returns None.)"""
    import importlib

    setattr(builtins, _REPORT_BLOCKED, _blocked_function("", attempts, named_by_caller=True))

    for name in _TORCH_PYTHON_NORM_MODULES:
        importlib.import_module(name)
    seen: set[int] = set()

    def blocked(function: types.FunctionType) -> bool:
        """A normalization; in torch's Python references and decompositions also their helpers (``_normalize``
        returns the normalized tensor, its mean and its 1/std)."""
        in_references = _under(str(getattr(function, "__module__", "")), _TORCH_PYTHON_NORM_PACKAGES)
        return any(op in function.__name__ for op in _TORCH_NORM_OPS) or (in_references and "norm" in
                                                                            function.__name__)

    def visit(value: Any, depth: int = 0) -> None:
        if not isinstance(value, types.FunctionType) or id(value) in seen or depth > 6:
            return
        seen.add(id(value))
        if blocked(value):
            for cell in value.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    visit(cell.cell_contents, depth + 1)
            visit(getattr(value, "__wrapped__", None), depth + 1)
            value.__code__ = _blocked_code(value)

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # touching deprecated aliases in torch's modules warns
        for module_name, module in list(sys.modules.items()):
            if module_name.split(".")[0] == "torch":
                for value in list(getattr(module, "__dict__", {}).values()):
                    visit(value)


def _no_autograd_inside_backward(attempts: list[str]) -> None:
    """Refuse running autograd while a backward runs: a ``torch.autograd.Function`` whose backward asks
    autograd for the gradient of a recomputed forward has no hand-written backward. Every autograd call
    (``torch.autograd.grad``, ``.backward()``, ``torch.func``) goes through the engine object replaced here."""
    import torch
    from torch.autograd.variable import Variable

    engine = Variable._execution_engine

    class GuardedEngine:
        def run_backward(self, *args: Any, **kwargs: Any) -> Any:
            if torch._C._current_graph_task_id() != -1:
                attempts.append("autograd inside a backward")
                raise Blocked("autograd inside a backward is not allowed while grading this exercise: write the "
                              "gradient yourself")
            return engine.run_backward(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(engine, name)

    Variable._execution_engine = GuardedEngine()


#: a line of ``torch._C._dispatch_dump``: a dispatch key (or alias key) with a kernel registered for the op
_REGISTERED_KEY = re.compile(r"^(\w+)(?:\[alias\])?: registered at", re.MULTILINE)
#: keys whose kernels compute no values (shapes only), left alone
_VALUELESS_KEYS = ("Meta",)
_KERNEL_SOURCE = """
def make(name):
    def kernel(*args, **kwargs):
        attempts.append(name)
        raise Blocked(name + " (torch's own normalization) is blocked while grading this exercise: write the "
                      "computation yourself")
    return kernel
"""


def _block_norm_kernels(attempts: list[str]) -> None:
    """Replace the kernels of torch's normalization ops in torch's dispatcher itself, for every dispatch key
    that has one (but Meta, which computes only shapes): every route -- ``F.batch_norm``,
    ``torch.ops.aten.*``, ``torch._C._VariableFunctions``, ``instance_norm`` or ``layer_norm`` on a reshaped
    batch, vmap, a popped or disabled dispatch mode -- ends in one of these kernels. (A Python dispatch mode
    did this before; it cost about 0.7 s per submission and a submission could pop it.) The original kernels
    are unreachable from Python afterwards; the registration is kept alive only by the kernels themselves (no
    Library object, no finalizer registry a submission could use to undo it), and each kernel runs with
    globals that hold nothing but the attempt list."""
    import warnings

    import torch

    library = torch._C._dispatch_library("IMPL", "aten", "", "<bnlab grading>", 0)
    namespace = {"__builtins__": builtins, "attempts": attempts, "Blocked": Blocked}
    exec(_KERNEL_SOURCE, namespace)  # noqa: S102 -- our own code, with deliberately bare globals
    make = namespace.pop("make")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "overriding a previously registered kernel": that is the point
        for qualified in torch._C._dispatch_get_all_op_names():
            if not qualified.startswith("aten::") or not any(op in qualified for op in _TORCH_NORM_OPS):
                continue
            kernel = make(qualified[len("aten::"):])
            kernel.library = library  # keeps the registrations alive; reachable from no frame
            for key in set(_REGISTERED_KEY.findall(torch._C._dispatch_dump(qualified))) - {"debug"}:
                if key not in _VALUELESS_KEYS:
                    library.impl(qualified[len("aten::"):], key, kernel, False)


#: audit events a submission never needs, which would let it reach the grader's objects in its own process (the
#: garbage collector's object lists, tracing other frames, raw memory through ctypes) or leave the guarded process
#: (a new process has none of these guards: it could import torch's batch norm or the course's answers freely)
_REFUSED_EVENTS = ("gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys.settrace", "sys.setprofile",
                   "sys._current_frames", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "os.fork", "os.forkpty", "pty.spawn", "sys.addaudithook",
                   # a link's target is resolved from the link's folder, or from a ``dir_fd`` the event does not
                   # show: no check of the target's path can be trusted, and no exercise makes links
                   "os.symlink", "os.link")


def protected_folders(extra: tuple[str, ...] = (), allow_torch: bool = False) -> list[str]:
    """Folders whose files a submission may not open: the bnlab package (the course's reference code; the
    child's own modules are loaded before), when bnlab is a source checkout every other folder of the project
    (tests, lectures, masters, .git: answers and reference code) but the one holding Python itself, the
    folders ``extra`` (the masters and the class's submissions, from the grader), and where torch's own
    normalization is blocked (``allow_torch`` here: the PyTorch exercise) the sources of torch's Python
    decompositions (which would otherwise be exec'd afresh)."""
    import bnlab

    package = os.path.dirname(os.path.realpath(bnlab.__file__))
    here = os.path.realpath(os.getcwd())  # the submission's scratch folder stays open to it
    folders = [package, *(f for f in map(os.path.realpath, extra) if not (here == f or here.startswith(f + os.sep)))]
    project = os.path.dirname(package)
    if os.path.exists(os.path.join(project, "pyproject.toml")):
        keep = [os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
        for entry in os.scandir(project):
            path = os.path.realpath(entry.path)
            if entry.is_dir() and not any(k == path or k.startswith(path + os.sep) for k in keep):
                folders.append(path)
    if allow_torch:
        import torch

        torch_dir = os.path.dirname(os.path.realpath(torch.__file__))
        folders += [os.path.join(torch_dir, name) for name in ("_decomp", "_refs")]
    return sorted({os.path.realpath(f) for f in folders})


#: audit events that change the file system at their path arguments (allowed only in the scratch folder)
_FILE_CHANGES = ("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod", "os.chown",
                 "os.truncate", "os.utime", "os.mkfifo", "os.mknod", "shutil.rmtree", "shutil.move")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_OTHER_PROCESS = re.compile(r"^/proc/(\d+)(/|$)")


def _guard(attempts: list[str], blocked: tuple[str, ...], folders: list[str], workdir: str) -> None:
    """An audit hook -- it cannot be removed once added, unlike an import hook in ``sys.meta_path`` -- that
    refuses :data:`_REFUSED_EVENTS` and ctypes; loading any module of the ``blocked`` packages; opening any
    file in ``folders`` (the course's sources, the masters) or of another process in /proc (its pipes to the
    grader); and writing, creating, renaming or removing anything outside ``workdir`` (a module planted where
    a later submission would import it)."""
    prefixes = tuple(folder + os.sep for folder in folders)
    scratch = os.path.realpath(workdir)
    me = str(os.getpid())

    def refuse(what: str, error: type[Exception] = Blocked, noted: bool = True) -> None:
        if noted:  # a refused open is the cell's own error (libraries may try harmless ones): not a note
            attempts.append(what)
        raise error(f"{what} is not allowed while grading")

    def outside(path: Any) -> str | None:
        """The real path if ``path`` lies outside the scratch folder, else None."""
        if not isinstance(path, (str, bytes, os.PathLike)):
            return None
        real = os.path.realpath(os.fsdecode(path))
        return None if real == scratch or real.startswith(scratch + os.sep) else real

    def hook(event: str, args: Any) -> None:
        if event in _REFUSED_EVENTS or event.startswith("ctypes."):
            refuse(event)
        elif event == "import" and args and isinstance(args[0], str) and _under(args[0], blocked):
            refuse(f"import of {args[0]}")
        elif event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            given = os.fsdecode(args[0])
            # the event does not say relative to which folder (``dir_fd``) a relative path is opened: refuse
            # walking up with "..", and opening a folder (a ``dir_fd`` to start from) outside the scratch one
            if not os.path.isabs(given) and ".." in given.replace("\\", "/").split("/"):
                refuse(f"opening {given}", PermissionError, noted=False)
            path = os.path.realpath(given)
            other = _OTHER_PROCESS.match(path)
            if path in folders or path.startswith(prefixes) or (other and other.group(1) != me):
                refuse(f"opening {path}", PermissionError, noted=False)  # an OSError, as for any unreadable file
            if os.path.isdir(path) and outside(path):
                refuse(f"opening the folder {path}", PermissionError, noted=False)
            mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writes and outside(path):
                refuse(f"writing {path}", PermissionError, noted=False)
        elif event in _FILE_CHANGES:
            for arg in args[:2]:
                where = outside(arg)
                if where:
                    refuse(f"{event} on {where}", PermissionError, noted=False)

    sys.addaudithook(hook)


def _no_exec() -> None:
    """Forbid execve/execveat in this process and everything it forks (a seccomp filter, which the process
    cannot lift): a fresh program -- a new Python, git -- would have none of the guards above, and a
    submission can start one without any audited Python call (``_posixsubprocess.fork_exec``). Forking
    itself stays possible (a copy keeps every guard and dies with the grading). Only on x86-64 Linux."""
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW; SECCOMP_RET_ERRNO | EPERM
    program = [(ld_abs, 0, 0, 4),               # the architecture
               (jeq, 0, 4, 0xC000003E),         # not x86-64: allow (this machine's Python is x86-64)
               (ld_abs, 0, 0, 0),               # the system call's number
               (jge, 3, 0, 0x40000000),         # the x32 calling convention: deny
               (jeq, 2, 0, 59),                 # execve: deny
               (jeq, 1, 0, 322),                # execveat: deny
               (ret, 0, 0, allow),
               (ret, 0, 0, deny)]

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*[Filter(*line) for line in program])
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0 or libc.prctl(
            pr_set_seccomp, seccomp_mode_filter, ctypes.byref(Program(len(program), filters)), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "could not forbid exec in the grading child")


def _limit_memory(extra_mb: int) -> None:
    with open("/proc/self/statm") as statm:
        current = int(statm.read().split()[0]) * resource.getpagesize()
    limit = current + extra_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _redirect_output(workdir: str, file_limit: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an over-long write fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))
    fd = os.open(os.path.join(workdir, "output.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


_TRANSFORMER = TransformerManager()
_RUN_MAGICS = ("time", "timeit", "capture", "prun")  # magics whose statement or cell runs, as in Jupyter
_MAGIC_OPTIONS = re.compile(r"^\s*(?:(?:-[nrpl]\s*\S+|-[tcqoTsD]+)\s+)*")  # %timeit -n 1 -r 1, %prun -s time, ...


class _Shell:
    """What ``get_ipython()`` returns while grading: IPython syntax that IPython's own transformer turned into
    calls behaves as in Jupyter where it matters for the result -- ``%time`` and ``%timeit`` (with their
    options) run their statement and ``x = %time f()`` gets its value, ``%%time`` and friends run their cell,
    ``%%writefile`` writes its file into the scratch folder, ``run_cell`` runs code -- and does nothing otherwise
    (help ``np.var?``, ``%matplotlib``; shell commands return no output: there is no shell and no network)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace

    def _run(self, source: str) -> Any:
        """Run ``source`` in the notebook's namespace; the value of a lone expression is returned."""
        source = _prepare_source(source)
        try:
            code = compile(source, "<magic>", "eval")
        except SyntaxError:
            exec(compile(source, "<magic>", "exec"), self.namespace)  # noqa: S102 -- the sandboxed submission
            return None
        return eval(code, self.namespace)  # noqa: S307 -- the sandboxed submission

    def run_line_magic(self, name: str, line: str, *args: Any) -> Any:
        if name in _RUN_MAGICS and line.strip():
            statement = _MAGIC_OPTIONS.sub("", line, count=1) if name in ("timeit", "prun") else line
            value = self._run(statement)
            return value if name == "time" else None
        return None

    def run_cell_magic(self, name: str, line: str, cell: str) -> None:
        if name in _RUN_MAGICS:
            if name == "timeit" and _MAGIC_OPTIONS.sub("", line, count=1).strip():
                self._run(_MAGIC_OPTIONS.sub("", line, count=1))  # %%timeit's line is its setup statement
            self._run(cell)
        elif name in ("writefile", "file"):
            append = "-a" in line.split()[:-1]
            path = line.split()[-1] if line.split() else ""
            if path:
                with open(path, "a" if append else "w") as handle:
                    handle.write(cell)

    def run_cell(self, raw_cell: str, *args: Any, **kwargs: Any) -> None:
        self._run(raw_cell)

    def system(self, *args: Any, **kwargs: Any) -> None:
        return None

    def getoutput(self, *args: Any, **kwargs: Any) -> list[str]:
        return []  # ``files = !ls``: no shell here, so no lines

    def __getattr__(self, name: str) -> Any:  # anything else IPython syntax may call: a no-op
        return lambda *args, **kwargs: None


def _display(*objects: Any, **kwargs: Any) -> None:
    """IPython's ``display`` builtin: prints each object (the output is kept, not judged)."""
    for obj in objects:
        print(repr(obj))


def _prepare_source(source: str) -> str:
    """IPython syntax (magics, ``!shell``, ``obj?``) turned into Python by IPython's own input transformer, so
    a continuation line that merely starts with ``!=`` or ``%`` stays what it is."""
    return _TRANSFORMER.transform_cell(source)


#: environment variables a submission's process keeps (nothing of the grader's own: tokens, paths)
_KEPT_ENVIRONMENT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "MKL_NUM_THREADS")


def _scrub_environment(workdir: str) -> None:
    """Only :data:`_KEPT_ENVIRONMENT` stays; home, temporary and config folders point at the scratch folder
    (the only place a submission may write), and a module written there (``%%writefile``) can be imported."""
    kept = {key: os.environ[key] for key in _KEPT_ENVIRONMENT if key in os.environ}
    os.environ.clear()
    os.environ.update(kept, HOME=workdir, TMPDIR=workdir, MPLCONFIGDIR=workdir)
    tempfile_module = sys.modules.get("tempfile")
    if tempfile_module is not None:
        tempfile_module.tempdir = workdir
    sys.path.insert(0, workdir)


def _alarm(seconds: float) -> None:
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.0))


def _on_alarm(signum: int, frame: Any) -> None:
    raise TimeLimit("time limit")


def main(plan: dict[str, Any], conn: Any, workdir: str) -> None:
    """Run ``plan`` (built by :func:`bnlab.grading.sandbox.build_plan`) and report through ``conn``."""
    os.setsid()  # own process group: the grader kills it whole, grandchildren included
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(workdir)
    _scrub_environment(workdir)
    _redirect_output(workdir, plan["file_bytes"])
    stdout, stderr = _CappedText(plan["output_chars"]), _CappedText(plan["output_chars"])
    sys.stdout, sys.stderr = stdout, stderr

    def send(message: dict[str, Any]) -> None:
        conn.send_bytes(json.dumps(message).encode())

    attempts: list[str] = []
    blocked = _BLOCKED_ALWAYS + (() if plan["allow_torch"] else _TORCH_MODULES)
    # torch's own normalization is blocked only where the learner must write it (exercise 4); an exercise that
    # uses nn.BatchNorm1d legitimately (exercise 5) keeps it. A plan without the flag blocks whenever torch is in.
    block_norm = bool(plan["allow_torch"] and plan.get("block_torch_norm", True))
    folders = protected_folders(tuple(plan.get("protected", ())), block_norm)
    if plan["allow_torch"]:
        import torch

        torch.set_num_threads(1)
    if block_norm:
        _block_python_norms(attempts)
        _block_norm_kernels(attempts)
        _no_autograd_inside_backward(attempts)
    _blank_own_sources()
    _hide_modules(blocked)
    _stub_checks()
    sys.meta_path.insert(0, _ImportNotes(blocked, attempts))
    _no_exec()
    _guard(attempts, blocked, folders, workdir)
    signal.signal(signal.SIGALRM, _on_alarm)
    _limit_memory(plan["memory_mb"])

    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    shell = _Shell(namespace)
    namespace["get_ipython"] = lambda: shell
    namespace["display"] = _display
    reported = 0
    timed_out: set[str] = set()  # learner objects that hit a check's time limit: their later checks are skipped
    for item in plan["items"]:
        send({"type": "at", "where": item["label"]})
        if item["kind"] == "code":
            filename = f"<{item['label']}>"
            source = _prepare_source(item["source"])
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            try:
                _alarm(plan["cell_seconds"])
                exec(compile(source, filename, "exec"), namespace)  # noqa: S102 -- the sandboxed submission
                _alarm(0)
            except BaseException as exc:  # noqa: BLE001 -- a failing cell is recorded, the run goes on
                _alarm(0)
                send({"type": "cell_error", "where": item["label"], "error": describe_exception(exc)})
        else:
            for index, test_call in enumerate(item["calls"]):
                message: dict[str, Any] = {"type": "probe", "grade_id": item["grade_id"], "index": index}
                missing = [name for name in test_call["names"] if name not in namespace]
                slow = [name for name in test_call["names"] if name in timed_out]
                if missing:
                    message["missing"] = missing
                elif slow:
                    message["error"] = (f"TimeLimit: not run, because {', '.join(slow)} already ran past its time "
                                        f"limit in an earlier test")
                else:
                    try:
                        _alarm(plan["check_seconds"])
                        data = PROBES[test_call["probe"]]([namespace[n] for n in test_call["names"]],
                                                          wire.loads(test_call["inputs"].encode()))
                        _alarm(0)
                        message["data"] = wire.encode(data)
                    except BaseException as exc:  # noqa: BLE001
                        _alarm(0)
                        message["error"] = describe_exception(exc)
                        if isinstance(exc, TimeLimit):
                            timed_out.update(test_call["names"])
                send(message)
        if len(attempts) > reported:
            send({"type": "blocked", "where": item["label"], "names": attempts[reported:]})
            reported = len(attempts)
    send({"type": "done", "stdout_chars": stdout.count, "stderr_chars": stderr.count})
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: nothing a submission left behind may run after this
